//! Processes as a user starts them: `simulate cluster`, `simulate imds` and the agent, each its
//! own child process of this test; plus a webhook receiver, an HTTP proxy and a TCP link that
//! can be cut, all on loopback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

pub const BIN: &str = env!("CARGO_BIN_EXE_spot-interrupt-handler");
/// The rehearsal binary: `simulate ...` and `demo`.
pub const SIM_BIN: &str = env!("CARGO_BIN_EXE_spot-interrupt-handler-sim");

/// Set in an agent's environment by `agent_unready`: do not wait for it to watch.
const NO_WAIT: &str = "SIH_TEST_NO_WAIT";
/// Set in an agent's environment: start it without `--node-name` (it finds its node).
pub const FIND_NODE: &str = "SIH_TEST_FIND_NODE";

/// A Deployment with quick-to-stop pods and a budget of one at a time, and a DaemonSet.
pub const WORKLOAD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 6
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: web, image: nginx}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: default}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: web}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node-agent, namespace: kube-system}
spec:
  selector: {matchLabels: {app: node-agent}}
  template:
    metadata: {labels: {app: node-agent}}
    spec:
      containers: [{name: a, image: busybox}]
"#;

/// The product binary for `args`: the agent's commands (`imds`, `drain`, NTH's environment)
/// from the binary `SIH_AGENT_BIN` names when set, run through `SIH_AGENT_RUNNER` when that is
/// set too; queue mode always from the full product cargo built. CI runs this suite against
/// the agent image's own build (static, no queue mode: scripts/test), and the arm64 one under
/// qemu-user against the simulators, which stay native (scripts/build-static:
/// `SIH_AGENT_RUNNER=qemu-aarch64-static SIH_AGENT_BIN=target/aarch64-.../agent/spot-interrupt-handler`).
fn product_command(args: &[&str]) -> Command {
    let agent = std::env::var("SIH_AGENT_BIN")
        .ok()
        .filter(|b| !b.is_empty() && !args.contains(&"queue"));
    let Some(bin) = agent else {
        return Command::new(BIN);
    };
    match std::env::var("SIH_AGENT_RUNNER") {
        Ok(runner) if !runner.is_empty() => {
            let mut cmd = Command::new(runner);
            cmd.arg(bin);
            cmd
        }
        _ => Command::new(bin),
    }
}

/// A child process whose stderr lines are kept for assertions; killed when dropped.
pub struct Proc {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> (Self, tokio::process::ChildStdout) {
        // The simulators are in the rehearsal binary, everything else in the product's.
        let mut cmd = match args.first() {
            Some(&"simulate" | &"demo") => Command::new(SIM_BIN),
            _ => product_command(args),
        };
        cmd.args(args)
            .env_remove("NODE_NAME")
            .env_remove("NAMESPACE")
            .env_remove("KUBECONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the binary starts");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let keep = lines.clone();
        tokio::spawn(async move {
            let mut r = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = r.next_line().await {
                keep.lock().unwrap().push(l);
            }
        });
        (Self { child, lines }, stdout)
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// JSON log lines (`--log-format json`).
    pub fn json_lines(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for a JSON log line whose message starts with `message`.
    pub async fn until_logged(&self, message: &str, within: Duration) -> Value {
        let end = Instant::now() + within;
        loop {
            if let Some(l) = self.json_lines().into_iter().find(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
            }) {
                return l;
            }
            assert!(
                Instant::now() < end,
                "never logged {message:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("still running").to_string();
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(ok.success());
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("stops within 15s of SIGTERM")
            .unwrap()
    }
}

/// Starts a simulator and reads the address from its first stdout line.
async fn simulator(args: &[&str]) -> (Proc, String) {
    let (p, stdout) = Proc::spawn(args, &[]);
    let mut first = String::new();
    let mut reader = BufReader::new(stdout);
    tokio::time::timeout(Duration::from_secs(20), reader.read_line(&mut first))
        .await
        .expect("simulator prints its address")
        .unwrap();
    // Keep reading what else it prints, so its stdout never becomes a closed pipe.
    let mut rest = reader;
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut rest, &mut sink).await;
    });
    let url = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}; log:\n{}", p.log()))
        .to_owned();
    (p, url)
}

