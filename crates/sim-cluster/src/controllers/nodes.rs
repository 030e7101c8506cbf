//! Node lifecycle: a node that has registered (exists) reports Ready with capacity and node
//! info, as a healthy kubelet would. A terminated instance (`POST /_sim/nodes/NAME/terminate`)
//! stops reporting: its node turns NotReady (Ready `Unknown`, as the node lifecycle controller
//! marks it), its kubelet stops (pods neither start nor finish stopping), and the node object
//! is deleted after a delay, as the cloud node controller does; pod garbage collection then
//! removes its pods, which are lost rather than stopped. The end can be scheduled (`"at"`: a
//! spot notice's deadline), and comes then whatever anyone did about it.

use serde_json::json;
use tokio::time::Instant;

use super::{LoopConfig, name_of};
use crate::error::ApiError;
use crate::resources::NODES;
use crate::store::{Tx, now_rfc3339, parse_time};

/// When a terminated node's object is deleted (RFC 3339).
pub const DELETE_AT: &str = "sim.spot-interrupt-handler/delete-at";
/// Set on a node whose instance is gone: its kubelet no longer acts.
pub const TERMINATED_AT: &str = "sim.spot-interrupt-handler/terminated-at";
/// When a node's instance is to end (RFC 3339), and how long its object lasts after that.
pub const TERMINATE_AT: &str = "sim.spot-interrupt-handler/terminate-at";
pub const DELETE_AFTER: &str = "sim.spot-interrupt-handler/delete-after-seconds";

