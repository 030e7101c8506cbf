//! Placeholders made, found and removed: the Kubernetes side of capacity first.
//!
//! - [`reserve`]: at a drain's start, one placeholder per pod it will move that wants one, in
//!   one pass: one read of the node (its uid owns them), one list of what is already there
//!   (two notices, a second drain or a restart reserve once), then the missing ones created
//!   [`CREATES_AT_ONCE`] at a time (and [`CREATES_IN_FLIGHT`] across every drain of the
//!   process), each call bounded;
//! - [`release`]: the node's placeholders removed (its drain was withdrawn, or its
//!   replacements are Ready);
//! - [`expire`]: every placeholder of ours older than the TTL removed, and when the next one
//!   is due — the one timer, which also finds a previous life's placeholders after a restart.
//!
//! Only ever pods with both our labels ([`MANAGED_BY`], [`ROLE`]): never anyone else's.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};

use super::{FOR_NODE, ROLE, placeholder};
use crate::claim::MANAGED_BY;
use crate::error::{ApiClass, NodeError, classify};

/// Creates in flight at once for one node: a 110-pod node reserves in a few round trips
/// without a burst the API server's flow control would push back on.
pub const CREATES_AT_ONCE: usize = 16;
/// Creates in flight at once for the whole process: an AZ-wide reclaim in queue mode (many
/// drains at once) reserves for every node in one steady stream, not a burst per node.
pub const CREATES_IN_FLIGHT: usize = 32;

/// `--reserve-capacity` and its companions.
#[derive(Debug, Clone)]
pub struct ReserveConfig {
    /// The cluster's default; a workload's annotation says otherwise.
    pub cluster: bool,
    /// `--reserve-image`.
    pub image: String,
    /// `--reserve-ttl`: the longest a placeholder lives.
    pub ttl: Duration,
    /// The bound on one call (`--api-timeout`).
    pub api_timeout: Duration,
    /// Shared by every drain of the process: at most [`CREATES_IN_FLIGHT`] creates at once.
    pub in_flight: std::sync::Arc<tokio::sync::Semaphore>,
}

impl ReserveConfig {
    pub fn new(cluster: bool, image: String, ttl: Duration, api_timeout: Duration) -> Self {
        Self {
            cluster,
            image,
            ttl,
            api_timeout,
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(CREATES_IN_FLIGHT)),
        }
    }
}

/// What one pass of [`reserve`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reserved {
    /// Placeholders created now.
    pub made: usize,
    /// Already there (an earlier pass, another notice, a previous life).
    pub kept: usize,
    /// Pods that want one whose create failed, with the first error.
    pub failed: usize,
    pub error: Option<String>,
}

impl Reserved {
    /// One line for people.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} placeholder(s) reserving the room of the pods leaving",
            self.made + self.kept
        );
        if self.kept > 0 {
            s.push_str(&format!(" ({} already there)", self.kept));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!("; {} could not be created: {e}", self.failed));
        }
        s
    }
}

/// The selector of our placeholders: all of them, or those standing in for `node`.
pub fn selector(node: Option<&str>) -> String {
    let mut s = format!("{}={},{}={}", MANAGED_BY.0, MANAGED_BY.1, ROLE.0, ROLE.1);
    if let Some(node) = node {
        s.push_str(&format!(
            ",{FOR_NODE}={}",
            sih_core::label_value::label_value(node)
        ));
    }
    s
}

/// Our placeholders (of `node`, or all).
async fn ours(
    client: &kube::Client,
    node: Option<&str>,
    timeout: Duration,
) -> Result<Vec<Pod>, NodeError> {
    let all: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default().labels(&selector(node));
    let list = crate::bounded(timeout, "list placeholders", all.list(&lp))
        .await?
        .map_err(NodeError::Api)?;
    // Labels anyone may write: only what also has our name, our class and a Node for its
    // owner is taken for ours (and ever removed).
    Ok(list.items.into_iter().filter(made_by_us).collect())
}

