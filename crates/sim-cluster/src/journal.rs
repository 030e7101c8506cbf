//! What happened, for tests and invariant checkers to read afterwards: every API request (its
//! time, verb, resource, answer and the fault it met) and every step of a pod's end (marked for
//! deletion with its grace, removed gracefully or not). Kept in memory, bounded; read through
//! `GET /_sim/requests` and `GET /_sim/pod-events`, or directly in-process.
//!
//! Pod steps are recorded by the store as it commits them, so no writer (API, kubelet, garbage
//! collector) can forget to log one.

use std::collections::VecDeque;

use jiff::Timestamp;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;

/// Entries kept per log; the oldest go first.
const KEPT: usize = 200_000;

#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub seq: u64,
    /// When the request arrived.
    pub at: Timestamp,
    pub duration_ms: u64,
    pub method: String,
    pub path: String,
    /// RBAC's verb (`get`, `list`, `watch`, `create`, ...); `get` for non-resource paths.
    pub verb: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The status answered; 0 when the connection ended without an answer.
    pub status: u16,
    /// The fault the request met (`status`, `latency`, `hang`, `reset`, `drop`, `expire`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// The grace period a pod deletion or eviction asked for, when it named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PodStep {
    /// The pod was created (or first seen).
    Created,
    /// The pod was bound to its node.
    Bound,
    /// The pod got its deletion timestamp (eviction, delete, garbage collection).
    Deleting,
    /// The pod object is gone.
    Removed,
}

#[derive(Debug, Clone, Serialize)]
pub struct PodRecord {
    pub at: Timestamp,
    pub step: PodStep,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `Deleting`: the grace period granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<i64>,
    /// `Removed`: whether the pod had been given a grace period that had run out (a kubelet
    /// stopping it as asked) rather than being removed at once or cut short.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graceful: Option<bool>,
    /// `Removed`: its node no longer exists (the instance is gone; pods are lost, not stopped).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub node_gone: bool,
    /// `Deleting`, `Removed`: the scheduler preempted it (its `DisruptionTarget` condition
    /// says `PreemptionByScheduler`, as the real scheduler writes it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub preempted: bool,
}

/// A node as each committed change left it: what a fence and its undo touch.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRecord {
    pub at: Timestamp,
    pub name: String,
    /// `key=value:effect`.
    pub taints: Vec<String>,
    pub unschedulable: bool,
    pub labels: serde_json::Map<String, Value>,
    pub annotations: serde_json::Map<String, Value>,
    pub ready: bool,
    pub deleted: bool,
}

#[derive(Default)]
pub struct Journal {
    seq: Mutex<u64>,
    requests: Mutex<VecDeque<RequestRecord>>,
    pods: Mutex<VecDeque<PodRecord>>,
    nodes: Mutex<VecDeque<NodeRecord>>,
}

fn push<T>(q: &Mutex<VecDeque<T>>, item: T) {
    let mut q = q.lock();
    if q.len() >= KEPT {
        q.pop_front();
    }
    q.push_back(item);
}

impl Journal {
    pub fn next_seq(&self) -> u64 {
        let mut s = self.seq.lock();
        *s += 1;
        *s
    }

    pub fn request(&self, r: RequestRecord) {
        push(&self.requests, r);
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.requests.lock().iter().cloned().collect()
    }

    pub fn clear(&self) {
        self.requests.lock().clear();
        self.pods.lock().clear();
        self.nodes.lock().clear();
    }

    pub fn node_changes(&self) -> Vec<NodeRecord> {
        self.nodes.lock().iter().cloned().collect()
    }

    /// A node change committed by the store (`deleted`: the object is gone).
    pub fn node_change(&self, node: &Value, deleted: bool) {
        let meta = &node["metadata"];
        let taints = node["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                format!(
                    "{}={}:{}",
                    t["key"].as_str().unwrap_or_default(),
                    t["value"].as_str().unwrap_or_default(),
                    t["effect"].as_str().unwrap_or_default()
                )
            })
            .collect();
        let map = |v: &Value| v.as_object().cloned().unwrap_or_default();
        push(
            &self.nodes,
            NodeRecord {
                at: Timestamp::now(),
                name: meta["name"].as_str().unwrap_or_default().to_owned(),
                taints,
                unschedulable: node["spec"]["unschedulable"] == true,
                labels: map(&meta["labels"]),
                annotations: map(&meta["annotations"]),
                ready: crate::controllers::is_ready(node),
                deleted,
            },
        );
    }

    pub fn pod_events(&self) -> Vec<PodRecord> {
        self.pods.lock().iter().cloned().collect()
    }

    /// A pod change committed by the store: `old` → `new` (`None`: removed). `node_exists`
    /// tells whether the pod's node is still there.
    pub fn pod_change(
        &self,
        old: Option<&Value>,
        new: Option<&Value>,
        node_exists: impl Fn(&str) -> bool,
    ) {
        let now = Timestamp::now();
        let Some(pod) = new.or(old) else { return };
        let meta = &pod["metadata"];
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let node = text(&pod["spec"]["nodeName"]).filter(|n| !n.is_empty());
        let preempted = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "DisruptionTarget" && c["reason"] == "PreemptionByScheduler");
        let record = |step, grace_seconds, graceful, node_gone| PodRecord {
            at: now,
            step,
            namespace: text(&meta["namespace"]).unwrap_or_default(),
            name: text(&meta["name"]).unwrap_or_default(),
            uid: text(&meta["uid"]).unwrap_or_default(),
            node: node.clone(),
            grace_seconds,
            graceful,
            node_gone,
            preempted,
        };
        match (old, new) {
            (old, Some(new)) => {
                if old.is_none() {
                    push(&self.pods, record(PodStep::Created, None, None, false));
                }
                let bound = |p: &Value| {
                    p["spec"]["nodeName"]
                        .as_str()
                        .is_some_and(|n| !n.is_empty())
                };
                if !old.is_some_and(bound) && bound(new) {
                    push(&self.pods, record(PodStep::Bound, None, None, false));
                }
                let was = old.is_some_and(|o| o["metadata"]["deletionTimestamp"].is_string());
                if !was && new["metadata"]["deletionTimestamp"].is_string() {
                    let grace = new["metadata"]["deletionGracePeriodSeconds"].as_i64();
                    push(&self.pods, record(PodStep::Deleting, grace, None, false));
                }
            }
            (Some(old), None) => {
                // Removed at (or after) the end of the grace it was given; 100 ms of slack
                // for the kubelet's timer.
                let ends = old["metadata"]["deletionTimestamp"]
                    .as_str()
                    .and_then(|s| s.parse::<Timestamp>().ok());
                let graceful = ends.is_some_and(|t| {
                    now.as_millisecond() + 100 >= t.as_millisecond()
                        && old["metadata"]["deletionGracePeriodSeconds"]
                            .as_i64()
                            .is_some_and(|g| g > 0)
                });
                let gone = node.as_deref().is_some_and(|n| !node_exists(n));
                push(
                    &self.pods,
                    record(PodStep::Removed, None, Some(graceful), gone),
                );
            }
            (None, None) => {}
        }
    }
}
