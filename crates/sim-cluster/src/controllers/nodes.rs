//! Node lifecycle: a node that has registered (exists) reports Ready with capacity and node
//! info, as a healthy kubelet would.

use serde_json::json;

use super::{LoopConfig, name_of};
use crate::error::ApiError;
use crate::resources::NODES;
use crate::store::{Tx, now_rfc3339};

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