/// Whether a pod our labels select has the rest of a placeholder's shape.
fn made_by_us(p: &Pod) -> bool {
    p.metadata
        .name
        .as_deref()
        .is_some_and(|n| n.starts_with(super::NAME_PREFIX))
        && p.spec
            .as_ref()
            .and_then(|s| s.priority_class_name.as_deref())
            == Some(super::PRIORITY_CLASS)
        && p.metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|r| r.kind == "Node"))
}

/// Reserves the room of `leaving` (the pods a drain of `node` will move). No call at all
/// when none of them wants a placeholder.
pub async fn reserve(
    client: &kube::Client,
    node: &str,
    leaving: &[Pod],
    cfg: &ReserveConfig,
) -> Result<Reserved, NodeError> {
    let wanted: Vec<&Pod> = leaving
        .iter()
        .filter(|p| super::wanted(p, cfg.cluster).is_ok())
        .collect();
    if wanted.is_empty() {
        return Ok(Reserved::default());
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let owner = match crate::bounded(cfg.api_timeout, "get node", nodes.get(node)).await? {
        Ok(n) => n,
        Err(e) if classify(&e) == ApiClass::NotFound => {
            return Err(NodeError::NodeNotFound(node.to_owned()));
        }
        Err(e) => return Err(NodeError::Api(e)),
    };
    let there: HashSet<String> = ours(client, Some(node), cfg.api_timeout)
        .await?
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let mut out = Reserved::default();
    let mut missing = Vec::new();
    for pod in wanted {
        let Some(p) = placeholder(pod, &owner, cfg.cluster, &cfg.image) else {
            continue;
        };
        if p.metadata.name.as_ref().is_some_and(|n| there.contains(n)) {
            out.kept += 1;
        } else {
            missing.push(p);
        }
    }
    let timeout = cfg.api_timeout;
    let mut creates = futures_util::stream::iter(missing.into_iter().map(|p| {
        let api: Api<Pod> = Api::namespaced(
            client.clone(),
            p.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let in_flight = cfg.in_flight.clone();
        async move {
            // Never closed: a permit always comes, the bound is on the call alone.
            let _permit = in_flight.acquire_owned().await;
            crate::bounded(
                timeout,
                "create placeholder",
                api.create(&PostParams::default(), &p),
            )
            .await
            .and_then(|r| r.map_err(NodeError::Api))
        }
    }))
    .buffer_unordered(CREATES_AT_ONCE);
    while let Some(r) = creates.next().await {
        match r {
            Ok(_) => out.made += 1,
            // Made by an answer that was lost, or by a replica beside us: reserved all the same.
            Err(NodeError::Api(e)) if classify(&e) == ApiClass::Conflict => out.kept += 1,
            Err(e) => {
                out.failed += 1;
                out.error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Ok(out)
}

/// Removes one placeholder (at once: it has nothing to stop); gone already is fine.
async fn remove(client: &kube::Client, p: &Pod, timeout: Duration) -> Result<bool, NodeError> {
    let (Some(ns), Some(name)) = (&p.metadata.namespace, &p.metadata.name) else {
        return Ok(false);
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        // The one we listed, never a pod that took its name since.
        preconditions: Some(Preconditions {
            uid: p.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match crate::bounded(timeout, "delete placeholder", api.delete(name, &dp)).await? {
        Ok(_) => Ok(true),
        Err(e) if matches!(classify(&e), ApiClass::NotFound | ApiClass::Conflict) => Ok(false),
        Err(e) => Err(NodeError::Api(e)),
    }
}

/// Removes the placeholders standing in for `node`; how many it removed.
pub async fn release(
    client: &kube::Client,
    node: &str,
    timeout: Duration,
) -> Result<usize, NodeError> {
    let mut removed = 0;
    let mut first_error = None;
    for p in ours(client, Some(node), timeout).await? {
        match remove(client, &p, timeout).await {
            Ok(gone) => removed += usize::from(gone),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}

/// When a placeholder made at `created` is due to go.
pub fn due(created: Timestamp, ttl: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(ttl)
        .ok()
        .and_then(|ttl| created.checked_add(ttl).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Removes every placeholder of ours (of `node`, or all) older than `ttl`; returns how many it
/// removed and when the next of those left is due (`None`: none left).
pub async fn expire(
    client: &kube::Client,
    node: Option<&str>,
    ttl: Duration,
    timeout: Duration,
) -> Result<(usize, Option<Timestamp>), NodeError> {
    let now = Timestamp::now();
    let mut removed = 0;
    let mut next: Option<Timestamp> = None;
    for p in ours(client, node, timeout).await? {
        // One without a creation time (never from a real server) is taken as made now.
        let created = p.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
        let at = due(created, ttl);
        if at <= now {
            removed += usize::from(remove(client, &p, timeout).await?);
        } else {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    Ok((removed, next))
}

/// How long the keeper waits after a failed look before it looks again.
const RETRY: Duration = Duration::from_secs(5);

/// How long after creates were sent a placeholder may still appear with nobody left to say
/// so: a create the API server received but answered after its drain was cancelled or its
/// process ended (a slow server, a restart mid-reserve). A real server gives up on a request
/// after 60 s.
pub const LATE_CREATES: Duration = Duration::from_secs(60);

/// When the keeper looks next, `since_asked` after its bell last rang (or it started), given
/// when the next placeholder it found is due (`None`: none left). While creates may still
/// land it looks every few seconds (half the TTL at most, so one that lands is found well
/// before it is due); after that, at least once a TTL, for a placeholder another process of
/// ours made (two agents of a rolling update); and a little after the next one is due.
pub fn next_look(since_asked: Duration, due_in: Option<Duration>, ttl: Duration) -> Duration {
    let idle = if since_asked < LATE_CREATES {
        RETRY.min(ttl / 2)
    } else {
        ttl
    };
    // A little after it is due, so the next look finds it due.
    due_in.map_or(idle, |d| idle.min(d + Duration::from_millis(100)))
}

/// The one timer of a process: removes placeholders of ours (of `node`, or all) as their TTL
/// runs out. It looks at once (a previous life's placeholders are found, kept until their
/// time or removed), then as [`next_look`] says, and at once when `asked` rings (a drain is
/// about to create placeholders, or made some).
///
/// It once waited only for its bell when it found none, and the bell rang only after creates
/// were answered (soak seed 64079): a restarted agent's drain, its deadline already past,
/// ended and cancelled its reservation after the create was sent and before the answer; the
/// placeholder landed just after the keeper's first look and outlived its TTL.
pub async fn keep(
    client: kube::Client,
    node: Option<String>,
    ttl: Duration,
    timeout: Duration,
    asked: std::sync::Arc<tokio::sync::Notify>,
) {
    let mut asked_at = tokio::time::Instant::now();
    loop {
        let wait = match expire(&client, node.as_deref(), ttl, timeout).await {
            Ok((removed, next)) => {
                if removed > 0 {
                    tracing::info!(
                        removed,
                        ttl_s = ttl.as_secs(),
                        "placeholders past their TTL removed"
                    );
                }
                let due_in = next.map(|at| {
                    Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or_default()
                });
                next_look(asked_at.elapsed(), due_in, ttl)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for placeholders past their TTL; trying again");
                RETRY
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = asked.notified() => asked_at = tokio::time::Instant::now(),
        }
    }
}

/// What a drain needs to reserve: the settings, and the keeper's bell ([`keep`]) to ring
/// before it creates placeholders (they may land after the drain is gone) and when it made
/// some.
#[derive(Debug, Clone)]
pub struct Reservations {
    pub config: ReserveConfig,
    pub asked: std::sync::Arc<tokio::sync::Notify>,
}
