//! The simulated control plane: node lifecycle, scheduler, kubelet, ReplicaSet, Deployment and
//! DaemonSet controllers, garbage collection and PodDisruptionBudget status.
//!
//! One loop runs every controller after any change (batched briefly) and at the next moment a
//! timer is due (a pod finishing its start, a grace period ending), never on a fixed tick.
//! Each controller is one write transaction that reads the current objects and writes only
//! what differs, so the loop settles when the world is as the specs ask.

pub mod daemonset;
pub mod deployment;
pub mod gc;
pub mod kubelet;
pub mod nodes;
pub mod pdb;
pub mod replicaset;
pub mod scheduler;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::store::Store;

#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Pods allowed per node (the kubelet's `maxPods`).
    pub max_pods: usize,
    /// How long a bound pod takes to become Running and Ready.
    pub pod_start_delay: Duration,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            max_pods: 110,
            pod_start_delay: Duration::from_millis(300),
        }
    }
}

/// Changes arriving together are handled in one pass.
const BATCH: Duration = Duration::from_millis(5);
/// An upper bound on sleeping, so a missed wake-up costs at most this much.
const IDLE: Duration = Duration::from_secs(1);

pub async fn run(store: Arc<Store>, config: LoopConfig, shutdown: impl Future<Output = ()>) {
    let mut kubelet = kubelet::Kubelet::default();
    tokio::pin!(shutdown);
    loop {
        let next = reconcile_all(&store, &config, &mut kubelet);
        let wake_at = next
            .unwrap_or_else(|| Instant::now() + IDLE)
            .min(Instant::now() + IDLE);
        tokio::select! {
            _ = store.wake.notified() => tokio::time::sleep(BATCH).await,
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = &mut shutdown => return,
        }
    }
}

/// One controller's pass: a write transaction.
type Pass<'a> = dyn Fn(&mut crate::store::Tx<'_>) -> Result<(), crate::error::ApiError> + 'a;

/// One pass of every controller; returns when a timer is next due.
pub fn reconcile_all(
    store: &Store,
    config: &LoopConfig,
    kubelet: &mut kubelet::Kubelet,
) -> Option<Instant> {
    let passes: [(&str, &Pass<'_>); 6] = [
        ("nodes", &|tx| nodes::reconcile(tx, config)),
        ("gc", &gc::reconcile),
        ("deployments", &deployment::reconcile),
        ("replicasets", &replicaset::reconcile),
        ("daemonsets", &daemonset::reconcile),
        ("scheduler", &|tx| scheduler::reconcile(tx, config)),
    ];
    for (name, pass) in passes {
        if let Err(e) = store.write(pass) {
            tracing::debug!(controller = name, error = %e, "controller pass failed; retrying on the next pass");
        }
    }
    let next = store
        .write(|tx| Ok(kubelet.reconcile(tx, config)))
        .ok()
        .flatten();
    if let Err(e) = store.write(pdb::reconcile) {
        tracing::debug!(error = %e, "PDB status pass failed");
    }
    next
}

/// An owner reference naming `owner` as controller.
pub fn controller_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
    })
}

/// The uid of an object's controlling owner.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
}

/// A pod that counts for its controller: not being deleted and not finished.
pub fn is_active(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
}

pub fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

pub fn ns_of(obj: &Value) -> String {
    obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
