//! The fence: in one optimistic write (resourceVersion-guarded merge patch, re-read and retried
//! on 409) the node gets our taint for the notice's kind, is cordoned, is labelled out of
//! external load balancers and records the notice. The undo removes exactly what we added and
//! never uncordons a node someone else had cordoned.
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
use sih_core::{Notice, NoticeKind};

use crate::error::{ApiClass, NodeError, classify};

pub const NOTICE_ANNOTATION: &str = "spot-interrupt-handler/notice";
pub const LB_EXCLUSION_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
pub const LB_EXCLUSION_VALUE: &str = "spot-interrupt-handler";
const TAINT_PREFIX: &str = "spot-interrupt-handler/";

/// Conflicting writers get this many tries before we report the node as contended.
const MAX_ATTEMPTS: u32 = 10;

/// What the node records about the notice it is fenced for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FenceRecord {
    pub kind: NoticeKind,
    pub id: String,
    pub deadline: Option<Timestamp>,
    pub detected: Timestamp,
    /// Whether we cordoned the node (a taint-only notice does not).
    pub cordoned: bool,
    /// Whether someone else had cordoned it before us: then we never uncordon it.
    pub was_cordoned: bool,
}

#[derive(Debug, Clone)]
pub struct FenceSpec {
    pub notice: Notice,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
    /// Cordon and exclude from load balancers too (actions `cordon` and `drain`), or only taint
    /// (action `taint`).
    pub cordon: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceOutcome {
    /// False when the node was already as wanted.
    pub changed: bool,
    pub attempts: u32,
}

pub fn record_of(node: &Node) -> Option<FenceRecord> {
    node.metadata
        .annotations
        .as_ref()?
        .get(NOTICE_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok())
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

/// The merge patch that fences `node` for `spec`, or `None` when it already is.
pub fn fence_patch(node: &Node, spec: &FenceSpec) -> Option<Value> {
    let key = spec.notice.kind.taint_key();
    let mut list = taints(node);
    let ours = Taint {
        key: key.clone(),
        value: Some(spec.notice.id.clone()),
        effect: spec.effect.clone(),
        time_added: None,
    };
    let taint_ok = list
        .iter()
        .any(|t| t.key == ours.key && t.value == ours.value && t.effect == ours.effect);
    if !taint_ok {
        list.retain(|t| t.key != key);
        list.push(ours);
    }
    let previous = record_of(node);
    let was_cordoned = match &previous {
        Some(r) if r.cordoned => r.was_cordoned,
        _ => unschedulable(node),
    };
    let cordoned = spec.cordon || previous.as_ref().is_some_and(|r| r.cordoned);
    let record = FenceRecord {
        kind: spec.notice.kind,
        id: spec.notice.id.clone(),
        deadline: spec.notice.deadline,
        detected: previous
            .as_ref()
            .filter(|r| r.id == spec.notice.id)
            .map_or(spec.notice.detected, |r| r.detected),
        cordoned,
        was_cordoned,
    };
    let labelled = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LB_EXCLUSION_LABEL))
        .is_some();
    let done = taint_ok
        && previous.as_ref() == Some(&record)
        && (!spec.cordon || (unschedulable(node) && labelled));
    if done {
        return None;
    }
    let mut patch = json!({
        "metadata": {
            "resourceVersion": node.metadata.resource_version,
            "annotations": {NOTICE_ANNOTATION: serde_json::to_string(&record).unwrap_or_default()},
        },
        "spec": {"taints": list},
    });
    if spec.cordon {
        patch["spec"]["unschedulable"] = json!(true);
        if !labelled {
            patch["metadata"]["labels"] = json!({LB_EXCLUSION_LABEL: LB_EXCLUSION_VALUE});
        }
    }
    Some(patch)
}

/// The merge patch that removes our fence for `kind` (all kinds when `None`), or `None` when
/// there is nothing of ours on the node.
pub fn unfence_patch(node: &Node, kind: Option<NoticeKind>) -> Option<Value> {
    let all = taints(node);
    let ours = |t: &Taint| match kind {
        Some(k) => t.key == k.taint_key(),
        None => t.key.starts_with(TAINT_PREFIX),
    };
    let kept: Vec<Taint> = all.iter().filter(|t| !ours(t)).cloned().collect();
    let any_left = kept.iter().any(|t| t.key.starts_with(TAINT_PREFIX));
    let record = record_of(node);
    if kept.len() == all.len() && (any_left || record.is_none()) {
        return None;
    }
    let mut patch = json!({
        "metadata": {"resourceVersion": node.metadata.resource_version},
        "spec": {"taints": kept},
    });
    if !any_left {
        patch["metadata"]["annotations"] = json!({NOTICE_ANNOTATION: null});
        let ours_label = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LB_EXCLUSION_LABEL))
            .map(String::as_str)
            == Some(LB_EXCLUSION_VALUE);
        if ours_label {
            patch["metadata"]["labels"] = json!({LB_EXCLUSION_LABEL: null});
        }
        if record
            .as_ref()
            .is_some_and(|r| r.cordoned && !r.was_cordoned)
        {
            patch["spec"]["unschedulable"] = json!(null);
        }
    }
    Some(patch)
}

pub async fn fence(
    api: &Api<Node>,
    name: &str,
    spec: &FenceSpec,
) -> Result<FenceOutcome, NodeError> {
    write_optimistically(api, name, |node| fence_patch(node, spec)).await
}

