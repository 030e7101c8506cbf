//! One replica at a time evacuates a node: a coordination.k8s.io Lease per node says which.
//! The replica that creates the Lease (or takes over one whose holder stopped renewing) acts on
//! every notice about the node; the others keep their copies of the messages hidden and wait.
//! What was done survives on the node itself (its record of notices, drained or not), so a
//! replica taking over resumes there and announces nothing twice.
//!
//! A Lease per node, not per notice: a spot warning and the state changes that follow it are
//! several messages, possibly handled by several replicas, but one evacuation of one node.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::error::{ApiClass, NodeError, classify};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours to act on.
    Acquired,
    /// Another replica holds a live lease.
    HeldElsewhere(String),
}

/// A DNS-1123 name for a node's lease (names may be long or hold other characters).
pub fn lease_name(key: &str) -> String {
    let clean: String = key
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    // FNV-1a keeps two long names that share a prefix apart.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let head: String = clean.chars().take(40).collect();
    format!("sih-{}-{hash:016x}", head.trim_matches('-'))
}

pub struct Claims {
    api: Api<Lease>,
    holder: String,
    ttl: Duration,
    timeout: Duration,
}

impl Claims {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        holder: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            holder: holder.to_owned(),
            ttl,
            timeout,
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn lease(&self, name: &str, node: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                annotations: Some(
                    [("spot-interrupt-handler/node".to_owned(), node.to_owned())].into(),
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

    async fn call<T>(
        &self,
        what: &'static str,
        call: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, NodeError> {
        crate::bounded(self.timeout, what, call)
            .await?
            .map_err(NodeError::Api)
    }

    /// Takes the node's lease if it is free, expired, released or already ours.
    pub async fn acquire(&self, node: &str) -> Result<Claim, NodeError> {
        let name = lease_name(node);
        let params = PostParams::default();
        match self
            .call(
                "create lease",
                self.api.create(&params, &self.lease(&name, node)),
            )
            .await
        {
            Ok(_) => return Ok(Claim::Acquired),
            Err(NodeError::Api(e)) if classify(&e) == ApiClass::Conflict => {}
            Err(e) => return Err(e),
        }
        let current = self.call("get lease", self.api.get(&name)).await?;
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let expired = spec.renew_time.as_ref().is_none_or(|t| {
            let ttl = jiff::SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds.unwrap_or(0),
            ));
            t.0 + ttl < Timestamp::now()
        });
        if !holder.is_empty() && holder != self.holder && !expired {
            return Ok(Claim::HeldElsewhere(holder));
        }
        // Take over (free, or its holder stopped renewing), guarded by the version we read.
        let mut next = self.lease(&name, node);
        next.metadata.resource_version = current.metadata.resource_version.clone();
        match self
            .call("replace lease", self.api.replace(&name, &params, &next))
            .await
        {
            Ok(_) => Ok(Claim::Acquired),
            Err(NodeError::Api(e)) if classify(&e) == ApiClass::Conflict => Ok(
                Claim::HeldElsewhere("a replica that took it over first".into()),
            ),
            Err(e) => Err(e),
        }
    }

    /// Keeps our claim alive while we act.
    pub async fn renew(&self, node: &str) -> Result<(), NodeError> {
        let patch = json!({"spec": {"holderIdentity": self.holder, "renewTime": MicroTime(Timestamp::now())}});
        let (params, merge) = (
            kube::api::PatchParams::default(),
            kube::api::Patch::Merge(&patch),
        );
        self.call(
            "renew lease",
            self.api.patch(&lease_name(node), &params, &merge),
        )
        .await
        .map(|_| ())
    }

    /// Gives the node up: another replica may take it at once.
    pub async fn release(&self, node: &str) -> Result<(), NodeError> {
        let name = lease_name(node);
        let current = self.call("get lease", self.api.get(&name)).await?;
        let ours = current
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.holder.as_str());
        if !ours {
            return Ok(());
        }
        let patch = json!({"metadata": {"resourceVersion": current.metadata.resource_version},
            "spec": {"holderIdentity": null}});
        let (params, merge) = (
            kube::api::PatchParams::default(),
            kube::api::Patch::Merge(&patch),
        );
        match self
            .call("release lease", self.api.patch(&name, &params, &merge))
            .await
        {
            Err(NodeError::Api(e)) if classify(&e) == ApiClass::Conflict => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_valid_and_distinct() {
        let a = lease_name("ip-10-0-3-96.ec2.internal");
        assert!(a.starts_with("sih-ip-10-0-3-96-ec2-internal-"));
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
