//! The seam between the agent and where its notices come from. A source says who this
//! instance is and, on each poll, what it sees: notices, which kinds it could read (only those
//! can be withdrawn) and what went wrong. The agent and the responder never see a source's
//! own types, so a new source (another cloud's metadata service) plugs in here alone.
//!
//! The instance metadata service is the first source.

use std::sync::Arc;

use jiff::Timestamp;
use sih_core::Observation;
use sih_imds::{ImdsClient, InstanceIdentity};
use sih_report::webhook::TemplateData;

/// Who this instance is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub instance_id: String,
    /// Fields every webhook message about this instance carries (`InstanceType`, ...).
    pub template: TemplateData,
}

/// One poll.
#[derive(Debug, Default)]
pub struct Poll {
    pub observation: Observation,
    /// Items that could not be read, or read with a doubt: `(item, what)`, bounded item names.
    pub problems: Vec<(&'static str, String)>,
}

pub trait NoticeSource {
    /// Who this instance is (the caller retries until it works).
    fn identity(&self) -> impl std::future::Future<Output = Result<Identity, String>> + Send;

    /// One look at the source for `node`, detected at `now`. Bounded: a source that hangs
    /// answers with errors, never not at all.
    fn poll(
        &self,
        identity: &Identity,
        node: &str,
        now: Timestamp,
    ) -> impl std::future::Future<Output = Poll> + Send;
}

/// The EC2 instance metadata service.
pub struct Imds(pub Arc<ImdsClient>);

/// Fields every webhook message of this agent shares: its instance.
pub fn template_of(id: &InstanceIdentity) -> TemplateData {
    let mut data = TemplateData::new();
    data.insert("InstanceType", id.instance_type.clone());
    data.insert("AvailabilityZone", id.availability_zone.clone());
    data.insert("Region", id.region.clone());
    let optional = [
        ("AccountId", id.document.account_id.clone()),
        ("InstanceLifeCycle", id.life_cycle.clone()),
        ("LocalHostname", id.local_hostname.clone()),
        ("LocalIP", id.local_ipv4.clone()),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            data.insert(k, v);
        }
    }
    data
}

impl NoticeSource for Imds {
    async fn identity(&self) -> Result<Identity, String> {
        let id = self.0.identity().await.map_err(|e| e.to_string())?;
        Ok(Identity {
            instance_id: id.instance_id.clone(),
            template: template_of(&id),
        })
    }

    async fn poll(&self, identity: &Identity, node: &str, now: Timestamp) -> Poll {
        let snapshot = self.0.poll().await;
        let mut problems: Vec<(&'static str, String)> = snapshot
            .item_errors()
            .map(|(item, e)| (item, e.to_string()))
            .collect();
        if let Ok(Some(a)) = &snapshot.spot_instance_action
            && let Some(unknown) = &a.unknown_action
        {
            problems.push((
                "spot-instance-action",
                format!("unknown action {unknown:?}, taken as terminate: EC2 takes the instance"),
            ));
        }
        if let Ok(events) = &snapshot.scheduled_events {
            for (id, e) in &events.malformed {
                problems.push((
                    "scheduled-events",
                    format!(
                        "event {}: {e} (the other events stand)",
                        id.as_deref().unwrap_or("without an EventId")
                    ),
                ));
            }
        }
        Poll {
            observation: sih_imds::notices::observation(
                &snapshot,
                &identity.instance_id,
                node,
                now,
            ),
            problems,
        }
    }
}
