//! A cluster per test on a free loopback port, a kubeconfig file for kubectl, a kube client,
//! and a polling helper with a deadline.

use std::path::PathBuf;
use std::time::Duration;

use sih_sim_cluster::{ClusterConfig, RunningCluster, workload};

pub struct Sim {
    pub cluster: RunningCluster,
    pub kubeconfig: PathBuf,
    /// kubectl's discovery cache for this simulator alone: a port reused by a later
    /// simulator (plain or TLS) never sees a stale cache, and concurrent kubectls never race.
    cache_dir: PathBuf,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
        let _ = std::fs::remove_dir_all(&self.cache_dir);
    }
}

pub async fn cluster(nodes: usize, spot: usize, workload_yaml: Option<&str>) -> Sim {
    start(nodes, spot, workload_yaml, false, &[]).await
}

/// HTTPS, tokens and RBAC on; `accounts` are `(namespace, name)` created with a token each.
pub async fn secure_cluster(
    nodes: usize,
    spot: usize,
    workload_yaml: Option<&str>,
    accounts: &[(&str, &str)],
) -> Sim {
    start(nodes, spot, workload_yaml, true, accounts).await
}

async fn start(
    nodes: usize,
    spot: usize,
    workload_yaml: Option<&str>,
    tls: bool,
    accounts: &[(&str, &str)],
) -> Sim {
    let config = ClusterConfig {
        tls,
        service_accounts: accounts
            .iter()
            .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
            .collect(),
        nodes,
        spot_nodes: spot,
        workload: workload_yaml.map(|y| workload::parse(y).expect("test workload parses")),
        pod_start_delay: Duration::from_millis(100),
        ..ClusterConfig::default()
    };
    start_config(config).await
}

/// A cluster as `config` says (the test's pod start delay unless it sets one).
pub async fn start_config(config: ClusterConfig) -> Sim {
    let cluster = sih_sim_cluster::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("cluster starts");
    let kubeconfig = std::env::temp_dir().join(format!("sih-kubeconfig-{}", cluster.addr().port()));
    std::fs::write(&kubeconfig, cluster.kubeconfig()).unwrap();
    let cache_dir = std::env::temp_dir().join(format!(
        "sih-kubectl-cache-{}-{}-{}",
        std::process::id(),
        cluster.addr().port(),
        fastrand::u64(..)
    ));
    Sim {
        cluster,
        kubeconfig,
        cache_dir,
    }
}

/// The name of the n-th simulated node.
pub fn node_name(index: usize) -> String {
    workload::node(index, false)["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the real kubectl against the simulator.
pub async fn kubectl(sim: &Sim, args: &[&str]) -> Out {
    let out =
        tokio::process::Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
            .args(args)
            .env("KUBECONFIG", &sim.kubeconfig)
            .env("HOME", std::env::temp_dir())
            .env("KUBECACHEDIR", &sim.cache_dir)
            .output()
            .await
            .expect("kubectl is installed (./scripts/test installs it)");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub async fn kubectl_ok(sim: &Sim, args: &[&str]) -> String {
    let out = kubectl(sim, args).await;
    assert!(
        out.ok,
        "kubectl {args:?} failed:\n{}{}",
        out.stdout, out.stderr
    );
    out.stdout
}

pub async fn client(sim: &Sim) -> kube::Client {
    client_for(&sim.cluster)
}

pub fn client_for(cluster: &RunningCluster) -> kube::Client {
    match cluster.admin_token() {
        Some(token) => token_client(cluster, Some(token)),
        None => {
            let mut config = kube::Config::new(cluster.url().parse().unwrap());
            // kube 5 retries 429/503/504 by itself; these tests (and the drain) want to see them.
            config.default_retry = false;
            kube::Client::try_from(config).expect("kube client")
        }
    }
}

/// A kube-rs client for a `--tls` cluster that trusts its CA and sends `token` (or none).
pub fn token_client(cluster: &RunningCluster, token: Option<&str>) -> kube::Client {
    let mut config = kube::Config::new(cluster.url().parse().unwrap());
    config.default_retry = false;
    let ca = cluster.ca_pem().expect("a --tls cluster");
    let der = pem_to_der(ca);
    config.root_cert = Some(vec![der]);
    if let Some(t) = token {
        config.auth_info.token = Some(t.to_owned().into());
    }
    kube::Client::try_from(config).expect("kube client")
}

/// The one certificate of a PEM block, as DER.
fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("PEM")
}

/// Polls `check` until it is true, failing the test after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many `app=web` pods run.
pub async fn web_running(pods: &kube::Api<k8s_openapi::api::core::v1::Pod>) -> usize {
    pods.list(&kube::api::ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count()
}

/// A Deployment of `replicas` pods with a short grace period, and its PDB.
pub fn web(replicas: usize, pdb_spec: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{{name: web, image: nginx}}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: web, namespace: default}}
spec:
  {pdb_spec}
  selector: {{matchLabels: {{app: web}}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent, namespace: kube-system}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{{name: agent, image: busybox}}]
"#
    )
}
