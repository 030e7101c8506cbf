//! EC2's instance metadata service.

use std::sync::Arc;

use jiff::Timestamp;
use sih_imds::{ImdsClient, InstanceIdentity};
use sih_report::webhook::InstanceFacts;

use super::{Identity, NoticeSource, Poll, SourceError};

/// The EC2 instance metadata service.
pub struct Imds(pub Arc<ImdsClient>);

/// What webhook messages say of this instance.
pub fn facts_of(id: &InstanceIdentity) -> InstanceFacts {
    InstanceFacts {
        cloud: "aws".into(),
        instance_type: id.instance_type.clone(),
        availability_zone: id.availability_zone.clone(),
        region: id.region.clone(),
        account_id: id.document.account_id.clone().unwrap_or_default(),
        instance_life_cycle: id.life_cycle.clone().unwrap_or_default(),
        local_hostname: id.local_hostname.clone().unwrap_or_default(),
        local_ip: id.local_ipv4.clone().unwrap_or_default(),
        public_hostname: id.public_hostname.clone().unwrap_or_default(),
        public_ip: id.public_ipv4.clone().unwrap_or_default(),
        auto_scaling_group_name: id.auto_scaling_group.clone().unwrap_or_default(),
        ..InstanceFacts::default()
    }
}

impl NoticeSource for Imds {
    async fn identity(&self) -> Result<Identity, SourceError> {
        let id = self.0.identity().await?;
        Ok(Identity {
            instance_id: id.instance_id.clone(),
            facts: facts_of(&id),
            // EKS names a node by its private DNS name.
            node_names: id.local_hostname.iter().cloned().collect(),
            provider_id: Some(format!(
                "aws:///{}/{}",
                id.availability_zone, id.instance_id
            )),
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
        if let Ok(Some(a)) = &snapshot.spot_instance_action
            && let Some(served) = &a.unreadable_time
        {
            problems.push((
                "spot-instance-action",
                format!(
                    "time {served:?} is not an RFC 3339 time: acting now, with EC2's two-minute notice counted from detection"
                ),
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
            acks: Vec::new(),
        }
    }
}
