//! What the page shows of each object, read off the Kubernetes objects: pure functions, so
//! what a node or pod looks like is tested without a cluster.

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use serde::Serialize;

/// Labels that say a node is spot capacity (EKS, Karpenter, the workshops, GKE, AKS).
const SPOT: [(&str, &str); 7] = [
    ("karpenter.sh/capacity-type", "spot"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
    ("lifecycle", "Ec2Spot"),
    ("node.kubernetes.io/lifecycle", "spot"),
    ("cloud.google.com/gke-spot", "true"),
    ("cloud.google.com/gke-preemptible", "true"),
    ("kubernetes.azure.com/scalesetpriority", "spot"),
];
/// Labels that say it is on-demand capacity.
const ON_DEMAND: [(&str, &str); 5] = [
    ("karpenter.sh/capacity-type", "on-demand"),
    ("eks.amazonaws.com/capacityType", "ON_DEMAND"),
    ("lifecycle", "OnDemand"),
    ("node.kubernetes.io/lifecycle", "normal"),
    ("kubernetes.azure.com/scalesetpriority", "regular"),
];
/// Our taints' prefix.
const OURS: &str = "spot-interrupt-handler/";
/// Who writes the Events the timeline shows.
pub const REPORTER: &str = "spot-interrupt-handler";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub name: String,
    /// `spot`, `on-demand` or `other`.
    pub capacity: &'static str,
    /// The Ready condition's status: `True`, `False`, `Unknown`, or empty before the kubelet
    /// reports.
    pub ready: String,
    pub cordoned: bool,
    /// Our taints, as `key=value:effect`.
    pub taints: Vec<String>,
    /// Labelled out of external load balancers.
    pub lb_excluded: bool,
    pub notices: Vec<NoticeView>,
    pub zone: String,
    pub instance_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NoticeView {
    pub kind: String,
    pub id: String,
    /// Unix milliseconds; the page counts down to it.
    pub deadline_ms: Option<i64>,
    pub drained: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// Empty while unscheduled.
    pub node: String,
    /// `waiting` (no node yet), `starting`, `running`, `terminating`, `done`.
    pub state: &'static str,
    pub daemon: bool,
    /// One of our capacity placeholders (`--reserve-capacity`): room held, not a workload.
    pub placeholder: bool,
    /// We evicted it (or deleted it at the deadline): an Event of ours says so.
    pub evicted: bool,
    /// Its controller (`ReplicaSet/web-5f...`), empty for none: the page links an evicted pod
    /// to the replacement its controller makes.
    pub owner: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub uid: String,
    /// Unix milliseconds.
    pub at_ms: i64,
    pub reason: String,
    /// `Normal` or `Warning`.
    pub severity: String,
    /// `Node/NAME` or `Pod/NAMESPACE/NAME`.
    pub object: String,
    pub message: String,
}

fn label_is(
    labels: Option<&std::collections::BTreeMap<String, String>>,
    pairs: &[(&str, &str)],
) -> bool {
    labels.is_some_and(|l| {
        pairs
            .iter()
            .any(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
    })
}

pub fn node_view(n: &Node) -> NodeView {
    let meta = &n.metadata;
    let labels = meta.labels.as_ref();
    let capacity = if label_is(labels, &SPOT) {
        "spot"
    } else if label_is(labels, &ON_DEMAND) {
        "on-demand"
    } else {
        "other"
    };
    let label = |k: &str| labels.and_then(|l| l.get(k)).cloned().unwrap_or_default();
    let spec = n.spec.as_ref();
    let notices = sih_node::record_of(n, sih_core::Source::Queue)
        .map(|r| {
            r.notices
                .into_iter()
                .map(|c| NoticeView {
                    kind: c.notice.kind.to_string(),
                    id: c.notice.id,
                    deadline_ms: c.notice.deadline.map(|d| d.as_millisecond()),
                    drained: c.drained,
                })
                .collect()
        })
        .unwrap_or_default();
    NodeView {
        name: meta.name.clone().unwrap_or_default(),
        capacity,
        ready: n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone())
            .unwrap_or_default(),
        cordoned: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        taints: spec
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter(|t| t.key.starts_with(OURS))
            .map(|t| {
                format!(
                    "{}={}:{}",
                    t.key,
                    t.value.as_deref().unwrap_or(""),
                    t.effect
                )
            })
            .collect(),
        lb_excluded: labels.is_some_and(|l| l.contains_key(sih_node::LB_EXCLUSION_LABEL)),
        notices,
        zone: label("topology.kubernetes.io/zone"),
        instance_type: label("node.kubernetes.io/instance-type"),
    }
}

pub fn pod_view(p: &Pod, evicted: bool) -> PodView {
    let meta = &p.metadata;
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let status = p.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let state = match status.and_then(|s| s.phase.as_deref()) {
        _ if meta.deletion_timestamp.is_some() => "terminating",
        Some("Succeeded" | "Failed") => "done",
        _ if node.is_empty() => "waiting",
        Some("Running") if ready => "running",
        _ => "starting",
    };
    PodView {
        uid: meta.uid.clone().unwrap_or_default(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        node,
        state,
        daemon: meta
            .owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|r| r.kind == "DaemonSet")),
        placeholder: sih_node::reserve::is_placeholder(p),
        evicted,
        owner: meta
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
            .map(|r| format!("{}/{}", r.kind, r.name))
            .unwrap_or_default(),
    }
}

