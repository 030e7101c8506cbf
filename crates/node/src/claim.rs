//! One replica at a time evacuates a node: a coordination.k8s.io Lease per node says which.
//! The replica that creates the Lease (or takes over one whose holder stopped renewing) acts on
//! every notice about the node; the others keep their copies of the messages hidden and wait.
//! What was done survives on the node itself (its record of notices, drained or not), so a
//! replica taking over resumes there and announces nothing twice.
//!
//! A Lease per node, not per notice: a spot warning and the state changes that follow it are
//! several messages, possibly handled by several replicas, but one evacuation of one node.
//!
//! Liveness is one Lease per replica (`heartbeat`, every third of `ttl`), not a renewal of each
//! node's Lease: a mass reclaim with a thousand nodes in flight costs one write every two
//! seconds, not a thousand. A node's claim is good while its holder's replica Lease is live, so a
//! replica that dies is taken over within `ttl` and a scan, whatever the messages' visibility
//! timeout: survivors look for the nodes of dead replicas (`abandoned`) and resume each from
//! its record. A replica whose own heartbeat has not landed for most of `ttl` is no longer
//! `valid()`: it must stop acting on every node it holds before anyone may take them over.
//! A released claim stays as a record of who acted last for a retention, then `sweep` deletes
//! it (and dead replicas' Leases): leases never pile up.
//!
//! Two notices for one node received by two replicas (a spot warning while another replica
//! drains for an Auto Scaling termination): the one that does not hold the node hands its
//! notice over on the node's claim (`hand_over`), and the holder picks it up within a second
//! (`handed_over`), so the node's one drain follows both; the sender keeps its message until
//! the node is free and finds the notice done.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;
use tokio::time::Instant;

use sih_core::Notice;

use crate::error::{ApiClass, NodeError, classify};

/// The label on every lease of ours (what the sweep and the takeover scan list).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "spot-interrupt-handler");
/// `replica` (a replica's heartbeat) or `node` (a claim on a node).
pub const ROLE: &str = "spot-interrupt-handler/role";
/// On a node's claim: the holder's hash (to list a dead replica's claims).
pub const HOLDER: &str = "spot-interrupt-handler/holder";
pub const NODE_ANNOTATION: &str = "spot-interrupt-handler/node";
/// On a node's claim: notices another replica received for the node, for its holder to act on
/// (a JSON list), with the label that lets the holder find them with one cheap list.
pub const HANDOFF: &str = "spot-interrupt-handler/handoff";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours to act on.
    Acquired,
    /// Another replica holds it and is alive.
    HeldElsewhere(String),
}

