//! The one `Notice` type every source produces, and what each kind of notice implies.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeKind {
    SpotInterruption,
    RebalanceRecommendation,
    ScheduledMaintenance,
    AsgTermination,
    AsgLaunch,
    InstanceStateChange,
    /// The instance is paused or moved while it keeps running (GCE `MIGRATE_ON_HOST_MAINTENANCE`,
    /// Azure `Freeze`): worth telling, rarely worth evacuating.
    LiveMigration,
}

impl NoticeKind {
    pub const ALL: [NoticeKind; 7] = [
        Self::SpotInterruption,
        Self::RebalanceRecommendation,
        Self::ScheduledMaintenance,
        Self::AsgTermination,
        Self::AsgLaunch,
        Self::InstanceStateChange,
        Self::LiveMigration,
    ];

    /// The name in flags, taint keys and logs: `spot-interruption`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SpotInterruption => "spot-interruption",
            Self::RebalanceRecommendation => "rebalance-recommendation",
            Self::ScheduledMaintenance => "scheduled-maintenance",
            Self::AsgTermination => "asg-termination",
            Self::AsgLaunch => "asg-launch",
            Self::InstanceStateChange => "instance-state-change",
            Self::LiveMigration => "live-migration",
        }
    }

    /// The Kubernetes Event reason: `SpotInterruption`.
    pub fn event_reason(self) -> &'static str {
        match self {
            Self::SpotInterruption => "SpotInterruption",
            Self::RebalanceRecommendation => "RebalanceRecommendation",
            Self::ScheduledMaintenance => "ScheduledMaintenance",
            Self::AsgTermination => "AsgTermination",
            Self::AsgLaunch => "AsgLaunch",
            Self::InstanceStateChange => "InstanceStateChange",
            Self::LiveMigration => "LiveMigration",
        }
    }

    /// The taint key this kind of notice puts on the node.
    pub fn taint_key(self) -> String {
        format!("spot-interrupt-handler/{}", self.as_str())
    }

    /// A rebalance recommendation only asks new pods to go elsewhere if they can.
    pub fn default_taint_effect(self) -> &'static str {
        match self {
            Self::RebalanceRecommendation => "PreferNoSchedule",
            _ => "NoSchedule",
        }
    }

    /// Whether the instance is gone at the deadline whatever we do: then a pod that a budget
    /// still protects is better deleted with some grace than killed with none.
    pub fn deadline_is_hard(self) -> bool {
        matches!(self, Self::SpotInterruption | Self::InstanceStateChange)
    }
}

impl std::fmt::Display for NoticeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NoticeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let kinds: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown notice kind {s:?}; the kinds are {}",
                    kinds.join(", ")
                )
            })
    }
}

/// Who reported a notice. A node may carry notices from several (an agent, the queue
/// controller, an operator's `drain`): each removes only its own, and keeps the others'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A per-node agent polling its cloud's metadata service (EC2's IMDS, GCE's, Azure's);
    /// recorded as `imds`, its name since the first version.
    #[default]
    #[serde(rename = "imds")]
    Agent,
    /// The cluster-wide controller consuming a queue.
    Queue,
    /// `drain` by hand.
    Manual,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "imds",
            Self::Queue => "queue",
            Self::Manual => "manual",
        }
    }
}

/// A warning that a node's instance will be interrupted, from any source.
///
/// Build one with the constructor of its kind: the id is made there, once, so every source
/// names the same underlying event the same way, and no id hangs on a value a source may
/// restate (amazon-ec2-metadata-mock recomputes a spot notice's time on every read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    /// Stable for the same underlying event, so seeing it twice changes nothing.
    pub id: String,
    pub instance_id: Option<String>,
    pub node: String,
    pub detected: Timestamp,
    /// When the instance will be stopped or terminated, when known.
    pub deadline: Option<Timestamp>,
    #[serde(default)]
    pub source: Source,
}

impl Notice {
    fn new(
        kind: NoticeKind,
        id: String,
        instance: &str,
        node: &str,
        detected: Timestamp,
        deadline: Option<Timestamp>,
        source: Source,
    ) -> Self {
        Self {
            kind,
            id,
            instance_id: (!instance.is_empty()).then(|| instance.to_owned()),
            node: node.to_owned(),
            detected,
            deadline,
            source,
        }
    }

    /// One per instance: an instance is interrupted once; its time may be restated.
    pub fn spot_interruption(
        instance: &str,
        node: &str,
        detected: Timestamp,
        time: Timestamp,
        source: Source,
    ) -> Self {
        let id = format!("{instance}-spot-interruption");
        Self::new(
            NoticeKind::SpotInterruption,
            id,
            instance,
            node,
            detected,
            Some(time),
            source,
        )
    }

    /// One per instance until it disappears.
    pub fn rebalance(instance: &str, node: &str, detected: Timestamp, source: Source) -> Self {
        let id = format!("{instance}-rebalance");
        Self::new(
            NoticeKind::RebalanceRecommendation,
            id,
            instance,
            node,
            detected,
            None,
            source,
        )
    }

