//! The soak's slice on the real control plane: a fresh kube-apiserver, etcd, controllers and
//! kwok per scenario (`tests/support/real_cluster.rs`), the agent or the controllers holding
//! the manifests' own service-account tokens (the agent's bound to its DaemonSet pod on its
//! node, so the confinement policy applies) and talking through the fault-injecting proxy
//! (`tests/support/fault_proxy.rs`), which plays the scenario's cluster faults.
//!
//! What the checker reads, the simulator journals itself; here a watch of the real server's
//! pods and nodes (as the admin, not through the proxy) fills the same journal, so the same
//! checks judge both.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::watcher;
use serde_json::Value;
use sih_sim_cluster::faults::Faults;
use sih_sim_cluster::journal::Journal;

use crate::fault_proxy::FaultProxy;
use crate::real_cluster::{Bound, ControlPlane};

pub struct RealCluster {
    cp: ControlPlane,
    proxy: FaultProxy,
    journal: Arc<Journal>,
    /// Nodes whose instance has gone: a pod removed from one went with it.
    gone: Arc<Mutex<BTreeSet<String>>>,
    recorders: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        for r in &self.recorders {
            r.abort();
        }
    }
}

const AGENT_MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/manifests/spot-interrupt-handler.yaml"
);
const QUEUE_MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/manifests/spot-interrupt-handler-queue.yaml"
);

const RESERVE_MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/manifests/reserve-capacity.yaml"
);

/// The namespace of the manifests' service accounts (and the queue controllers' Leases).
pub const NAMESPACE: &str = "kube-system";

impl RealCluster {
    /// A control plane with `nodes` and `workload`, recording from before the workload.
    pub async fn start(nodes: &[Value], workload: &str) -> Result<Self, String> {
        let cp = ControlPlane::start().await;
        let journal = Arc::new(Journal::default());
        let gone: Arc<Mutex<BTreeSet<String>>> = Default::default();
        let recorders = vec![
            tokio::spawn(record_nodes(cp.client.clone(), journal.clone())),
            tokio::spawn(record_pods(
                cp.client.clone(),
                journal.clone(),
                gone.clone(),
            )),
        ];
        cp.add_nodes(nodes).await;
        cp.apply(workload);
        let proxy = FaultProxy::start(&cp.kubeconfig).await;
        Ok(Self {
            cp,
            proxy,
            journal,
            gone,
            recorders,
        })
    }

    /// The agent's kubeconfig (through the proxy): the DaemonSet manifest's token bound to its
    /// pod on `node` (IMDS), or the queue manifest's bound to one of its pods.
    pub async fn product_kubeconfig(
        &self,
        queue: bool,
        node: &str,
        dir: &Path,
    ) -> Result<PathBuf, String> {
        let (manifest, sa, bound) = if queue {
            (
                QUEUE_MANIFEST,
                "spot-interrupt-handler-queue",
                Bound::AnyPod,
            )
        } else {
            (AGENT_MANIFEST, "spot-interrupt-handler", Bound::PodOn(node))
        };
        // Capacity first's class and permission too: a scenario may reserve.
        self.cp
            .kubectl_must(&["apply", "-f", manifest, "-f", RESERVE_MANIFEST]);
        let token = self.cp.service_account_token(NAMESPACE, sa, bound).await;
        let file = dir.join("kubeconfig");
        std::fs::write(&file, self.proxy.kubeconfig(&token)).map_err(|e| e.to_string())?;
        Ok(file)
    }

    pub fn faults(&self) -> &Faults {
        &self.proxy.faults
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The requests that went through the proxy (the product's, all of them).
    pub fn requests(&self) -> Vec<sih_sim_cluster::journal::RequestRecord> {
        self.proxy.journal.requests()
    }

    /// The pods bound to `node`: `(name, uid)`.
    pub async fn pods_on(&self, node: &str) -> Vec<(String, String)> {
        let pods: Api<Pod> = Api::all(self.cp.client.clone());
        pods.list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .map(|p| {
                        (
                            p.metadata.name.unwrap_or_default(),
                            p.metadata.uid.unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every events.k8s.io Event, as JSON.
    pub async fn events(&self) -> Vec<Value> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::all(self.cp.client.clone());
        api.list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter_map(|e| serde_json::to_value(e).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Running pods in `default`.
    pub async fn running(&self) -> usize {
        let pods: Api<Pod> = Api::namespaced(self.cp.client.clone(), "default");
        pods.list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// The instance behind `node` is gone: whatever was still on it goes with it (removed at
    /// once, as the pod garbage collector would once the node object is gone), then the node.
    pub async fn terminate(&self, node: &str) -> Result<(), String> {
        self.gone.lock().unwrap().insert(node.to_owned());
        let pods: Api<Pod> = Api::all(self.cp.client.clone());
        let on = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .map_err(|e| format!("list the node's pods: {e}"))?;
        for p in on.items {
            let (Some(ns), Some(name)) = (p.metadata.namespace, p.metadata.name) else {
                continue;
            };
            let _ = Api::<Pod>::namespaced(self.cp.client.clone(), &ns)
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
        }
        let _ = Api::<Node>::all(self.cp.client.clone())
            .delete(node, &DeleteParams::default())
            .await;
        Ok(())
    }
}

async fn record_nodes(client: kube::Client, journal: Arc<Journal>) {
    let api: Api<Node> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default()).boxed();
    while let Some(e) = events.next().await {
        match e {
            Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                if let Ok(v) = serde_json::to_value(&n) {
                    journal.node_change(&v, false);
                }
            }
            Ok(watcher::Event::Delete(n)) => {
                if let Ok(v) = serde_json::to_value(&n) {
                    journal.node_change(&v, true);
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn record_pods(
    client: kube::Client,
    journal: Arc<Journal>,
    gone: Arc<Mutex<BTreeSet<String>>>,
) {
    let api: Api<Pod> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default()).boxed();
    // The last version of each pod seen: what a change is a change from.
    let mut last: HashMap<String, Value> = HashMap::new();
    let uid = |v: &Value| v["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    while let Some(e) = events.next().await {
        match e {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                let Ok(v) = serde_json::to_value(&p) else {
                    continue;
                };
                let old = last.insert(uid(&v), v.clone());
                // What happens to the pods of a node whose instance went is the cleanup's
                // (the harness's, the DaemonSet controller's), not the product's.
                let node = v["spec"]["nodeName"].as_str().unwrap_or_default();
                if !gone.lock().unwrap().contains(node) {
                    journal.pod_change(old.as_ref(), Some(&v), |_| true);
                }
            }
            Ok(watcher::Event::Delete(p)) => {
                let Ok(v) = serde_json::to_value(&p) else {
                    continue;
                };
                let old = last.remove(&uid(&v)).unwrap_or(v);
                let gone = gone.lock().unwrap().clone();
                let node = old["spec"]["nodeName"].as_str().unwrap_or_default();
                // Removed without a graceful deletion seen first, from a node still there: a
                // deletion with no grace (the real server removes such a pod at once).
                if old["metadata"]["deletionTimestamp"].is_null() && !gone.contains(node) {
                    let mut marked = old.clone();
                    marked["metadata"]["deletionTimestamp"] =
                        serde_json::json!(jiff::Timestamp::now().to_string());
                    marked["metadata"]["deletionGracePeriodSeconds"] = serde_json::json!(0);
                    journal.pod_change(Some(&old), Some(&marked), |_| true);
                }
                journal.pod_change(Some(&old), None, |n| !gone.contains(n));
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
