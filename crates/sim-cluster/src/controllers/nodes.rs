//! Node lifecycle: a node that has registered (exists) reports Ready with capacity and node
//! info, as a healthy kubelet would. A terminated instance (`POST /_sim/nodes/NAME/terminate`)
//! stops reporting: its node turns NotReady (Ready `Unknown`, as the node lifecycle controller
//! marks it), its kubelet stops (pods neither start nor finish stopping), and the node object
//! is deleted after a delay, as the cloud node controller does; pod garbage collection then
//! removes its pods, which are lost rather than stopped.

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

/// Deletes terminated nodes whose time has come; returns when the next one is due.
pub fn delete_terminated(tx: &mut Tx<'_>) -> Option<Instant> {
    let wall = jiff::Timestamp::now();
    let mut next: Option<Instant> = None;
    let due: Vec<(String, jiff::Timestamp)> = tx
        .view()
        .list(NODES, None)
        .filter_map(|n| {
            let at = n["metadata"]["annotations"][DELETE_AT]
                .as_str()
                .and_then(parse_time)?;
            Some((name_of(n), at))
        })
        .collect();
    for (name, at) in due {
        if at <= wall {
            tx.remove(NODES, "", &name);
        } else {
            let left = (at.as_millisecond() - wall.as_millisecond()).max(0) as u64;
            let when = Instant::now() + std::time::Duration::from_millis(left);
            next = Some(next.map_or(when, |n: Instant| n.min(when)));
        }
    }
    next
}

pub fn reconcile(tx: &mut Tx<'_>, config: &LoopConfig) -> Result<(), ApiError> {
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
        let pods = config.max_pods.to_string();
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
