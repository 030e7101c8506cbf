//! The fence: in one optimistic write (resourceVersion-guarded merge patch, re-read and retried
//! on 409) the node gets the taints, the cordon and the load-balancer exclusion its evacuation
//! plan asks for, and records every notice it carries, so a restart resumes all of them and
//! announces none again. The same write undoes what no remaining notice needs, and never
//! uncordons a node someone else had cordoned.
//!
//! Several writers may share a node (an agent, the queue controller, an operator's `drain`):
//! each writes its own notices and keeps the others' it finds recorded, so no writer removes a
//! taint another still needs.
//!
//! A full-node update would race with other writers and lose their changes (or ours); a merge
//! patch carrying the resourceVersion we read changes only our fields and fails instead of
//! overwriting anything newer.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sih_core::{Carried, Notice, NoticeKind, PlanRules, Source, evacuation_plan};

use crate::error::{ApiClass, NodeError, classify};

pub const NOTICE_ANNOTATION: &str = "spot-interrupt-handler/notice";
pub const LB_EXCLUSION_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
pub const LB_EXCLUSION_VALUE: &str = "spot-interrupt-handler";
const TAINT_PREFIX: &str = "spot-interrupt-handler/";

/// Conflicting writers get this many tries before we report the node as contended.
const MAX_ATTEMPTS: u32 = 10;

/// What the node records: every notice it carries, and whose cordon it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub notices: Vec<Carried>,
    /// Whether we cordoned the node (a taint-only plan does not).
    pub cordoned: bool,
    /// Whether someone else had cordoned it before us: then we never uncordon it.
    pub was_cordoned: bool,
}

/// The record earlier versions wrote: one notice.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyRecord {
    kind: NoticeKind,
    id: String,
    deadline: Option<Timestamp>,
    detected: Timestamp,
    cordoned: bool,
    was_cordoned: bool,
}

/// The node's record; a record in the older one-notice form is read as `reader`'s.
pub fn record_of(node: &Node, reader: Source) -> Option<NodeRecord> {
    let raw = node.metadata.annotations.as_ref()?.get(NOTICE_ANNOTATION)?;
    if let Ok(r) = serde_json::from_str::<NodeRecord>(raw) {
        return Some(r);
    }
    let old: LegacyRecord = serde_json::from_str(raw).ok()?;
    Some(NodeRecord {
        notices: vec![Carried::new(Notice {
            kind: old.kind,
            id: old.id,
            instance_id: None,
            node: node.metadata.name.clone().unwrap_or_default(),
            detected: old.detected,
            deadline: old.deadline,
            source: reader,
        })],
        cordoned: old.cordoned,
        was_cordoned: old.was_cordoned,
    })
}

fn taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

fn unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

fn ours(t: &Taint) -> bool {
    t.key.starts_with(TAINT_PREFIX)
}

/// The notices the node should carry after a write: the recorded ones `keep` keeps, then
/// `add` (which replace recorded notices of the same id).
pub fn carried_after(
    node: &Node,
    reader: Source,
    keep: impl Fn(&Carried) -> bool,
    add: &[Carried],
) -> Vec<Carried> {
    let recorded = record_of(node, reader).unwrap_or_default().notices;
    let mut all: Vec<Carried> = recorded
        .into_iter()
        .filter(|c| keep(c) && !add.iter().any(|a| a.notice.id == c.notice.id))
        .collect();
    all.extend(add.iter().cloned());
    all
}