/// The instance behind `name` ends at `at`, its node deleted `delete_after` later.
pub fn schedule_termination(
    tx: &mut Tx<'_>,
    name: &str,
    at: jiff::Timestamp,
    delete_after: std::time::Duration,
) -> Result<(), ApiError> {
    let node = tx
        .get(NODES, "", name)
        .ok_or_else(|| ApiError::not_found("nodes", name))?;
    let mut new = (*node).clone();
    new["metadata"]["annotations"][TERMINATE_AT] =
        json!(at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
    new["metadata"]["annotations"][DELETE_AFTER] = json!(delete_after.as_secs_f64().to_string());
    tx.replace(NODES, "", name, new)?;
    Ok(())
}

pub fn is_terminated(node: &serde_json::Value) -> bool {
    node["metadata"]["annotations"][TERMINATED_AT].is_string()
}

/// The instance behind `name` is gone.
pub fn terminate(tx: &mut Tx<'_>, name: &str, delete_at: jiff::Timestamp) -> Result<(), ApiError> {
    let node = tx
        .get(NODES, "", name)
        .ok_or_else(|| ApiError::not_found("nodes", name))?;
    let mut new = (*node).clone();
    let now = now_rfc3339();
    new["metadata"]["annotations"][TERMINATED_AT] = json!(now);
    new["metadata"]["annotations"][DELETE_AT] =
        json!(delete_at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
    if let Some(conditions) = new["status"]["conditions"].as_array_mut() {
        for c in conditions {
            c["status"] = json!("Unknown");
            c["reason"] = json!("NodeStatusUnknown");
            c["message"] = json!("Kubelet stopped posting node status.");
            c["lastTransitionTime"] = json!(now);
        }
    }
    tx.replace(NODES, "", name, new)?;
    Ok(())
}

/// Ends the instances whose scheduled time has come and deletes terminated nodes whose time
/// has come; returns when the next one is due.
pub fn run_timers(tx: &mut Tx<'_>) -> Result<Option<Instant>, ApiError> {
    let wall = jiff::Timestamp::now();
    let mut next: Option<Instant> = None;
    let mut at = |t: jiff::Timestamp| {
        let left = (t.as_millisecond() - wall.as_millisecond()).max(0) as u64;
        let when = Instant::now() + std::time::Duration::from_millis(left);
        next = Some(next.map_or(when, |n: Instant| n.min(when)));
    };
    let time = |n: &serde_json::Value, key: &str| {
        n["metadata"]["annotations"][key]
            .as_str()
            .and_then(parse_time)
    };
    let timers: Vec<(
        String,
        Option<jiff::Timestamp>,
        Option<jiff::Timestamp>,
        f64,
    )> = tx
        .view()
        .list(NODES, None)
        .filter_map(|n| {
            let end = time(n, TERMINATE_AT).filter(|_| !is_terminated(n));
            let delete = time(n, DELETE_AT);
            let after = n["metadata"]["annotations"][DELETE_AFTER]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(5.0);
            (end.is_some() || delete.is_some()).then(|| (name_of(n), end, delete, after))
        })
        .collect();
    for (name, end, delete, after) in timers {
        if let Some(end) = end {
            if end <= wall {
                let delete_at = wall + std::time::Duration::from_secs_f64(after);
                terminate(tx, &name, delete_at)?;
                tracing::info!(node = %name, "instance ended at its scheduled time");
                at(delete_at);
            } else {
                at(end);
            }
            continue;
        }
        if let Some(delete) = delete {
            if delete <= wall {
                tx.remove(NODES, "", &name);
            } else {
                at(delete);
            }
        }
    }
    Ok(next)
}

/// The taint the node lifecycle controller keeps on a cordoned node (`TaintNodesByCondition`):
/// a real API server shows it 10-30 ms after a cordon, and takes it away after an uncordon.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// Adds or removes [`UNSCHEDULABLE_TAINT`] to follow each node's `spec.unschedulable`.
fn taint_by_condition(tx: &mut Tx<'_>) -> Result<(), ApiError> {
    let has = |n: &serde_json::Value| {
        n["spec"]["taints"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["key"] == UNSCHEDULABLE_TAINT))
    };
    let stale: Vec<_> = tx
        .view()
        .list(NODES, None)
        .filter(|n| (n["spec"]["unschedulable"] == true) != has(n))
        .cloned()
        .collect();
    for node in stale {
        let mut new = (*node).clone();
        let mut taints = new["spec"]["taints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if node["spec"]["unschedulable"] == true {
            taints.push(json!({"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule", "timeAdded": now_rfc3339()}));
        } else {
            taints.retain(|t| t["key"] != UNSCHEDULABLE_TAINT);
        }
        if taints.is_empty() {
            if let Some(spec) = new["spec"].as_object_mut() {
                spec.remove("taints");
            }
        } else {
            new["spec"]["taints"] = json!(taints);
        }
        tx.replace(NODES, "", &name_of(&node), new)?;
    }
    Ok(())
}

pub fn reconcile(tx: &mut Tx<'_>, config: &LoopConfig) -> Result<(), ApiError> {
    taint_by_condition(tx)?;
    let fresh: Vec<_> = tx
        .view()
        .list(NODES, None)
        .filter(|n| n["status"]["nodeInfo"].is_null())
        .cloned()
        .collect();
    for node in fresh {
        let now = now_rfc3339();
        let name = name_of(&node);
        let mut new = (*node).clone();
        let condition = |t: &str, status: &str, reason: &str| json!({"type": t, "status": status, "reason": reason, "message": "", "lastHeartbeatTime": now, "lastTransitionTime": now});
        let ip = node["metadata"]["annotations"]["sim.spot-interrupt-handler/internal-ip"]
            .as_str()
            .unwrap_or("10.0.0.1")
            .to_owned();
        // A node may come with its own room (an autoscaler's group of another size).
        let pods = super::scheduler::pod_room(&node, config.max_pods).to_string();
        new["status"] = json!({
            "capacity": {"cpu": "2", "memory": "8Gi", "pods": pods, "ephemeral-storage": "20Gi"},
            "allocatable": {"cpu": "1930m", "memory": "7Gi", "pods": pods, "ephemeral-storage": "18Gi"},
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
                condition("Ready", "True", "KubeletReady"),
            ],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": "v1.32.0", "kubeProxyVersion": "v1.32.0", "osImage": "Amazon Linux 2023 (simulated)",
                "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.7.0", "operatingSystem": "linux",
                "architecture": "amd64", "machineID": "", "systemUUID": "", "bootID": ""},
            "phase": "Running",
        });
        tx.replace(NODES, "", &name, new)?;
    }
    Ok(())
}
