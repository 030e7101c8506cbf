//! Benchmarks of the IMDS agent as a process (the release binary), against both simulators
//! in this process on loopback:
//! - notice visible → node fenced, at `--poll-interval` 1 s and 100 ms (p50/p99/max);
//! - the agent's resident memory idle and its peak during a 110-pod drain;
//! - CPU per poll (idle polling for a while, from /proc/PID/stat);
//! - start-up to the first metadata poll.
//!
//! Run: `cargo bench --bench agent` (`-- --quick` for fewer samples).

mod support;

use support::{cpu_time, product_bin, quantile, status_kib, user_system};

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use sih_sim_cluster::{ClusterConfig, workload};

const BIN: &str = env!("CARGO_BIN_EXE_spot-interrupt-handler");

static PARTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

fn wanted(part: &str) -> bool {
    PARTS
        .get()
        .is_none_or(|p| p.is_empty() || p.iter().any(|x| x == part))
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `-- drain` (or `start`, `idle`, `latency`) runs only that part.
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| ["start", "idle", "latency", "drain"].contains(&a.as_str()))
        .collect();
    PARTS.set(parts).expect("set once");
    let rt = support::runtime();
    rt.block_on(run(quick));
}

fn pct(mut v: Vec<Duration>) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "n {}  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        v.len(),
        ms(quantile(&mut v, 0.5)),
        ms(quantile(&mut v, 0.99)),
        ms(quantile(&mut v, 1.0))
    )
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"))
}

/// Anonymous (private, allocated) resident memory, in KiB: RSS without the binary's and
/// libraries' file-backed pages, which are shared and reclaimable page cache.
fn anon_kib(pid: u32) -> u64 {
    status_kib(pid, "RssAnon:")
}

struct World {
    imds_url: String,
    client: kube::Client,
    kubeconfig: std::path::PathBuf,
    node: String,
    http: reqwest::Client,
}

impl World {
    async fn post(&self, path: &str, body: Value) {
        self.http
            .post(format!("{}/_sim/{path}", self.imds_url))
            .json(&body)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("control API");
    }

    fn agent(&self, interval: &str, extra: &[&str]) -> tokio::process::Child {
        tokio::process::Command::new(product_bin(BIN))
            .args([
                "--log-level",
                "warn",
                "imds",
                "--node-name",
                &self.node,
                "--imds-endpoint",
                &self.imds_url,
                "--kubeconfig",
                self.kubeconfig.to_str().unwrap(),
                "--admin-listen",
                "127.0.0.1:0",
                "--poll-interval",
                interval,
                "--uptime-file",
                "/proc/uptime",
                "--kubernetes-events=false",
            ])
            .args(extra)
            .env_remove("NODE_NAME")
            .kill_on_drop(true)
            .spawn()
            .expect("agent starts")
    }