pub async fn unfence(
    api: &Api<Node>,
    name: &str,
    kind: Option<NoticeKind>,
) -> Result<FenceOutcome, NodeError> {
    write_optimistically(api, name, |node| unfence_patch(node, kind)).await
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
pub async fn mark_out_of_service(api: &Api<Node>, name: &str) -> Result<FenceOutcome, NodeError> {
    write_optimistically(api, name, out_of_service_patch).await
}

/// Read, compute, write with the resourceVersion read; on 409 read again.
async fn write_optimistically(
    api: &Api<Node>,
    name: &str,
    compute: impl Fn(&Node) -> Option<Value>,
) -> Result<FenceOutcome, NodeError> {
    for attempt in 1..=MAX_ATTEMPTS {
        let node = match api.get(name).await {
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
            });
        };
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                return Ok(FenceOutcome {
                    changed: true,
                    attempts: attempt,
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

    fn notice(kind: NoticeKind, id: &str) -> Notice {
        Notice {
            kind,
            id: id.into(),
            instance_id: None,
            node: "n1".into(),
            detected: "2026-11-23T00:00:00Z".parse().unwrap(),
            deadline: None,
        }
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

    fn spot(cordon: bool) -> FenceSpec {
        FenceSpec {
            notice: notice(NoticeKind::SpotInterruption, "abc"),
            effect: "NoSchedule".into(),
            cordon,
        }
    }

    #[test]
    fn out_of_service_taint_is_added_once_beside_the_others() {
        let n = node(
            json!({"metadata": {"name": "n1", "resourceVersion": "3"}, "spec": {"taints": [{"key": "other", "effect": "NoSchedule"}]}}),
        );
        let p = out_of_service_patch(&n).unwrap();
        let after = apply(&n, &p);
        let keys: Vec<_> = taints(&after)
            .into_iter()
            .map(|t| (t.key, t.effect))
            .collect();
        assert_eq!(
            keys,
            [
                ("other".to_owned(), "NoSchedule".to_owned()),
                (OUT_OF_SERVICE_TAINT.to_owned(), "NoExecute".to_owned())
            ]
        );
        assert_eq!(out_of_service_patch(&after), None);
    }

    #[test]
    fn fence_is_one_patch_and_idempotent() {
        let n = node(
            json!({"metadata": {"name": "n1", "resourceVersion": "7", "labels": {"team": "a"}}, "spec": {"taints": [{"key": "other", "effect": "NoSchedule"}]}}),
        );
        let patch = fence_patch(&n, &spot(true)).unwrap();
        assert_eq!(
            patch["metadata"]["resourceVersion"], "7",
            "the write is guarded by what we read"
        );
        let fenced = apply(&n, &patch);
        let t = taints(&fenced);
        assert_eq!(t.len(), 2, "the other taint is kept");
        assert_eq!(t[1].key, "spot-interrupt-handler/spot-interruption");
        assert_eq!(t[1].value.as_deref(), Some("abc"));
        assert!(unschedulable(&fenced));
        assert_eq!(
            fenced.metadata.labels.as_ref().unwrap()[LB_EXCLUSION_LABEL],
            LB_EXCLUSION_VALUE
        );
        let rec = record_of(&fenced).unwrap();
        assert!(rec.cordoned && !rec.was_cordoned);
        assert_eq!(
            fence_patch(&fenced, &spot(true)),
            None,
            "fencing again changes nothing"
        );
    }

    #[test]
    fn taint_only_then_spot_then_unfence_restores_the_node() {
        let n = node(json!({"metadata": {"name": "n1", "resourceVersion": "1"}, "spec": {}}));
        let rebalance = FenceSpec {
            notice: notice(NoticeKind::RebalanceRecommendation, "r1"),
            effect: "PreferNoSchedule".into(),
            cordon: false,
        };
        let tainted = apply(&n, &fence_patch(&n, &rebalance).unwrap());
        assert!(
            !unschedulable(&tainted),
            "a taint-only notice does not cordon"
        );
        let both = apply(&tainted, &fence_patch(&tainted, &spot(true)).unwrap());
        assert_eq!(taints(&both).len(), 2, "another kind adds its own taint");
        assert!(unschedulable(&both));
        // Withdrawing the rebalance leaves the spot fence.
        let spot_only = apply(
            &both,
            &unfence_patch(&both, Some(NoticeKind::RebalanceRecommendation)).unwrap(),
        );
        assert_eq!(taints(&spot_only).len(), 1);
        assert!(unschedulable(&spot_only));
        let clean = apply(&spot_only, &unfence_patch(&spot_only, None).unwrap());
        assert!(taints(&clean).is_empty());
        assert!(!unschedulable(&clean));
        assert!(
            !clean
                .metadata
                .labels
                .clone()
                .unwrap_or_default()
                .contains_key(LB_EXCLUSION_LABEL)
        );
        assert!(record_of(&clean).is_none());
        assert_eq!(unfence_patch(&clean, None), None);
    }

    #[test]
    fn unfence_never_uncordons_a_node_someone_else_cordoned() {
        let n = node(
            json!({"metadata": {"name": "n1", "resourceVersion": "1", "labels": {LB_EXCLUSION_LABEL: "their-tool"}}, "spec": {"unschedulable": true}}),
        );
        let fenced = apply(&n, &fence_patch(&n, &spot(true)).unwrap());
        assert!(record_of(&fenced).unwrap().was_cordoned);
        let undone = apply(&fenced, &unfence_patch(&fenced, None).unwrap());
        assert!(unschedulable(&undone), "still cordoned: it was before us");
        assert_eq!(
            undone.metadata.labels.unwrap()[LB_EXCLUSION_LABEL],
            "their-tool",
            "their label stays"
        );
    }
}