/// The merge patch that makes `node` carry `notices` and be fenced as their plan says, or
/// `None` when it already is.
pub fn plan_patch(
    node: &Node,
    notices: &[Carried],
    rules: &PlanRules,
    reader: Source,
) -> Option<Value> {
    let plan = evacuation_plan(notices, rules);
    let current = taints(node);
    let wanted: Vec<Taint> = plan
        .taints
        .iter()
        .map(|t| Taint {
            key: t.key.clone(),
            value: Some(t.value.clone()),
            effect: t.effect.clone(),
            time_added: None,
        })
        .collect();
    let mine_now: Vec<&Taint> = current.iter().filter(|t| ours(t)).collect();
    let taints_ok = mine_now.len() == wanted.len()
        && wanted.iter().all(|w| {
            mine_now
                .iter()
                .any(|t| t.key == w.key && t.value == w.value && t.effect == w.effect)
        });
    let previous = record_of(node, reader);
    let we_cordoned = previous.as_ref().is_some_and(|r| r.cordoned);
    let was_cordoned = if we_cordoned {
        previous.as_ref().is_some_and(|r| r.was_cordoned)
    } else {
        unschedulable(node)
    };
    let label = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LB_EXCLUSION_LABEL))
        .map(String::as_str);
    let record = (!notices.is_empty()).then(|| NodeRecord {
        notices: notices.to_vec(),
        cordoned: plan.cordon,
        was_cordoned: plan.cordon && was_cordoned,
    });
    let cordon_ok = if plan.cordon {
        unschedulable(node) && label.is_some()
    } else {
        !we_cordoned || previous.as_ref().is_some_and(|r| r.was_cordoned)
    };
    let label_ok = plan.cordon || label != Some(LB_EXCLUSION_VALUE);
    if taints_ok && cordon_ok && label_ok && previous == record {
        return None;
    }
    let mut list: Vec<Taint> = current.into_iter().filter(|t| !ours(t)).collect();
    list.extend(wanted);
    let annotation = match &record {
        Some(r) => json!(serde_json::to_string(r).unwrap_or_default()),
        None => Value::Null,
    };
    let mut patch = json!({
        "metadata": {
            "resourceVersion": node.metadata.resource_version,
            "annotations": {NOTICE_ANNOTATION: annotation},
        },
        "spec": {"taints": list},
    });
    if plan.cordon {
        patch["spec"]["unschedulable"] = json!(true);
        if label.is_none() {
            patch["metadata"]["labels"] = json!({LB_EXCLUSION_LABEL: LB_EXCLUSION_VALUE});
        }
    } else {
        if we_cordoned && !previous.as_ref().is_some_and(|r| r.was_cordoned) {
            patch["spec"]["unschedulable"] = Value::Null;
        }
        if label == Some(LB_EXCLUSION_VALUE) {
            patch["metadata"]["labels"] = json!({LB_EXCLUSION_LABEL: null});
        }
    }
    Some(patch)
}

/// How a write went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceOutcome {
    /// False when the node was already as wanted.
    pub changed: bool,
    pub attempts: u32,
    /// What the node said of itself when it was read for the write.
    pub facts: NodeFacts,
}

/// What a node says of itself that people are told (webhook messages).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub provider_id: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
}

impl NodeFacts {
    pub fn of(node: &Node) -> Self {
        Self {
            provider_id: node.spec.as_ref().and_then(|s| s.provider_id.clone()),
            labels: node.metadata.labels.clone().unwrap_or_default(),
        }
    }
}

/// Writes `source`'s notices onto the node (replacing what `source` recorded before) and
/// fences it for every notice it then carries. `ours` empty removes `source`'s notices and
/// undoes what no other notice needs.
pub async fn fence(
    api: &Api<Node>,
    name: &str,
    source: Source,
    ours: &[Carried],
    rules: &PlanRules,
    timeout: Duration,
) -> Result<FenceOutcome, NodeError> {
    write_optimistically(api, name, timeout, |node| {
        let all = carried_after(node, source, |c| c.notice.source != source, ours);
        plan_patch(node, &all, rules, source)
    })
    .await
}

/// Removes the notices of `kind` (every notice when `None`), whoever recorded them, and
/// undoes what the remaining ones do not need (`undrain`).
pub async fn unfence(
    api: &Api<Node>,
    name: &str,
    kind: Option<NoticeKind>,
    rules: &PlanRules,
    timeout: Duration,
) -> Result<FenceOutcome, NodeError> {
    write_optimistically(api, name, timeout, |node| {
        let left = carried_after(
            node,
            Source::Manual,
            |c| kind.is_some_and(|k| c.notice.kind != k),
            &[],
        );
        let patch = plan_patch(node, &left, rules, Source::Manual);
        // A taint of ours that no record explains (written by hand, or by a lost record) goes
        // too when everything is undone.
        match (patch, kind) {
            (None, None) if taints(node).iter().any(ours) => {
                let kept: Vec<Taint> = taints(node).into_iter().filter(|t| !ours(t)).collect();
                Some(json!({
                    "metadata": {"resourceVersion": node.metadata.resource_version},
                    "spec": {"taints": kept},
                }))
            }
            (p, _) => p,
        }
    })
    .await
}

pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// The patch adding Kubernetes' out-of-service taint (`nodeshutdown:NoExecute`), which lets
/// volumes detach and StatefulSet pods move once the instance is gone, or `None` if present.
pub fn out_of_service_patch(node: &Node) -> Option<Value> {
    let mut list = taints(node);
    if list.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT) {
        return None;
    }
    list.push(Taint {
        key: OUT_OF_SERVICE_TAINT.into(),
        value: Some("nodeshutdown".into()),
        effect: "NoExecute".into(),
        time_added: None,
    });
    Some(json!({
        "metadata": {"resourceVersion": node.metadata.resource_version},
        "spec": {"taints": list},
    }))
}