    /// One per scheduled event: `event` is EC2's `EventId`, or the AWS Health event's own key.
    pub fn scheduled_maintenance(
        event: &str,
        instance: &str,
        node: &str,
        detected: Timestamp,
        not_before: Option<Timestamp>,
        source: Source,
    ) -> Self {
        Self::new(
            NoticeKind::ScheduledMaintenance,
            event.to_owned(),
            instance,
            node,
            detected,
            not_before,
            source,
        )
    }

    /// One per instance: it leaves its group once.
    pub fn asg_termination(
        instance: &str,
        node: &str,
        detected: Timestamp,
        source: Source,
    ) -> Self {
        let id = format!("{instance}-asg-termination");
        Self::new(
            NoticeKind::AsgTermination,
            id,
            instance,
            node,
            detected,
            None,
            source,
        )
    }

    pub fn asg_launch(instance: &str, node: &str, detected: Timestamp, source: Source) -> Self {
        let id = format!("{instance}-asg-launch");
        Self::new(
            NoticeKind::AsgLaunch,
            id,
            instance,
            node,
            detected,
            None,
            source,
        )
    }

    /// One per instance: `stopping`, `shutting-down` and the rest are one going-away.
    pub fn instance_state_change(
        instance: &str,
        node: &str,
        detected: Timestamp,
        at: Timestamp,
        source: Source,
    ) -> Self {
        let id = format!("{instance}-state-change");
        Self::new(
            NoticeKind::InstanceStateChange,
            id,
            instance,
            node,
            detected,
            Some(at),
            source,
        )
    }

    /// One per event of another cloud's maintenance (`event`: Azure's `EventId`, or GCE's
    /// maintenance value with the instance): `kind` is scheduled maintenance, a live migration
    /// or, for an Azure scale set's `Terminate`, an ASG-like termination.
    pub fn cloud_event(
        kind: NoticeKind,
        event: &str,
        instance: &str,
        node: &str,
        detected: Timestamp,
        deadline: Option<Timestamp>,
    ) -> Self {
        Self::new(
            kind,
            event.to_owned(),
            instance,
            node,
            detected,
            deadline,
            Source::Agent,
        )
    }

    /// `drain NODE` by hand, one per kind and node.
    pub fn manual(kind: NoticeKind, node: &str, detected: Timestamp, deadline: Timestamp) -> Self {
        let id = format!("manual-{}", kind.as_str());
        Self::new(kind, id, "", node, detected, Some(deadline), Source::Manual)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reasons_and_taints() {
        for kind in NoticeKind::ALL {
            assert_eq!(kind.as_str().parse::<NoticeKind>(), Ok(kind));
            assert!(kind.taint_key().starts_with("spot-interrupt-handler/"));
        }
        assert_eq!(
            NoticeKind::SpotInterruption.event_reason(),
            "SpotInterruption"
        );
        assert_eq!(
            NoticeKind::RebalanceRecommendation.default_taint_effect(),
            "PreferNoSchedule"
        );
        assert_eq!(
            NoticeKind::ScheduledMaintenance.default_taint_effect(),
            "NoSchedule"
        );
        assert!(NoticeKind::SpotInterruption.deadline_is_hard());
        assert!(!NoticeKind::ScheduledMaintenance.deadline_is_hard());
        // A wrong kind is answered with the right ones (`drain --kind`, `undrain --kind`).
        let e = "spot".parse::<NoticeKind>().unwrap_err();
        for k in NoticeKind::ALL {
            assert!(e.contains(k.as_str()), "{e}");
        }
    }

    #[test]
    fn ids_hang_on_the_event_never_on_a_time_a_source_may_restate() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let a = Notice::spot_interruption(
            "i-1",
            "n1",
            t("2026-11-23T10:00:00Z"),
            t("2026-11-23T10:02:00Z"),
            Source::Agent,
        );
        let b = Notice::spot_interruption(
            "i-1",
            "n1",
            t("2026-11-23T10:00:01Z"),
            t("2026-11-23T10:02:01Z"),
            Source::Queue,
        );
        assert_eq!(
            a.id, b.id,
            "one spot notice per instance, whoever reports it"
        );
        assert_ne!(
            a.id,
            Notice::spot_interruption("i-2", "n2", a.detected, a.detected, Source::Agent).id
        );
        let stop =
            Notice::instance_state_change("i-1", "n1", a.detected, a.detected, Source::Queue);
        let again =
            Notice::instance_state_change("i-1", "n1", b.detected, b.detected, Source::Queue);
        assert_eq!(
            stop.id, again.id,
            "stopping and shutting-down are one notice"
        );
        assert_eq!(
            Notice::rebalance("i-1", "n1", a.detected, Source::Agent).id,
            Notice::rebalance("i-1", "n1", b.detected, Source::Queue).id
        );
        assert_eq!(
            Notice::asg_termination("i-1", "n1", a.detected, Source::Agent).id,
            Notice::asg_termination("i-1", "n1", b.detected, Source::Queue).id
        );
        let event = Notice::scheduled_maintenance(
            "instance-event-1",
            "i-1",
            "n1",
            a.detected,
            None,
            Source::Agent,
        );
        assert_eq!(event.id, "instance-event-1");
        assert_eq!(
            Notice::manual(NoticeKind::SpotInterruption, "n1", a.detected, a.detected).instance_id,
            None
        );
    }
}