/// The metadata simulator of `cloud` (`simulate imds` for aws) with `args`, and an uptime
/// file that says the instance booted a day ago (no reboot since any fence in these tests,
/// unless a test says so); removed with the scene.
async fn metadata_simulator(cloud: &str, args: &[&str], tag: &str) -> (Proc, String, PathBuf) {
    let sim = if cloud == "aws" { "imds" } else { cloud };
    let mut all = vec!["simulate", sim, "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let (imds, url) = simulator(&all).await;
    let uptime_file = std::env::temp_dir().join(format!("sih-agent-e2e-{tag}.uptime"));
    std::fs::write(&uptime_file, "86400.00 1000.00\n").unwrap();
    (imds, url, uptime_file)
}

/// The name of the scene's spot node (labelled as EKS labels spot capacity).
async fn spot_node(client: &kube::Client) -> String {
    Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels("lifecycle=Ec2Spot"))
        .await
        .unwrap()
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The cluster a scene runs: the simulator's process, or a real control plane.
enum ClusterHandle {
    /// Held for its drop (which kills the process).
    Simulator(#[allow(dead_code)] Proc),
    Real(crate::real_cluster::ControlPlane),
}

/// The two simulators (or the metadata simulator and a real control plane) and what the agent
/// needs to reach them.
pub struct Scene {
    /// Held to keep the cluster running (stopped on drop).
    cluster: ClusterHandle,
    _imds: Proc,
    pub cluster_url: String,
    pub imds_url: String,
    /// What the agent uses: the admin's, or with TLS the agent's service account's.
    pub kubeconfig: PathBuf,
    /// The admin's (the test's own client and kubectl).
    pub admin_kubeconfig: PathBuf,
    in_cluster_dir: Option<PathBuf>,
    pub uptime_file: PathBuf,
    pub client: kube::Client,
    pub node: String,
    /// The agent's `--cloud` (the metadata simulator is `simulate <cloud>`, `imds` for aws).
    pub cloud: &'static str,
    http: reqwest::Client,
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.admin_kubeconfig);
        let _ = std::fs::remove_file(&self.uptime_file);
        let _ = std::fs::remove_dir_all(self.admin_kubeconfig.with_extension("kubectl-cache"));
        if let Some(dir) = &self.in_cluster_dir {
            let _ = std::fs::remove_dir_all(dir);
            let _ = std::fs::remove_dir_all(dir.with_extension("kubectl-cache"));
        }
    }
}

pub struct Agent {
    pub proc: Proc,
    pub admin: String,
}

impl Scene {
    pub async fn start(imds_args: &[&str]) -> Self {
        Self::start_with(imds_args, false).await
    }

    /// With `tls`, the cluster speaks HTTPS with tokens and RBAC, the IMDS manifest is applied
    /// with kubectl, and the agent holds its ServiceAccount's token: a permission the manifest
    /// lacks fails the test.
    pub async fn start_with(imds_args: &[&str], tls: bool) -> Self {
        let rbac = tls.then_some((
            "spot-interrupt-handler.yaml",
            "kube-system/spot-interrupt-handler",
        ));
        Self::start_secure(imds_args, rbac).await
    }

    /// `rbac`: a manifest in deploy/manifests and the `NAMESPACE/NAME` of its ServiceAccount,
    /// whose token the process under test then holds (over HTTPS, RBAC on).
    pub async fn start_secure(imds_args: &[&str], rbac: Option<(&str, &str)>) -> Self {
        Self::start_full(imds_args, rbac, None).await
    }