/// After a drain whose instance is going away for good (`--out-of-service-taint`).
pub async fn mark_out_of_service(
    api: &Api<Node>,
    name: &str,
    timeout: Duration,
) -> Result<FenceOutcome, NodeError> {
    write_optimistically(api, name, timeout, out_of_service_patch).await
}

/// Read, compute, write with the resourceVersion read; on 409 read again. Each call is bounded
/// by `timeout`.
async fn write_optimistically(
    api: &Api<Node>,
    name: &str,
    timeout: Duration,
    compute: impl Fn(&Node) -> Option<Value>,
) -> Result<FenceOutcome, NodeError> {
    for attempt in 1..=MAX_ATTEMPTS {
        let node = match crate::bounded(timeout, "get node", api.get(name)).await? {
            Ok(n) => n,
            Err(e) if classify(&e) == ApiClass::NotFound => {
                return Err(NodeError::NodeNotFound(name.to_owned()));
            }
            Err(e) => return Err(NodeError::Api(e)),
        };
        let Some(patch) = compute(&node) else {
            return Ok(FenceOutcome {
                changed: false,
                attempts: attempt,
                facts: NodeFacts::of(&node),
            });
        };
        let (params, merge) = (PatchParams::default(), Patch::Merge(&patch));
        let write = api.patch(name, &params, &merge);
        match crate::bounded(timeout, "patch node", write).await? {
            Ok(written) => {
                return Ok(FenceOutcome {
                    changed: true,
                    attempts: attempt,
                    facts: NodeFacts::of(&written),
                });
            }
            Err(e) if classify(&e) == ApiClass::Conflict => {
                // Someone wrote the node between our read and write: read it again, soon but
                // not in lockstep with the other writer.
                tokio::time::sleep(Duration::from_millis(fastrand::u64(
                    1..=10 * u64::from(attempt),
                )))
                .await;
            }
            Err(e) if classify(&e) == ApiClass::NotFound => {
                return Err(NodeError::NodeNotFound(name.to_owned()));
            }
            Err(e) => return Err(NodeError::Api(e)),
        }
    }
    Err(NodeError::Conflict {
        node: name.to_owned(),
        attempts: MAX_ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        "2026-11-23T00:00:00Z".parse::<Timestamp>().unwrap() + jiff::SignedDuration::from_secs(secs)
    }

    fn spot(source: Source) -> Carried {
        Carried::new(Notice::spot_interruption(
            "i-1",
            "n1",
            at(0),
            at(120),
            source,
        ))
    }

    fn rebalance() -> Carried {
        Carried::new(Notice::rebalance("i-1", "n1", at(0), Source::Agent))
    }

    fn event(id: &str) -> Carried {
        Carried::new(Notice::scheduled_maintenance(
            id,
            "i-1",
            "n1",
            at(0),
            Some(at(600)),
            Source::Agent,
        ))
    }

    fn node(v: Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    /// Applies a merge patch the way the API server would.
    fn apply(n: &Node, patch: &Value) -> Node {
        let mut v = serde_json::to_value(n).unwrap();
        merge(&mut v, patch);
        serde_json::from_value(v).unwrap()
    }

    fn merge(t: &mut Value, p: &Value) {
        match (t, p) {
            (Value::Object(t), Value::Object(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
            (t, p) => *t = p.clone(),
        }
    }

    /// `source` writes `ours` the way `fence` does, until the node settles.
    fn write(n: &Node, source: Source, ours: &[Carried]) -> Node {
        let rules = PlanRules::default();
        let all = carried_after(n, source, |c| c.notice.source != source, ours);
        match plan_patch(n, &all, &rules, source) {
            Some(p) => {
                let after = apply(n, &p);
                let again = carried_after(&after, source, |c| c.notice.source != source, ours);
                assert_eq!(
                    plan_patch(&after, &again, &rules, source),
                    None,
                    "one write settles it"
                );
                after
            }
            None => n.clone(),
        }
    }

    fn keys(n: &Node) -> Vec<String> {
        let mut k: Vec<String> = taints(n).into_iter().map(|t| t.key).collect();
        k.sort();
        k
    }

    fn blank() -> Node {
        node(
            json!({"metadata": {"name": "n1", "resourceVersion": "7", "labels": {"team": "a"}},
            "spec": {"taints": [{"key": "theirs", "effect": "NoSchedule"}]}}),
        )
    }

    #[test]
    fn out_of_service_taint_is_added_once_beside_the_others() {
        let n = blank();
        let after = apply(&n, &out_of_service_patch(&n).unwrap());
        assert_eq!(
            keys(&after),
            ["node.kubernetes.io/out-of-service", "theirs"]
        );
        assert_eq!(out_of_service_patch(&after), None);
    }

    #[test]
    fn the_fence_is_one_guarded_patch_and_records_every_notice() {
        let n = blank();
        let rules = PlanRules::default();
        let patch = plan_patch(&n, &[spot(Source::Agent)], &rules, Source::Agent).unwrap();
        assert_eq!(
            patch["metadata"]["resourceVersion"], "7",
            "guarded by what we read"
        );
        let fenced = write(&n, Source::Agent, &[spot(Source::Agent)]);
        assert_eq!(
            keys(&fenced),
            ["spot-interrupt-handler/spot-interruption", "theirs"]
        );
        assert!(unschedulable(&fenced));
        assert_eq!(
            fenced.metadata.labels.as_ref().unwrap()[LB_EXCLUSION_LABEL],
            LB_EXCLUSION_VALUE
        );
        let r = record_of(&fenced, Source::Agent).unwrap();
        assert_eq!(r.notices, [spot(Source::Agent)]);
        assert!(r.cordoned && !r.was_cordoned);
        // The rebalance joins: recorded beside the spot notice, never instead of it.
        let both = write(&fenced, Source::Agent, &[spot(Source::Agent), rebalance()]);
        assert_eq!(record_of(&both, Source::Agent).unwrap().notices.len(), 2);
        assert_eq!(keys(&both).len(), 3);
    }

    #[test]
    fn withdrawing_one_notice_undoes_only_what_no_other_needs() {
        let n = blank();
        let both = write(&n, Source::Agent, &[rebalance(), spot(Source::Agent)]);
        let spot_only = write(&both, Source::Agent, &[spot(Source::Agent)]);
        assert_eq!(
            keys(&spot_only),
            ["spot-interrupt-handler/spot-interruption", "theirs"]
        );
        assert!(unschedulable(&spot_only));
        // Two scheduled events; one is cancelled: the fence stays for the other.
        let events = write(&n, Source::Agent, &[event("e1"), event("e2")]);
        let one_left = write(&events, Source::Agent, &[event("e2")]);
        assert!(unschedulable(&one_left));
        assert_eq!(keys(&one_left).len(), 2);
        // The last one goes: the node is as it was.
        let clean = write(&one_left, Source::Agent, &[]);
        assert_eq!(keys(&clean), ["theirs"]);
        assert!(!unschedulable(&clean));
        assert!(
            !clean
                .metadata
                .labels
                .clone()
                .unwrap_or_default()
                .contains_key(LB_EXCLUSION_LABEL)
        );
        assert!(record_of(&clean, Source::Agent).is_none());
    }

    #[test]
    fn another_writers_notices_and_cordon_are_kept() {
        let n = node(
            json!({"metadata": {"name": "n1", "resourceVersion": "1", "labels": {LB_EXCLUSION_LABEL: "their-tool"}}, "spec": {"unschedulable": true}}),
        );
        let queue = write(&n, Source::Queue, &[spot(Source::Queue)]);
        assert!(record_of(&queue, Source::Queue).unwrap().was_cordoned);
        let imds = write(&queue, Source::Agent, &[rebalance()]);
        assert_eq!(record_of(&imds, Source::Agent).unwrap().notices.len(), 2);
        // The agent's rebalance goes; the controller's spot notice keeps the fence.
        let after = write(&imds, Source::Agent, &[]);
        assert_eq!(keys(&after), ["spot-interrupt-handler/spot-interruption"]);
        // Everything undone: still cordoned and labelled, as it was before us.
        let patch = plan_patch(&after, &[], &PlanRules::default(), Source::Manual).unwrap();
        let undone = apply(&after, &patch);
        assert!(unschedulable(&undone), "it was cordoned before us");
        assert_eq!(
            undone.metadata.labels.unwrap()[LB_EXCLUSION_LABEL],
            "their-tool"
        );
    }

    #[test]
    fn a_record_in_the_older_one_notice_form_is_read() {
        let old = r#"{"kind":"spot-interruption","id":"i-1-spot-1795428120","deadline":"2026-11-23T00:02:00Z","detected":"2026-11-23T00:00:00Z","cordoned":true,"wasCordoned":false}"#;
        let n = node(json!({"metadata": {"name": "n1", "annotations": {NOTICE_ANNOTATION: old}}}));
        let r = record_of(&n, Source::Agent).unwrap();
        assert_eq!(r.notices[0].notice.kind, NoticeKind::SpotInterruption);
        assert_eq!(r.notices[0].notice.source, Source::Agent);
        assert!(r.cordoned);
        let garbage =
            node(json!({"metadata": {"name": "n1", "annotations": {NOTICE_ANNOTATION: "{nope"}}}));
        assert_eq!(record_of(&garbage, Source::Agent), None);
    }
}