/// The longest message kept: ours are at most 1 KiB (the Events API's note limit); anyone
/// may create Events, and 100 of 512 KiB once grew the view to 131 MB (issue 32).
pub const MESSAGE_MAX: usize = 1024;
/// The longest reason or object name kept.
const FIELD_MAX: usize = 256;

/// `s` cut to at most `max` bytes on a character boundary, marked when cut.
fn capped(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max.saturating_sub('…'.len_utf8());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Our Events only (the timeline is the evacuation's story, not the cluster's noise): those
/// our reporting controller wrote (`reportingController`, `reportingComponent` in core/v1;
/// the legacy `source.component` is not ours to trust), each field capped.
pub fn event_view(e: &Event) -> Option<EventView> {
    if e.reporting_component.as_deref() != Some(REPORTER) {
        return None;
    }
    let o = &e.involved_object;
    let object = match (o.kind.as_deref(), &o.namespace) {
        (Some("Pod"), Some(ns)) => format!("Pod/{ns}/{}", o.name.as_deref().unwrap_or("")),
        (kind, _) => format!(
            "{}/{}",
            kind.unwrap_or("?"),
            o.name.as_deref().unwrap_or("")
        ),
    };
    let at = e
        .event_time
        .as_ref()
        .map(|t| t.0)
        .or(e.last_timestamp.as_ref().map(|t| t.0))
        .or(e.first_timestamp.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .map(|t| t.as_millisecond())
        .unwrap_or_default();
    Some(EventView {
        uid: capped(e.metadata.uid.clone().unwrap_or_default(), FIELD_MAX),
        at_ms: at,
        reason: capped(e.reason.clone().unwrap_or_default(), FIELD_MAX),
        severity: capped(e.type_.clone().unwrap_or_default(), FIELD_MAX),
        object: capped(object, FIELD_MAX),
        message: capped(e.message.clone().unwrap_or_default(), MESSAGE_MAX),
    })
}

/// The pod (`namespace/name`) an Event of ours says was evicted or deleted at the deadline.
pub fn evicted_pod(e: &EventView) -> Option<&str> {
    matches!(e.reason.as_str(), "PodEvicted" | "PodDeletedAtDeadline")
        .then(|| e.object.strip_prefix("Pod/"))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_fenced_spot_node_shows_its_fence_and_its_notice() {
        let record = json!({"notices": [{"kind": "spot-interruption", "id": "i-1-spot", "node": "n1",
            "detected": "2026-12-04T10:00:00Z", "deadline": "2026-12-04T10:02:00Z", "source": "imds"}],
            "cordoned": true, "wasCordoned": false});
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"karpenter.sh/capacity-type": "spot",
                "node.kubernetes.io/exclude-from-external-load-balancers": "spot-interrupt-handler",
                "topology.kubernetes.io/zone": "us-east-1a"},
                "annotations": {"spot-interrupt-handler/notice": record.to_string()}},
            "spec": {"unschedulable": true, "taints": [
                {"key": "spot-interrupt-handler/spot-interruption", "value": "i-1-spot", "effect": "NoSchedule"},
                {"key": "other", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap();
        let v = node_view(&n);
        assert_eq!(v.capacity, "spot");
        assert_eq!(v.ready, "True");
        assert!(v.cordoned && v.lb_excluded);
        assert_eq!(
            v.taints,
            vec!["spot-interrupt-handler/spot-interruption=i-1-spot:NoSchedule"]
        );
        assert_eq!(v.notices.len(), 1);
        assert_eq!(v.notices[0].kind, "spot-interruption");
        assert_eq!(
            v.notices[0].deadline_ms,
            Some(
                "2026-12-04T10:02:00Z"
                    .parse::<jiff::Timestamp>()
                    .unwrap()
                    .as_millisecond()
            )
        );
        let plain: Node = serde_json::from_value(json!({"metadata": {"name": "n2",
            "labels": {"eks.amazonaws.com/capacityType": "ON_DEMAND"}}}))
        .unwrap();
        let v = node_view(&plain);
        assert_eq!(
            (v.capacity, v.cordoned, v.notices.len()),
            ("on-demand", false, 0)
        );
        let bare: Node = serde_json::from_value(json!({"metadata": {"name": "n3"}})).unwrap();
        assert_eq!(node_view(&bare).capacity, "other");
    }

    #[test]
    fn pods_have_one_state_each() {
        let pod = |v: serde_json::Value| pod_view(&serde_json::from_value(v).unwrap(), false).state;
        assert_eq!(
            pod(json!({"metadata": {"name": "a"}, "status": {"phase": "Pending"}})),
            "waiting"
        );
        assert_eq!(
            pod(
                json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n", "containers": []}, "status": {"phase": "Pending"}})
            ),
            "starting"
        );
        assert_eq!(
            pod(
                json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n", "containers": []},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
            ),
            "running"
        );
        assert_eq!(
            pod(
                json!({"metadata": {"name": "a", "deletionTimestamp": "2026-12-04T10:00:00Z"},
            "spec": {"nodeName": "n", "containers": []}, "status": {"phase": "Running"}})
            ),
            "terminating"
        );
        assert_eq!(
            pod(
                json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n", "containers": []}, "status": {"phase": "Succeeded"}})
            ),
            "done"
        );
        let ds: Pod = serde_json::from_value(json!({"metadata": {"name": "d", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "x", "uid": "u"}]}}))
        .unwrap();
        assert!(pod_view(&ds, false).daemon);
        let placeholder: Pod = serde_json::from_value(json!({"metadata": {"name": "sih-reserve-1", "labels": {
            "app.kubernetes.io/component": "capacity-reservation", "app.kubernetes.io/managed-by": "spot-interrupt-handler"}}}))
        .unwrap();
        assert!(pod_view(&placeholder, false).placeholder);
        assert!(!pod_view(&ds, false).placeholder);
    }

    #[test]
    fn only_our_events_and_the_pods_they_evicted() {
        let e: Event = serde_json::from_value(json!({"metadata": {"name": "e1", "uid": "u1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-1"},
            "reason": "PodEvicted", "type": "Normal", "message": "evicted with a 10s grace period",
            "reportingComponent": "spot-interrupt-handler", "eventTime": "2026-12-04T10:00:01.000000Z"}))
        .unwrap();
        let v = event_view(&e).unwrap();
        assert_eq!(v.object, "Pod/default/web-1");
        assert_eq!(evicted_pod(&v), Some("default/web-1"));
        let theirs: Event = serde_json::from_value(json!({"metadata": {"name": "e2"},
            "involvedObject": {"kind": "Pod", "name": "x"}, "reason": "Scheduled", "source": {"component": "default-scheduler"}}))
        .unwrap();
        assert!(event_view(&theirs).is_none());
        // The legacy field alone is anyone's to set.
        let posing: Event = serde_json::from_value(json!({"metadata": {"name": "e3"},
            "involvedObject": {"kind": "Node", "name": "n"}, "reason": "SpotInterruption",
            "source": {"component": "spot-interrupt-handler"}}))
        .unwrap();
        assert!(event_view(&posing).is_none());
    }

    #[test]
    fn a_huge_event_is_cut_to_what_we_ever_write() {
        let big = "é".repeat(300_000);
        let e: Event =
            serde_json::from_value(json!({"metadata": {"name": &big[..1000], "uid": big},
            "involvedObject": {"kind": "Node", "name": big}, "reason": big, "type": "Normal",
            "message": big, "reportingComponent": "spot-interrupt-handler"}))
            .unwrap();
        let v = event_view(&e).unwrap();
        assert!(
            v.message.len() <= MESSAGE_MAX && v.message.ends_with('…'),
            "{}",
            v.message.len()
        );
        for f in [&v.uid, &v.reason, &v.object, &v.severity] {
            assert!(f.len() <= FIELD_MAX, "{}", f.len());
        }
        let bytes = serde_json::to_string(&v).unwrap().len();
        assert!(bytes < 3 * 1024, "{bytes} bytes for one Event");
    }
}
