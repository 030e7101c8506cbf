//! GCE metadata values and their pure parsers.

/// `instance/maintenance-event`: what the host's maintenance will do to this instance. GCE
/// sets it about 60 seconds before the maintenance starts (only for clients that have read
/// it, so the agent reads it at start) and back to `NONE` once it is over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Maintenance {
    #[default]
    None,
    /// `MIGRATE_ON_HOST_MAINTENANCE`: the instance is live-migrated and keeps running.
    Migrate,
    /// `TERMINATE_ON_HOST_MAINTENANCE`: the instance is stopped (and restarted if its
    /// scheduling says so).
    Terminate,
    /// A value GCE may add later: taken as a termination (the careful reading), said once.
    Unknown(String),
}

impl Maintenance {
    pub fn parse(body: &str) -> Self {
        match body.trim() {
            "" | "NONE" => Self::None,
            "MIGRATE_ON_HOST_MAINTENANCE" => Self::Migrate,
            "TERMINATE_ON_HOST_MAINTENANCE" => Self::Terminate,
            other => Self::Unknown(other.chars().take(64).collect()),
        }
    }

    /// As GCE writes it: a part of the notice's id.
    pub fn as_str(&self) -> &str {
        match self {
            Self::None => "NONE",
            Self::Migrate => "MIGRATE_ON_HOST_MAINTENANCE",
            Self::Terminate => "TERMINATE_ON_HOST_MAINTENANCE",
            Self::Unknown(s) => s,
        }
    }
}

/// `instance/preempted`: `TRUE` once the instance is being preempted.
pub fn parse_preempted(body: &str) -> Result<bool, String> {
    match body.trim() {
        "TRUE" => Ok(true),
        "FALSE" => Ok(false),
        other => Err(format!(
            "expected TRUE or FALSE, got {:?}",
            other.chars().take(64).collect::<String>()
        )),
    }
}

/// `projects/123456/zones/us-central1-a` → `us-central1-a` (GCE's long forms).
pub fn last_segment(s: &str) -> &str {
    s.trim().rsplit('/').next().unwrap_or_default()
}

/// `us-central1-a` → `us-central1`.
pub fn region_of(zone: &str) -> &str {
    zone.rsplit_once('-').map_or(zone, |(region, _)| region)
}

/// Who this instance is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GceIdentity {
    /// `instance/id`: a number, unique for the instance's life.
    pub id: String,
    /// `instance/name`: the node's name on GKE.
    pub name: String,
    pub zone: String,
    pub project_id: String,
    pub machine_type: String,
    /// `instance/scheduling/preemptible`: `TRUE` for preemptible and Spot VMs.
    pub preemptible: bool,
    pub hostname: String,
    pub ip: String,
}

impl GceIdentity {
    /// The node's `spec.providerID` on GKE: `gce://project/zone/name`.
    pub fn provider_id(&self) -> String {
        format!("gce://{}/{}/{}", self.project_id, self.zone, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_as_gce_serves_them() {
        assert_eq!(parse_preempted("TRUE"), Ok(true));
        assert_eq!(parse_preempted("FALSE\n"), Ok(false));
        assert!(parse_preempted("true").is_err(), "GCE writes upper case");
        assert!(parse_preempted("").is_err());
        assert_eq!(Maintenance::parse("NONE"), Maintenance::None);
        assert_eq!(
            Maintenance::parse("MIGRATE_ON_HOST_MAINTENANCE"),
            Maintenance::Migrate
        );
        assert_eq!(
            Maintenance::parse("TERMINATE_ON_HOST_MAINTENANCE"),
            Maintenance::Terminate
        );
        assert_eq!(
            Maintenance::parse("SOMETHING_NEW"),
            Maintenance::Unknown("SOMETHING_NEW".into())
        );
        assert_eq!(
            last_segment("projects/123/zones/us-central1-a"),
            "us-central1-a"
        );
        assert_eq!(
            last_segment("projects/123/machineTypes/e2-medium"),
            "e2-medium"
        );
        assert_eq!(last_segment("e2-medium"), "e2-medium");
        assert_eq!(region_of("us-central1-a"), "us-central1");
        assert_eq!(region_of("europe-west4-b"), "europe-west4");
        let id = GceIdentity {
            name: "gke-spot-1".into(),
            zone: "us-central1-a".into(),
            project_id: "demo".into(),
            ..GceIdentity::default()
        };
        assert_eq!(id.provider_id(), "gce://demo/us-central1-a/gke-spot-1");
    }
}
