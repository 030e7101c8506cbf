//! One drain per notice across controller replicas: a coordination.k8s.io Lease per notice,
//! named after its id. The replica that creates (or takes over an expired) Lease acts; the
//! others leave their copy of the message to come back later. A finished notice stays marked
//! on its Lease, so a copy that arrives afterwards is deleted without acting again.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::error::{ApiClass, NodeError, classify};

const DONE: &str = "spot-interrupt-handler/done";
const ANNOUNCED: &str = "spot-interrupt-handler/announced";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours to act on; `announced` is true when a replica before us already told people.
    Acquired { announced: bool },
    /// Another replica holds a live lease.
    HeldElsewhere(String),
    /// Already handled to the end.
    Done,
}

/// A DNS-1123 name for a notice id (ids may be long or hold other characters).
pub fn lease_name(notice_id: &str) -> String {
    let clean: String = notice_id
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    // FNV-1a keeps two long ids that share a prefix apart.
    let hash = notice_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let head: String = clean.chars().take(40).collect();
    format!("sih-{}-{hash:016x}", head.trim_matches('-'))
}

pub struct Claims {
    api: Api<Lease>,
    holder: String,
    ttl: Duration,
}

fn annotation(l: &Lease, key: &str) -> bool {
    l.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.get(key).map(String::as_str) == Some("true"))
}

impl Claims {
    pub fn new(client: kube::Client, namespace: &str, holder: &str, ttl: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            holder: holder.to_owned(),
            ttl,
        }
    }

    fn lease(&self, name: &str, notice_id: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                annotations: Some(
                    [(
                        "spot-interrupt-handler/notice-id".to_owned(),
                        notice_id.to_owned(),
                    )]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.holder.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(self.ttl.as_secs().max(1)).unwrap_or(i32::MAX),
                ),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..LeaseSpec::default()
            }),
        }
    }

    pub async fn acquire(&self, notice_id: &str) -> Result<Claim, NodeError> {
        let name = lease_name(notice_id);
        match self
            .api
            .create(&PostParams::default(), &self.lease(&name, notice_id))
            .await
        {
            Ok(_) => return Ok(Claim::Acquired { announced: false }),
            Err(e) if classify(&e) == ApiClass::Conflict => {}
            Err(e) => return Err(NodeError::Api(e)),
        }
        let current = self.api.get(&name).await.map_err(NodeError::Api)?;
        if annotation(&current, DONE) {
            return Ok(Claim::Done);
        }
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let expired = spec.renew_time.as_ref().is_none_or(|t| {
            let ttl = jiff::SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds.unwrap_or(0),
            ));
            t.0 + ttl < Timestamp::now()
        });
        if holder != self.holder && !expired {
            return Ok(Claim::HeldElsewhere(holder));
        }
        // Take over (the holder stopped renewing), guarded by the resourceVersion we read.
        let mut next = self.lease(&name, notice_id);
        next.metadata.resource_version = current.metadata.resource_version.clone();
        next.metadata.annotations = current.metadata.annotations.clone();
        match self.api.replace(&name, &PostParams::default(), &next).await {
            Ok(_) => Ok(Claim::Acquired {
                announced: annotation(&current, ANNOUNCED),
            }),
            Err(e) if classify(&e) == ApiClass::Conflict => Ok(Claim::HeldElsewhere(
                "a replica that took it over first".into(),
            )),
            Err(e) => Err(NodeError::Api(e)),
        }
    }

    async fn mark(
        &self,
        notice_id: &str,
        extra: &[(&str, &str)],
        renew: bool,
    ) -> Result<(), NodeError> {
        let name = lease_name(notice_id);
        let mut annotations = serde_json::Map::new();
        for (k, v) in extra {
            annotations.insert((*k).to_owned(), json!(v));
        }
        let mut patch = json!({"metadata": {"annotations": annotations}});
        if renew {
            patch["spec"] = json!({"renewTime": MicroTime(Timestamp::now())});
        }
        self.api
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .map(|_| ())
            .map_err(NodeError::Api)
    }

    /// Keeps our claim alive while we act.
    pub async fn renew(&self, notice_id: &str) -> Result<(), NodeError> {
        self.mark(notice_id, &[], true).await
    }

    /// People have been told (a replica taking over does not tell them again).
    pub async fn announced(&self, notice_id: &str) -> Result<(), NodeError> {
        self.mark(notice_id, &[(ANNOUNCED, "true")], true).await
    }

    pub async fn done(&self, notice_id: &str) -> Result<(), NodeError> {
        self.mark(notice_id, &[(DONE, "true")], true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_valid_and_distinct() {
        let a = lease_name("i-0123456789abcdef0-spot-1777637000");
        assert!(a.starts_with("sih-i-0123456789abcdef0-spot-1777637"));
        assert!(a.len() <= 63);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        let long1 = lease_name(&format!("{}-a", "x".repeat(100)));
        let long2 = lease_name(&format!("{}-b", "x".repeat(100)));
        assert_ne!(long1, long2);
        assert!(long1.len() <= 63);
        assert_eq!(lease_name("A/B:c"), lease_name("A/B:c"));
    }
}
