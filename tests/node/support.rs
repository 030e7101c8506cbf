//! A cluster per test, a kube client for it, and a drain run that collects its progress.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use sih_node::{DrainConfig, DrainReport, Progress};
use sih_sim_cluster::{ClusterConfig, RunningCluster, workload};

/// The cluster of one test: the simulator, or (under `on_both_backends!`) a real control
/// plane with the same nodes.
pub enum TestCluster {
    Simulator(RunningCluster),
    Real(crate::real_cluster::ControlPlane),
}

impl TestCluster {
    /// An admin kubeconfig for processes the test starts.
    pub fn kubeconfig(&self) -> String {
        match self {
            Self::Simulator(c) => c.kubeconfig(),
            Self::Real(cp) => std::fs::read_to_string(&cp.kubeconfig).unwrap(),
        }
    }

    /// Unique among the clusters running now (for file names).
    pub fn tag(&self) -> String {
        match self {
            Self::Simulator(c) => c.addr().port().to_string(),
            Self::Real(cp) => cp.server.rsplit(':').next().unwrap_or_default().to_owned(),
        }
    }
}

/// `nodes` spot nodes (named as `node_name` says) and the objects of `yaml`. On a real
/// control plane kwok runs the nodes and `max_pods` is not enforced.
pub async fn cluster(nodes: usize, max_pods: usize, yaml: &str) -> (TestCluster, kube::Client) {
    if crate::real_cluster::backend() == crate::real_cluster::Backend::Real {
        let cp = crate::real_cluster::ControlPlane::start().await;
        let objects: Vec<_> = (0..nodes).map(|i| workload::node(i, true)).collect();
        cp.add_nodes(&objects).await;
        if !yaml.trim().is_empty() {
            cp.apply(yaml);
        }
        let client = cp.client.clone();
        return (TestCluster::Real(cp), client);
    }
    let config = ClusterConfig {
        nodes,
        spot_nodes: nodes,
        workload: Some(workload::parse(yaml).expect("workload parses")),
        max_pods,
        pod_start_delay: Duration::from_millis(50),
        ..ClusterConfig::default()
    };
    let cluster = sih_sim_cluster::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut kc = kube::Config::new(cluster.url().parse().unwrap());
    kc.default_retry = false;
    let client = kube::Client::try_from(kc).unwrap();
    (TestCluster::Simulator(cluster), client)
}

pub fn node_name(i: usize) -> String {
    workload::node(i, true)["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub async fn running(client: &kube::Client, selector: &str) -> Vec<Pod> {
    Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .collect()
}

pub async fn until_running(client: &kube::Client, selector: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while running(client, selector).await.len() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} pods of {selector} never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a budget's status (recomputed by the simulated controller, which lags as the
/// real one does) allows a disruption.
pub async fn until_budget_allows(client: &kube::Client, name: &str) {
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::default_namespaced(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let allowed = pdbs
            .get(name)
            .await
            .unwrap()
            .status
            .map_or(0, |s| s.disruptions_allowed);
        if allowed > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "budget {name} never allowed a disruption"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

/// Drains `node` with a deadline `within` from now; returns the report and every progress event.
pub async fn drain(
    client: &kube::Client,
    node: &str,
    within: Duration,
    cfg: DrainConfig,
) -> (DrainReport, Vec<Progress>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let deadline = tokio::time::Instant::now() + within;
    let target = sih_node::drain::Target {
        deadline,
        hard: Some(deadline),
    };
    let report = sih_node::drain::drain_until(client.clone(), node, target, cfg, tx)
        .await
        .expect("drain runs");
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (report, events)
}

/// A Deployment of `replicas` pods with a grace period and a budget.
pub fn deployment(name: &str, replicas: usize, grace: i64, pdb: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: {grace}
      containers: [{{name: c, image: nginx}}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: {name}, namespace: default}}
spec:
  {pdb}
  selector: {{matchLabels: {{app: {name}}}}}
"#
    )
}