    /// `nodes`: YAML Node documents to run instead of the simulator's three (one spot).
    pub async fn start_full(
        imds_args: &[&str],
        rbac: Option<(&str, &str)>,
        nodes: Option<&str>,
    ) -> Self {
        Self::start_cloud("aws", imds_args, rbac, nodes).await
    }

    /// With `cloud`'s metadata simulator (`aws`, `gce`, `azure`) and `sim_args` for it.
    pub async fn start_cloud(
        cloud: &'static str,
        imds_args: &[&str],
        rbac: Option<(&str, &str)>,
        nodes: Option<&str>,
    ) -> Self {
        if crate::real_cluster::backend() == crate::real_cluster::Backend::Real {
            return Self::start_real(cloud, imds_args, rbac, nodes).await;
        }
        let tls = rbac.is_some();
        let dir = std::env::temp_dir();
        let tag = format!("{}-{}", std::process::id(), free_port());
        let admin_kubeconfig = dir.join(format!("sih-agent-e2e-{tag}.kubeconfig"));
        let workload = dir.join(format!("sih-agent-e2e-{tag}.yaml"));
        let in_cluster_dir = tls.then(|| dir.join(format!("sih-agent-e2e-{tag}.sa")));
        let (count, spot) = if nodes.is_some() {
            ("0", "0")
        } else {
            ("3", "1")
        };
        std::fs::write(
            &workload,
            format!("{WORKLOAD}\n---\n{}", nodes.unwrap_or_default()),
        )
        .unwrap();
        let mut cluster_args = vec![
            "simulate",
            "cluster",
            "--listen",
            "127.0.0.1:0",
            "--nodes",
            count,
            "--spot-nodes",
            spot,
            "--pod-start-delay",
            "100ms",
            "--workload",
            workload.to_str().unwrap(),
            "--kubeconfig-out",
            admin_kubeconfig.to_str().unwrap(),
        ];
        if let Some(d) = &in_cluster_dir {
            cluster_args.extend([
                "--tls",
                "--service-account",
                rbac.map(|(_, sa)| sa).unwrap_or_default(),
                "--in-cluster-dir",
                d.to_str().unwrap(),
            ]);
        }
        let (cluster, cluster_url) = simulator(&cluster_args).await;
        let kubeconfig = match &in_cluster_dir {
            Some(d) => {
                let manifest = format!(
                    "{}/deploy/manifests/{}",
                    env!("CARGO_MANIFEST_DIR"),
                    rbac.map(|(m, _)| m).unwrap_or_default()
                );
                let out = std::process::Command::new(
                    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()),
                )
                .args(["apply", "-f", &manifest])
                .env("KUBECONFIG", &admin_kubeconfig)
                .env("HOME", std::env::temp_dir())
                .env("KUBECACHEDIR", d.with_extension("kubectl-cache"))
                .output()
                .expect("kubectl is installed (./scripts/test installs it)");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                d.join("kubeconfig")
            }
            None => admin_kubeconfig.clone(),
        };
        let (imds, imds_url, uptime_file) = metadata_simulator(cloud, imds_args, &tag).await;
        let client = crate::real_cluster::client_for(&admin_kubeconfig).await;
        let node = spot_node(&client).await;
        let scene = Self {
            cluster: ClusterHandle::Simulator(cluster),
            _imds: imds,
            cluster_url,
            imds_url,
            kubeconfig,
            admin_kubeconfig,
            in_cluster_dir,
            uptime_file,
            client,
            node,
            cloud,
            http: reqwest::Client::new(),
        };
        scene.until_web_running(6).await;
        let _ = std::fs::remove_file(&workload);
        scene
    }

    /// The same scene on a real control plane: three nodes (the first spot) as the simulator
    /// makes them, or `nodes`, run by kwok; the workload applied with kubectl; with `rbac`, the
    /// manifest applied and the agent given a bound token of its ServiceAccount, bound to a pod
    /// on the spot node as a DaemonSet pod's is.
    async fn start_real(
        cloud: &'static str,
        imds_args: &[&str],
        rbac: Option<(&str, &str)>,
        nodes: Option<&str>,
    ) -> Self {
        let cp = crate::real_cluster::ControlPlane::start().await;
        let node_objects: Vec<Value> = match nodes {
            Some(yaml) => sih_sim_cluster::workload::parse(yaml).expect("the nodes parse"),
            None => (0..3)
                .map(|i| sih_sim_cluster::workload::node(i, i < 1))
                .collect(),
        };
        cp.add_nodes(&node_objects).await;
        cp.apply(WORKLOAD);
        let dir = std::env::temp_dir();
        let tag = format!("{}-{}", std::process::id(), free_port());
        let in_cluster_dir = rbac.map(|_| dir.join(format!("sih-agent-e2e-{tag}.sa")));
        let client = cp.client.clone();
        let node = spot_node(&client).await;
        let kubeconfig = match (rbac, &in_cluster_dir) {
            (Some((manifest, sa)), Some(d)) => {
                cp.kubectl_must(&[
                    "apply",
                    "-f",
                    &format!("{}/deploy/manifests/{manifest}", env!("CARGO_MANIFEST_DIR")),
                ]);
                let (ns, name) = sa.split_once('/').expect("NAMESPACE/NAME");
                // A DaemonSet's agent holds its node's pod's token; a Deployment's, its own.
                let text = std::fs::read_to_string(format!(
                    "{}/deploy/manifests/{manifest}",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .unwrap();
                let bound = if text.contains("kind: DaemonSet") {
                    crate::real_cluster::Bound::PodOn(&node)
                } else if text.contains("kind: Deployment") {
                    crate::real_cluster::Bound::AnyPod
                } else {
                    // A role for people or tools outside the cluster (the view's).
                    crate::real_cluster::Bound::Nothing
                };
                cp.service_account_kubeconfig(ns, name, bound, d).await
            }
            _ => cp.kubeconfig.clone(),
        };
        // The test's own copy of the admin's kubeconfig, removed with the scene.
        let admin_kubeconfig = dir.join(format!("sih-agent-e2e-{tag}.kubeconfig"));
        std::fs::copy(&cp.kubeconfig, &admin_kubeconfig).unwrap();
        let (imds, imds_url, uptime_file) = metadata_simulator(cloud, imds_args, &tag).await;
        let scene = Self {
            cluster_url: cp.server.clone(),
            cluster: ClusterHandle::Real(cp),
            _imds: imds,
            imds_url,
            kubeconfig,
            admin_kubeconfig,
            in_cluster_dir,
            uptime_file,
            client,
            node,
            cloud,
            http: reqwest::Client::new(),
        };
        scene.until_web_running(6).await;
        scene
    }

    /// The real control plane this scene runs on, if it does.
    pub fn real(&self) -> Option<&crate::real_cluster::ControlPlane> {
        match &self.cluster {
            ClusterHandle::Real(cp) => Some(cp),
            ClusterHandle::Simulator(_) => None,
        }
    }

    /// The agent as a DaemonSet pod would run it, with `extra` flags; JSON logs.
    pub async fn agent(&self, extra: &[&str]) -> Agent {
        self.agent_with(extra, &[]).await
    }

    pub async fn agent_with(&self, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        self.agent_via(&self.kubeconfig, extra, env).await
    }

    /// The agent with another kubeconfig (e.g. through a `Link`).
    pub async fn agent_via(
        &self,
        kubeconfig: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let mut args = vec![
            "--log-format",
            "json",
            "--log-level",
            "info,spot_interrupt_handler=debug,sih_report=debug",
            "imds",
            "--cloud",
            self.cloud,
            "--node-name",
            &self.node,
            "--imds-endpoint",
            &self.imds_url,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--admin-listen",
            "127.0.0.1:0",
            "--poll-interval",
            "200ms",
            "--uptime-file",
            self.uptime_file.to_str().unwrap(),
            "--deadline-margin",
            "1s",
        ];
        if env.iter().any(|(k, _)| *k == FIND_NODE) {
            let at = args.iter().position(|a| *a == "--node-name").unwrap();
            args.drain(at..at + 2);
        }
        // A test's own poll interval or metadata endpoint replaces the default one.
        for own in ["--poll-interval", "--imds-endpoint"] {
            if extra.contains(&own) {
                let at = args.iter().position(|a| *a == own).unwrap();
                args.drain(at..at + 2);
            }
        }
        args.extend_from_slice(extra);
        let (proc, _stdout) = Proc::spawn(&args, env);
        let admin = proc
            .until_logged(
                "admin listener: /metrics /healthz /readyz",
                Duration::from_secs(20),
            )
            .await["addr"]
            .as_str()
            .unwrap()
            .to_owned();
        let agent = Agent {
            proc,
            admin: format!("http://{admin}"),
        };
        if !env.iter().any(|(k, _)| *k == NO_WAIT) {
            agent
                .proc
                .until_logged("watching for interruption notices", Duration::from_secs(20))
                .await;
        }
        agent
    }

    /// The agent, returned as soon as its admin listener is up (its metadata service may be
    /// down: it then never says it is watching).
    pub async fn agent_unready(&self, extra: &[&str]) -> Agent {
        self.agent_with(extra, &[(NO_WAIT, "1")]).await
    }

    /// POSTs to a simulator's control API (`/_sim/...` of `base`).
    async fn post_control(&self, base: &str, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{base}/_sim/{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "POST /_sim/{path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    /// POSTs to the metadata simulator's control API.
    pub async fn control(&self, path: &str, body: Value) -> Value {
        self.post_control(&self.imds_url, path, body).await
    }

    /// POSTs to the cluster simulator's control API (faults, node termination).
    pub async fn cluster_control(&self, path: &str, body: Value) -> Value {
        assert!(self.real().is_none(), "/_sim/{path}: the simulator's alone");
        self.post_control(&self.cluster_url, path, body).await
    }

    /// GETs the metadata simulator's control API (`/_sim/requests`, Azure's `/_sim/events`).
    pub async fn metadata_journal(&self, what: &str) -> Value {
        self.get_control(&self.imds_url, what).await
    }

    async fn get_control(&self, base: &str, what: &str) -> Value {
        self.http
            .get(format!("{base}/_sim/{what}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// What the cluster simulator recorded: `requests`, `pod-events` or `node-changes`.
    pub async fn cluster_journal(&self, what: &str) -> Vec<Value> {
        assert!(self.real().is_none(), "/_sim/{what}: the simulator's alone");
        let got = if self.in_cluster_dir.is_some() {
            // Over HTTPS with RBAC on: asked as the admin.
            let req = http::Request::get(format!("/_sim/{what}"))
                .body(Vec::new())
                .unwrap();
            serde_json::from_str(&self.client.request_text(req).await.unwrap()).unwrap()
        } else {
            self.get_control(&self.cluster_url, what).await
        };
        match got {
            Value::Array(items) => items,
            other => panic!("/_sim/{what} is not a list: {other}"),
        }
    }

    /// Creates objects written as YAML documents (Deployments, PDBs, Services) with the admin's client.
    pub async fn apply(&self, yaml: &str) {
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::policy::v1::PodDisruptionBudget;
        for doc in yaml.split("\n---\n") {
            let v: Value = serde_saphyr::from_str(doc).unwrap();
            let ns = v["metadata"]["namespace"].as_str().unwrap_or("default");
            let pp = kube::api::PostParams::default();
            match v["kind"].as_str() {
                Some("Deployment") => {
                    Api::<Deployment>::namespaced(self.client.clone(), ns)
                        .create(&pp, &serde_json::from_value(v).unwrap())
                        .await
                        .unwrap();
                }
                Some("PodDisruptionBudget") => {
                    Api::<PodDisruptionBudget>::namespaced(self.client.clone(), ns)
                        .create(&pp, &serde_json::from_value(v).unwrap())
                        .await
                        .unwrap();
                }
                Some("Service") => {
                    Api::<k8s_openapi::api::core::v1::Service>::namespaced(self.client.clone(), ns)
                        .create(&pp, &serde_json::from_value(v).unwrap())
                        .await
                        .unwrap();
                }
                Some("PriorityClass") => {
                    Api::<k8s_openapi::api::scheduling::v1::PriorityClass>::all(
                        self.client.clone(),
                    )
                    .create(&pp, &serde_json::from_value(v).unwrap())
                    .await
                    .unwrap();
                }
                other => panic!("apply: {other:?} is not handled here"),
            }
        }
    }

    pub async fn spot(&self, lead_seconds: u64) {
        self.control(
            "spot-interruption",
            serde_json::json!({"action": "terminate", "lead_seconds": lead_seconds}),
        )
        .await;
    }

    pub async fn node(&self) -> Node {
        Api::<Node>::all(self.client.clone())
            .get(&self.node)
            .await
            .unwrap()
    }

    pub async fn web_pods(&self) -> Vec<Pod> {
        Api::<Pod>::default_namespaced(self.client.clone())
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items
    }

    /// Running, not terminating, Ready web pods.
    pub async fn web_running(&self) -> Vec<Pod> {
        self.web_pods()
            .await
            .into_iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .collect()
    }

    pub async fn until_web_running(&self, n: usize) {
        until("web pods running", Duration::from_secs(20), || async {
            self.web_running().await.len() == n
        })
        .await;
    }

    /// Pods matching `selector` on the spot node, terminating or not.
    pub async fn pods_on_node(&self, selector: &str) -> usize {
        Api::<Pod>::default_namespaced(self.client.clone())
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&self.node))
            .count()
    }

    pub async fn web_on_node(&self) -> usize {
        self.web_pods()
            .await
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&self.node))
            .count()
    }

    /// Event reasons on our node or on pods, in the order listed.
    pub async fn event_reasons(&self) -> Vec<String> {
        self.events()
            .await
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }

    /// Our Events (a real cluster's controllers and scheduler write Events of their own).
    pub async fn events(&self) -> Vec<Event> {
        Api::<Event>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reporting_component.as_deref() == Some("spot-interrupt-handler"))
            .collect()
    }

    /// `kubectl describe KIND NAME` (in `default` for namespaced kinds) as the admin.
    pub fn describe(&self, kind: &str, name: &str) -> String {
        let out = std::process::Command::new(
            std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()),
        )
        .args(["describe", kind, name, "-n", "default"])
        .env("KUBECONFIG", &self.admin_kubeconfig)
        .env("HOME", std::env::temp_dir())
        .env(
            "KUBECACHEDIR",
            self.admin_kubeconfig.with_extension("kubectl-cache"),
        )
        .output()
        .expect("kubectl is installed (./scripts/test installs it)");
        assert!(
            out.status.success(),
            "kubectl describe {kind} {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub async fn drained(&self) {
        let end = Instant::now() + Duration::from_secs(30);
        while !(self.web_on_node().await == 0 && self.web_running().await.len() == 6) {
            if Instant::now() >= end {
                // Say where each web pod is, so a failure shows what the drain left.
                let pods: Vec<String> = self
                    .web_pods()
                    .await
                    .iter()
                    .map(|p| {
                        format!(
                            "{} on {:?} phase {:?} deleting {:?}",
                            p.metadata.name.as_deref().unwrap_or_default(),
                            p.spec.as_ref().and_then(|s| s.node_name.clone()),
                            p.status.as_ref().and_then(|s| s.phase.clone()),
                            p.metadata
                                .deletion_timestamp
                                .as_ref()
                                .map(|t| t.0.to_string()),
                        )
                    })
                    .collect();
                let node = self.node().await;
                let budget =
                    Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::default_namespaced(
                        self.client.clone(),
                    )
                    .get_opt("web")
                    .await
                    .ok()
                    .flatten()
                    .and_then(|b| b.status);
                panic!(
                    "timed out waiting for: the spot node has no web pods and 6 run elsewhere; web pods: {pods:#?}; the node: cordoned {}, taints {:?}; the budget: {budget:?}",
                    cordoned(&node),
                    taints(&node)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn taints(n: &Node) -> Vec<(String, String, String)> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.value.unwrap_or_default(), t.effect))
        .collect()
}

pub fn cordoned(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

pub fn label(n: &Node, key: &str) -> Option<String> {
    n.metadata.labels.as_ref()?.get(key).cloned()
}

pub fn annotation(n: &Node, key: &str) -> Option<String> {
    n.metadata.annotations.as_ref()?.get(key).cloned()
}

/// Polls `check` every 100 ms until it holds or `within` passes (then fails the test).
pub async fn until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Agent {
    pub fn child_alive(&self) -> bool {
        // A process that died but is not reaped yet is a zombie (`Z`) in /proc.
        self.proc.child.id().is_some_and(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_owned()))
                .is_some_and(|r| !r.starts_with('Z'))
        })
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("{}{path}", self.admin)).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The value of one metric line (name with labels as printed), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

/// One request a webhook endpoint received: headers (lower-case names) and body.
pub type Received = (BTreeMap<String, String>, String);

/// A webhook endpoint that records each request's headers and body.
#[derive(Clone, Default)]
pub struct Hook {
    pub got: Arc<Mutex<Vec<Received>>>,
}

impl Hook {
    pub async fn start() -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        (Self::serve(listener), url)
    }

    pub fn serve(listener: tokio::net::TcpListener) -> Self {
        let hook = Self::default();
        let app = Router::new()
            .route("/hook", axum::routing::post(record))
            .with_state(hook.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        hook
    }

    pub fn bodies(&self) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }

    pub async fn until_count(&self, n: usize, within: Duration) -> Vec<String> {
        until("webhook messages", within, || async {
            self.bodies().len() >= n
        })
        .await;
        self.bodies()
    }
}

async fn record(State(h): State<Hook>, headers: HeaderMap, body: Bytes) -> &'static str {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    h.got
        .lock()
        .unwrap()
        .push((headers, String::from_utf8_lossy(&body).into_owned()));
    "ok"
}

