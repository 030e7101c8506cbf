//! Benchmarks of the agent on Google Compute Engine and Azure (`--cloud gce|azure`) as a
//! process (the release binary), against `simulate gce`/`simulate azure` and the cluster
//! simulator in this process on loopback:
//! - notice visible → node fenced: GCE `maintenance-event` changes (the long poll; the same
//!   watch as `preempted`, and unlike a preemption it can be undone between samples), a few
//!   GCE preemptions (a fresh instance each), Azure scheduled events at `--poll-interval` 1 s
//!   and 100 ms;
//! - idle CPU and metadata requests per minute: the GCE long poll against Azure's polling.
//!
//! Run: `cargo bench --bench clouds` (`-- --quick` for fewer samples).

mod support;

use support::{cpu_time, product_bin, quantile, status_kib};

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use serde_json::{Value, json};
use sih_sim_clouds::{azure, gce};
use sih_sim_cluster::ClusterConfig;

const BIN: &str = env!("CARGO_BIN_EXE_spot-interrupt-handler");

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    support::runtime().block_on(run(quick));
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

struct World {
    client: kube::Client,
    kubeconfig: std::path::PathBuf,
    node: String,
    http: reqwest::Client,
}

impl World {
    fn agent(&self, cloud: &str, endpoint: &str, interval: &str) -> tokio::process::Child {
        tokio::process::Command::new(product_bin(BIN))
            .args([
                "--log-level",
                &std::env::var("SIH_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
                "imds",
                "--cloud",
                cloud,
                "--node-name",
                &self.node,
                "--imds-endpoint",
                endpoint,
                "--kubeconfig",
                self.kubeconfig.to_str().unwrap(),
                "--admin-listen",
                "127.0.0.1:0",
                "--poll-interval",
                interval,
                "--uptime-file",
                "/proc/uptime",
                "--kubernetes-events=false",
                "--spot-interruption-action",
                "cordon",
                "--scheduled-maintenance-action",
                "cordon",
            ])
            .env_remove("NODE_NAME")
            .kill_on_drop(true)
            .spawn()
            .expect("agent starts")
    }

    async fn post(&self, url: &str, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{url}/_sim/{path}"))
            .json(&body)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("control API")
            .json()
            .await
            .unwrap_or(Value::Null)
    }

    async fn requests(&self, url: &str) -> usize {
        let log: Vec<Value> = self
            .http
            .get(format!("{url}/_sim/requests"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        log.len()
    }

    /// The node's taint values (our notices' ids).
    async fn taint_values(&self) -> Vec<String> {
        Api::<Node>::all(self.client.clone())
            .get(&self.node)
            .await
            .expect("node")
            .spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| t.value)
            .collect()
    }

    /// From now until a taint whose value `matches` is on the node.
    async fn until_fenced(&self, matches: impl Fn(&str) -> bool) -> Duration {
        let visible = Instant::now();
        loop {
            if self.taint_values().await.iter().any(|v| matches(v)) {
                return visible.elapsed();
            }
            assert!(visible.elapsed() < Duration::from_secs(10), "never fenced");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn until_unfenced(&self, matches: impl Fn(&str) -> bool) {
        let t = Instant::now();
        while self.taint_values().await.iter().any(|v| matches(v)) {
            assert!(t.elapsed() < Duration::from_secs(10), "never unfenced");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn idle(w: &World, cloud: &str, url: &str, interval: &str, secs: u64) {
    let mut a = w.agent(cloud, url, interval);
    let pid = a.id().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu0, req0, t0) = (cpu_time(pid), w.requests(url).await, Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (cpu, reqs, wall) = (
        cpu_time(pid) - cpu0,
        w.requests(url).await - req0,
        t0.elapsed(),
    );
    println!(
        "{cloud} idle at --poll-interval {interval}: CPU {:.3} % of a core over {:.0} s; {:.1} metadata requests per minute; RSS {:.1} MiB",
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        wall.as_secs_f64(),
        reqs as f64 * 60.0 / wall.as_secs_f64(),
        status_kib(pid, "VmRSS:") as f64 / 1024.0,
    );
    let _ = a.kill().await;
}

async fn run(quick: bool) {
    let bin = product_bin(BIN);
    println!("agent binary: {bin}");
    let cluster = sih_sim_cluster::start(
        ClusterConfig {
            nodes: 3,
            spot_nodes: 1,
            ..ClusterConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("cluster");
    let (kubeconfig, client, node) = support::cluster_access(&cluster, "clouds").await;
    let w = World {
        client,
        kubeconfig: kubeconfig.clone(),
        node,
        http: reqwest::Client::new(),
    };
    let loopback = "127.0.0.1:0".parse().unwrap();

    // GCE: maintenance-event changes, each undone before the next.
    let g = gce::start(gce::Config::default(), loopback).await.unwrap();
    let mut agent = w.agent("gce", &g.url(), "1s");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut samples = Vec::new();
    for _ in 0..if quick { 10 } else { 60 } {
        // Distinct notices: the id carries the second the value changed.
        tokio::time::sleep(Duration::from_millis(1000 + fastrand::u64(..300))).await;
        w.post(
            &g.url(),
            "maintenance",
            json!({"value": "TERMINATE_ON_HOST_MAINTENANCE"}),
        )
        .await;
        let hit = |v: &str| v.contains("terminate-on-host-maintenance");
        samples.push(w.until_fenced(hit).await);
        w.post(&g.url(), "maintenance", json!({"value": "NONE"}))
            .await;
        w.until_unfenced(hit).await;
    }
    println!(
        "gce maintenance-event changed → fenced (long poll): {}",
        pct(samples)
    );
    let _ = agent.kill().await;
    drop(g);

    // GCE preemptions: a fresh instance (and agent) each.
    let mut samples = Vec::new();
    for i in 0..if quick { 3 } else { 10 } {
        let id = format!("77000000000000{i:04}");
        let g = gce::start(
            gce::Config {
                identity: gce::Identity {
                    id: id.clone(),
                    ..gce::Identity::default()
                },
                ..gce::Config::default()
            },
            loopback,
        )
        .await
        .unwrap();
        let mut agent = w.agent("gce", &g.url(), "1s");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        w.post(&g.url(), "preempt", json!({})).await;
        samples.push(w.until_fenced(|v| v.starts_with(&id)).await);
        let _ = agent.kill().await;
        // One spot taint per node: the next instance's needs the node as it was.
        let undone = tokio::process::Command::new(product_bin(BIN))
            .args(["--log-level", "warn", "undrain", &w.node, "--kubeconfig"])
            .arg(&w.kubeconfig)
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .expect("undrain runs");
        assert!(undone.success());
    }
    println!(
        "gce preempted → fenced (long poll, fresh instance each): {}",
        pct(samples)
    );

    // Azure: scheduled events at two poll intervals, each cancelled before the next.
    let a = azure::start(
        azure::Config {
            first_call_delay: Duration::from_millis(100),
            ..azure::Config::default()
        },
        loopback,
    )
    .await
    .unwrap();
    for (interval, n) in [
        ("1s", if quick { 10 } else { 40 }),
        ("100ms", if quick { 20 } else { 100 }),
    ] {
        let mut agent = w.agent("azure", &a.url(), interval);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut samples = Vec::new();
        for _ in 0..n {
            let period = if interval == "1s" { 1000 } else { 100 };
            tokio::time::sleep(Duration::from_millis(fastrand::u64(..period) + 50)).await;
            let id = w
                // Naming another VM too, it is never acknowledged (so it can be cancelled).
                .post(
                    &a.url(),
                    "events",
                    json!({"type": "Reboot", "not_before_seconds": 600,
                           "resources": [azure::Identity::default().name, "other-vm"]}),
                )
                .await["EventId"]
                .as_str()
                .unwrap()
                .to_owned();
            samples.push(w.until_fenced(|v| v == id).await);
            w.post(&a.url(), &format!("events/{id}/cancel"), json!({}))
                .await;
            w.until_unfenced(|v| v == id).await;
        }
        println!(
            "azure event listed → fenced at --poll-interval {interval}: {}",
            pct(samples)
        );
        let _ = agent.kill().await;
    }

    // Idle: the long poll against polling.
    let secs = if quick { 10 } else { 60 };
    let g = gce::start(gce::Config::default(), loopback).await.unwrap();
    idle(&w, "gce", &g.url(), "1s", secs).await;
    idle(&w, "azure", &a.url(), "1s", secs).await;
    let _ = std::fs::remove_file(&kubeconfig);
}