    /// The node as before any notice (our taints, cordon, label and record removed).
    async fn unfence(&self) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        sih_node::unfence(
            &nodes,
            &self.node,
            None,
            &sih_core::PlanRules::default(),
            sih_node::API_TIMEOUT,
        )
        .await
        .expect("unfence");
    }

    /// Forgets the metadata requests seen so far (`until_first_poll` looks for the next).
    async fn clear_requests(&self) {
        self.http
            .delete(format!("{}/_sim/requests", self.imds_url))
            .send()
            .await
            .expect("control API");
    }

    async fn node(&self) -> Node {
        Api::<Node>::all(self.client.clone())
            .get(&self.node)
            .await
            .expect("node")
    }

    async fn fenced_for(&self, id_part: &str) -> bool {
        self.node()
            .await
            .spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .iter()
            .any(|t| t.value.as_deref().is_some_and(|v| v.contains(id_part)))
    }

    async fn until_first_poll(&self, since: Instant) -> Duration {
        loop {
            let log: Vec<Value> = self
                .http
                .get(format!("{}/_sim/requests", self.imds_url))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if log.iter().any(|e| {
                e["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("spot/instance-action"))
            }) {
                return since.elapsed();
            }
            assert!(
                since.elapsed() < Duration::from_secs(30),
                "agent never polled"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Spot notices at random moments relative to the agent's poll ticks; time from the
/// notice becoming visible to the node carrying its taint. A spot notice's id is the
/// instance's (one interruption per instance), so each sample is a fresh start: the node
/// unfenced, the metadata service reset, an agent started and polling (a second
/// of its ticks passed), then the notice at a random moment of its interval.
async fn fence_latency(w: &World, interval: &str, samples: usize) -> Vec<Duration> {
    let period = sih_interval(interval);
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        w.post("reset", json!({})).await;
        w.unfence().await;
        w.clear_requests().await;
        let mut agent = w.agent(interval, &["--spot-interruption-action", "cordon"]);
        w.until_first_poll(Instant::now()).await;
        tokio::time::sleep(Duration::from_secs(1) + period.mul_f64(fastrand::f64())).await;
        w.post(
            "spot-interruption",
            json!({"action": "terminate", "lead_seconds": 120}),
        )
        .await;
        let visible = Instant::now();
        while !w.fenced_for("spot-interruption").await {
            assert!(visible.elapsed() < Duration::from_secs(10), "never fenced");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        out.push(visible.elapsed());
        let _ = agent.kill().await;
    }
    out
}

fn sih_interval(s: &str) -> Duration {
    s.strip_suffix("ms")
        .map(|v| Duration::from_millis(v.parse().unwrap()))
        .or_else(|| {
            s.strip_suffix('s')
                .map(|v| Duration::from_secs(v.parse().unwrap()))
        })
        .expect("interval like 1s or 100ms")
}

async fn run(quick: bool) {
    let bin = product_bin(BIN);
    let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    println!("agent binary: {bin} ({size} bytes)");
    // 4 nodes; 110 pods pinned to the spot node (replacements stay Pending: the pin keeps them
    // off the cordoned node, which is what the drain measurement needs).
    let yaml = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: big, namespace: default}
spec:
  replicas: 110
  selector: {matchLabels: {app: big}}
  template:
    metadata: {labels: {app: big}}
    spec:
      terminationGracePeriodSeconds: 1
      nodeSelector: {lifecycle: Ec2Spot}
      containers: [{name: c, image: nginx}]
"#;
    let cluster = sih_sim_cluster::start(
        ClusterConfig {
            nodes: 4,
            spot_nodes: 1,
            workload: Some(workload::parse(yaml).expect("workload")),
            max_pods: 120,
            pod_start_delay: Duration::from_millis(50),
            ..ClusterConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("cluster");
    let imds = sih_sim_imds::start(
        sih_sim_imds::SimConfig::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("imds");
    let (kubeconfig, client, node) = support::cluster_access(&cluster, "agent").await;
    let w = World {
        imds_url: imds.url(),
        client: client.clone(),
        kubeconfig: kubeconfig.clone(),
        node,
        http: reqwest::Client::new(),
    };
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    loop {
        let running = pods
            .list(&ListParams::default().labels("app=big"))
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running == 110 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Start-up to first poll.
    if wanted("start") {
        let mut starts = Vec::new();
        for _ in 0..if quick { 3 } else { 10 } {
            w.clear_requests().await;
            let t = Instant::now();
            let mut a = w.agent("1s", &["--spot-interruption-action", "notify"]);
            starts.push(w.until_first_poll(t).await);
            let _ = a.kill().await;
        }
        println!("start-up to first metadata poll: {}", pct(starts));
    }

    // Idle memory and CPU per poll.
    let idle_secs = if quick { 10 } else { 60 };
    for interval in ["1s", "100ms"].into_iter().filter(|_| wanted("idle")) {
        let mut a = w.agent(interval, &["--spot-interruption-action", "notify"]);
        let pid = a.id().unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let cpu0 = cpu_time(pid);
        let (user0, system0) = user_system(pid);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(idle_secs)).await;
        let cpu = cpu_time(pid) - cpu0;
        let (user1, system1) = user_system(pid);
        let (user, system) = (user1 - user0, system1 - system0);
        let ticked = (user + system).as_secs_f64().max(1e-9);
        let wall = t0.elapsed();
        let polls = wall.as_secs_f64() / sih_interval(interval).as_secs_f64();
        let (rss, _) = memory_kib(pid);
        println!(
            "idle at {interval}: RSS {:.1} MiB (anonymous {:.1} MiB); CPU {:.3} % of a core over {:.0} s ({:.0} µs per poll; user {:.0} %, kernel {:.0} % of it)",
            rss as f64 / 1024.0,
            anon_kib(pid) as f64 / 1024.0,
            cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
            wall.as_secs_f64(),
            cpu.as_secs_f64() / polls * 1e6,
            user.as_secs_f64() / ticked * 100.0,
            system.as_secs_f64() / ticked * 100.0,
        );
        let _ = a.kill().await;
    }

    // Notice visible → fenced.
    for (interval, n) in [
        ("1s", if quick { 10 } else { 30 }),
        ("100ms", if quick { 20 } else { 100 }),
    ]
    .into_iter()
    .filter(|_| wanted("latency"))
    {
        let lat = fence_latency(&w, interval, n).await;
        println!(
            "notice visible → fenced at --poll-interval {interval}: {}",
            pct(lat)
        );
        w.unfence().await;
    }

    // Peak memory during a 110-pod drain.
    if !wanted("drain") {
        let _ = std::fs::remove_file(&kubeconfig);
        return;
    }
    w.post("reset", json!({})).await;
    let mut a = w.agent("1s", &[]);
    let pid = a.id().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_rss, _) = memory_kib(pid);
    let idle_anon = anon_kib(pid);
    let mut peak_anon = 0;
    let started = Instant::now();
    w.post(
        "spot-interruption",
        json!({"action": "terminate", "lead_seconds": 120}),
    )
    .await;
    let mut peak_rss = 0;
    loop {
        let (rss, _) = memory_kib(pid);
        peak_rss = peak_rss.max(rss);
        peak_anon = peak_anon.max(anon_kib(pid));
        let left = pods
            .list(
                &ListParams::default()
                    .labels("app=big")
                    .fields(&format!("spec.nodeName={}", w.node)),
            )
            .await
            .unwrap()
            .items
            .len();
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "drain never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    // The drain ends when every evicted pod is gone; keep sampling until then.
    for _ in 0..100 {
        peak_anon = peak_anon.max(anon_kib(pid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, hwm) = memory_kib(pid);
    println!(
        "110-pod drain: notice → node empty {:.2} s; RSS before {:.1} MiB, peak sampled {:.1} MiB, VmHWM {:.1} MiB; anonymous before {:.1} MiB, peak sampled {:.1} MiB",
        took.as_secs_f64(),
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        idle_anon as f64 / 1024.0,
        peak_anon as f64 / 1024.0
    );
    assert!(w.fenced_for("-spot-").await);
    let _ = a.kill().await;
    let _ = std::fs::remove_file(&kubeconfig);
}