/// A forward HTTP proxy: requests arrive in absolute form and are passed on; each proxied URL
/// is recorded.
#[derive(Clone, Default)]
pub struct Proxy {
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    pub async fn start() -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let proxy = Self::default();
        let app = Router::new().fallback(forward).with_state(proxy.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (proxy, url)
    }
}

async fn forward(State(p): State<Proxy>, uri: Uri, headers: HeaderMap, body: Bytes) -> String {
    p.seen.lock().unwrap().push(uri.to_string());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client.post(uri.to_string()).body(body);
    for (k, v) in &headers {
        if !matches!(k.as_str(), "host" | "content-length") && !k.as_str().starts_with("proxy-") {
            req = req.header(k.as_str(), v.to_str().unwrap_or_default());
        }
    }
    req.send()
        .await
        .map(|_| "proxied".to_owned())
        .unwrap_or_else(|e| e.to_string())
}

/// A TCP link to `upstream` that can be cut: while down, new connections are refused (closed)
/// and open ones are dropped, as when the API server is unreachable.
#[derive(Clone)]
pub struct Link {
    down: Arc<AtomicBool>,
    epoch: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Link {
    pub async fn start(upstream: SocketAddr) -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let link = Self {
            down: Arc::new(AtomicBool::new(false)),
            epoch: Arc::new(tx),
        };
        let l = link.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if l.down.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let mut cut = l.epoch.subscribe();
                tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        (link, addr)
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            self.epoch.send_modify(|e| *e += 1);
        }
    }
}