pub(crate) fn fnv(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A DNS-1123 name for a node's lease (names may be long or hold other characters).
pub fn lease_name(key: &str) -> String {
    let clean: String = key
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    // FNV-1a keeps two long names that share a prefix apart.
    let head: String = clean.chars().take(40).collect();
    format!("sih-{}-{:016x}", head.trim_matches('-'), fnv(key))
}

/// The name of a replica's heartbeat lease.
pub fn replica_lease_name(holder: &str) -> String {
    format!("sih-replica-{:016x}", fnv(holder))
}

fn holder_label(holder: &str) -> String {
    format!("{:016x}", fnv(holder))
}

pub struct Claims {
    api: Api<Lease>,
    holder: String,
    ttl: Duration,
    timeout: Duration,
    /// Until when the claims we hold are ours for sure: the last heartbeat that landed, plus
    /// the ttl less a margin (for clocks and the others' scans).
    valid_until: Mutex<Option<Instant>>,
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
            // A call that outlives a third of the claim's life is of no use to it.
            timeout: timeout.min(ttl / 3).max(Duration::from_millis(200)),
            valid_until: Mutex::new(None),
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// How long a replica's claims live without a heartbeat.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the claims we hold are still ours (our heartbeat landed recently enough).
    pub fn valid(&self) -> bool {
        self.valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| Instant::now() < t)
    }

    fn labels(&self, role: &str) -> std::collections::BTreeMap<String, String> {
        let mut l: std::collections::BTreeMap<String, String> = [
            (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
            (ROLE.to_owned(), role.to_owned()),
        ]
        .into();
        if role == "node" {
            l.insert(HOLDER.to_owned(), holder_label(&self.holder));
        }
        l
    }

    fn spec(&self, at: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.ttl.as_secs().max(1)).unwrap_or(i32::MAX),
            ),
            renew_time: Some(MicroTime(at)),
            ..LeaseSpec::default()
        }
    }

    fn node_lease(&self, name: &str, node: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                annotations: Some([(NODE_ANNOTATION.to_owned(), node.to_owned())].into()),
                labels: Some(self.labels("node")),
                ..ObjectMeta::default()
            },
            spec: Some(self.spec(Timestamp::now())),
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

    /// Says this replica is alive (its claims stay good for `ttl` from now).
    pub async fn heartbeat(&self) -> Result<(), NodeError> {
        let sent = Instant::now();
        let at = Timestamp::now();
        let name = replica_lease_name(&self.holder);
        let patch = json!({
            "metadata": {"labels": self.labels("replica")},
            "spec": self.spec(at),
        });
        let done = match self
            .call(
                "renew replica lease",
                self.api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await
        {
            Err(NodeError::Api(e)) if classify(&e) == ApiClass::NotFound => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(self.labels("replica")),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(at)),
                };
                self.call(
                    "create replica lease",
                    self.api.create(&PostParams::default(), &lease),
                )
                .await
                .map(|_| ())
            }
            other => other.map(|_| ()),
        };
        done?;
        // Others count from the time written; we stop a sixth of the life earlier.
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(sent + self.ttl - self.ttl / 6);
        Ok(())
    }

    /// Stepping down (a clean stop): our claims may be taken over at once.
    pub async fn resign(&self) -> Result<(), NodeError> {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
        match self
            .call(
                "delete replica lease",
                self.api
                    .delete(&replica_lease_name(&self.holder), &DeleteParams::default()),
            )
            .await
        {
            Err(NodeError::Api(e)) if classify(&e) == ApiClass::NotFound => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Whether `holder`'s heartbeat is live.
    async fn alive(&self, holder: &str) -> Result<bool, NodeError> {
        let lease = self
            .call(
                "get replica lease",
                self.api.get_opt(&replica_lease_name(holder)),
            )
            .await?;
        Ok(lease.is_some_and(|l| !expired(&l, Timestamp::now())))
    }

    /// Takes the node's claim if it is free, released, ours, or its holder is dead.
    pub async fn acquire(&self, node: &str) -> Result<Claim, NodeError> {
        if !self.valid() {
            // Nobody may count our claims as live before our heartbeat says we are.
            self.heartbeat().await?;
        }
        let name = lease_name(node);
        let params = PostParams::default();
        match self
            .call(
                "create lease",
                self.api.create(&params, &self.node_lease(&name, node)),
            )
            .await
        {
            Ok(_) => return Ok(Claim::Acquired),
            Err(NodeError::Api(e)) if classify(&e) == ApiClass::Conflict => {}
            Err(e) => return Err(e),
        }
        let current = self.call("get lease", self.api.get(&name)).await?;
        let holder = holder_of(&current).unwrap_or_default().to_owned();
        if !holder.is_empty() && holder != self.holder && self.alive(&holder).await? {
            return Ok(Claim::HeldElsewhere(holder));
        }
        // Take it (free, or its holder is dead), guarded by the version we read. Notices other
        // replicas handed over to the dead holder come with it: the new holder picks them up
        // (`handed_over`), where a fresh claim would lose them and leave their senders waiting
        // for the node to be free (found by the soak, seed 60703: a rebalance fenced 19 s late).
        let mut next = self.node_lease(&name, node);
        next.metadata.resource_version = current.metadata.resource_version.clone();
        let pending = pending_of(&current);
        if !pending.is_empty() {
            let text = serde_json::to_string(&pending).unwrap_or_default();
            next.metadata
                .annotations
                .get_or_insert_default()
                .insert(HANDOFF.to_owned(), text);
            next.metadata
                .labels
                .get_or_insert_default()
                .insert(HANDOFF.to_owned(), "pending".to_owned());
        }
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

    /// Nodes claimed by replicas that are dead (their heartbeat expired): theirs to take over.
    /// `full` also finds claims whose holder left no heartbeat at all, and claims of ours from
    /// a previous life of this replica (same name, after a restart): both cost a list of every
    /// claim, done at start and now and then; otherwise only the dead replicas' claims are
    /// listed, and only when there is a dead replica.
    pub async fn abandoned(&self, full: bool) -> Result<Vec<String>, NodeError> {
        let now = Timestamp::now();
        let replicas = self.list("replica").await?;
        let live: HashSet<&str> = replicas
            .iter()
            .filter(|l| !expired(l, now))
            .filter_map(holder_of)
            .collect();
        let dead: HashSet<&str> = replicas
            .iter()
            .filter(|l| expired(l, now))
            .filter_map(holder_of)
            .filter(|h| *h != self.holder && !h.is_empty())
            .collect();
        if dead.is_empty() && !full {
            return Ok(Vec::new());
        }
        let mut nodes = Vec::new();
        for l in self.list("node").await? {
            let Some(holder) = holder_of(&l) else {
                continue;
            };
            let take = if holder.is_empty() {
                false
            } else if holder == self.holder {
                full
            } else {
                dead.contains(holder) || (full && !live.contains(holder))
            };
            if take
                && let Some(node) = l
                    .metadata
                    .annotations
                    .and_then(|mut a| a.remove(NODE_ANNOTATION))
            {
                nodes.push(node);
            }
        }
        Ok(nodes)
    }

    /// Deletes released claims older than `retention` and the heartbeats of replicas dead for
    /// longer than that (each guarded by the version read, so a lease taken again meanwhile
    /// stays); answers how many went.
    pub async fn sweep(&self, retention: Duration) -> Result<usize, NodeError> {
        let cutoff =
            Timestamp::now() - jiff::SignedDuration::try_from(retention).unwrap_or_default();
        let mut deleted = 0;
        let mut gone: HashMap<String, Lease> = HashMap::new();
        for l in self.list("node").await? {
            if holder_of(&l).is_none_or(str::is_empty) && renewed(&l).is_none_or(|t| t <= cutoff) {
                gone.insert(l.metadata.name.clone().unwrap_or_default(), l);
            }
        }
        let ttl = jiff::SignedDuration::try_from(self.ttl).unwrap_or_default();
        for l in self.list("replica").await? {
            if holder_of(&l) != Some(self.holder.as_str())
                && renewed(&l).is_none_or(|t| t + ttl <= cutoff)
            {
                gone.insert(l.metadata.name.clone().unwrap_or_default(), l);
            }
        }
        for (name, l) in gone {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: l.metadata.resource_version.clone(),
                    uid: l.metadata.uid.clone(),
                }),
                ..DeleteParams::default()
            };
            match self
                .call("delete lease", self.api.delete(&name, &params))
                .await
            {
                Ok(_) => deleted += 1,
                Err(NodeError::Api(e))
                    if matches!(classify(&e), ApiClass::Conflict | ApiClass::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    /// Leaves `notice` on the node's claim for its holder. False when there is no other live
    /// holder to hand it to (the caller claims the node instead).
    pub async fn hand_over(&self, node: &str, notice: &Notice) -> Result<bool, NodeError> {
        let name = lease_name(node);
        for _ in 0..5 {
            let Some(mut current) = self.call("get lease", self.api.get_opt(&name)).await? else {
                return Ok(false);
            };
            let holder = holder_of(&current).unwrap_or_default().to_owned();
            if holder.is_empty() || holder == self.holder {
                return Ok(false);
            }
            let mut pending = pending_of(&current);
            if pending.iter().any(|n| n.id == notice.id) {
                return Ok(true);
            }
            pending.push(notice.clone());
            let text = serde_json::to_string(&pending).unwrap_or_default();
            current
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(HANDOFF.to_owned(), text);
            current
                .metadata
                .labels
                .get_or_insert_default()
                .insert(HANDOFF.to_owned(), "pending".to_owned());
            match self
                .call(
                    "hand over a notice",
                    self.api.replace(&name, &PostParams::default(), &current),
                )
                .await
            {
                Ok(_) => return Ok(true),
                Err(NodeError::Api(e)) if classify(&e) == ApiClass::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Notices other replicas handed over on claims of ours, taken off the claims (a claim
    /// whose clearing conflicts keeps them, to be picked up again: adding a notice twice is
    /// harmless).
    pub async fn handed_over(&self) -> Result<Vec<(String, Vec<Notice>)>, NodeError> {
        let params = ListParams::default().labels(&format!(
            "{}={},{ROLE}=node,{HOLDER}={},{HANDOFF}=pending",
            MANAGED_BY.0,
            MANAGED_BY.1,
            holder_label(&self.holder)
        ));
        let mut out = Vec::new();
        for mut l in self
            .call("list leases", self.api.list(&params))
            .await?
            .items
        {
            if holder_of(&l) != Some(self.holder.as_str()) {
                continue;
            }
            let pending = pending_of(&l);
            let node = l
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(NODE_ANNOTATION).cloned());
            if let Some(a) = l.metadata.annotations.as_mut() {
                a.remove(HANDOFF);
            }
            if let Some(labels) = l.metadata.labels.as_mut() {
                labels.remove(HANDOFF);
            }
            let name = l.metadata.name.clone().unwrap_or_default();
            if let Err(e) = self
                .call(
                    "take handed-over notices",
                    self.api.replace(&name, &PostParams::default(), &l),
                )
                .await
            {
                tracing::debug!(lease = %name, error = %e, "handed-over notices stay for the next look");
            }
            if let Some(node) = node
                && !pending.is_empty()
            {
                out.push((node, pending));
            }
        }
        Ok(out)
    }

    async fn list(&self, role: &str) -> Result<Vec<Lease>, NodeError> {
        let params = ListParams::default()
            .labels(&format!("{}={},{ROLE}={role}", MANAGED_BY.0, MANAGED_BY.1));
        Ok(self
            .call("list leases", self.api.list(&params))
            .await?
            .items)
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
        // The release time stays as the renew time: the sweep deletes it after the retention.
        let patch = json!({"metadata": {"resourceVersion": current.metadata.resource_version},
            "spec": {"holderIdentity": null, "renewTime": MicroTime(Timestamp::now())}});
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

fn holder_of(l: &Lease) -> Option<&str> {
    l.spec.as_ref()?.holder_identity.as_deref()
}

/// The notices handed over on a claim; an unreadable list is none (it is replaced whole).
fn pending_of(l: &Lease) -> Vec<Notice> {
    l.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HANDOFF))
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

fn renewed(l: &Lease) -> Option<Timestamp> {
    l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0)
}

/// Not renewed within its duration (a lease never renewed counts as expired).
fn expired(l: &Lease, now: Timestamp) -> bool {
    let spec = l.spec.clone().unwrap_or_default();
    spec.renew_time.as_ref().is_none_or(|t| {
        let ttl =
            jiff::SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
        t.0 + ttl < now
    })
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
