//! Benchmark of `simulate cluster` at 1000 nodes and 30 000 pods, on loopback:
//! - time for the simulated control plane to bring 30 000 pods to Running;
//! - listing one node's pods by field selector (p50/p99);
//! - one eviction round trip, PDB checked (p50/p99);
//! - the process's resident memory at that size.
//!
//! Run: `cargo bench --bench cluster` (add `-- --quick` for 100 nodes and 3000 pods).

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sih_sim_cluster::resources::{DEPLOYMENTS, PODS};
use sih_sim_cluster::{ClusterConfig, workload};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (nodes, pods) = if quick { (100, 3_000) } else { (1_000, 30_000) };
    let rt = support::runtime();
    rt.block_on(run(nodes, pods));
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    format!(
        "p50 {:?}  p99 {:?}  max {:?}",
        at(0.5),
        at(0.99),
        samples[samples.len() - 1]
    )
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

async fn run(nodes: usize, pods: usize) {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fleet", "namespace": "default"},
        "spec": {"replicas": pods, "selector": {"matchLabels": {"app": "fleet"}},
            "template": {"metadata": {"labels": {"app": "fleet"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app", "image": "nginx"}]}}},
    });
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "fleet", "namespace": "default"},
        "spec": {"maxUnavailable": "10%", "selector": {"matchLabels": {"app": "fleet"}}}});
    let rss_before = rss_mib();
    let started = Instant::now();
    let cluster = sih_sim_cluster::start(
        ClusterConfig {
            nodes,
            spot_nodes: nodes / 2,
            workload: Some(vec![deployment, pdb]),
            max_pods: 110,
            pod_start_delay: Duration::from_millis(100),
            ..ClusterConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("cluster starts");
    let store = cluster.store().clone();
    loop {
        let ready = store.read(|i| {
            i.get(DEPLOYMENTS, "default", "fleet")
                .and_then(|d| d["status"]["readyReplicas"].as_u64())
        });
        if ready == Some(pods as u64) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "control plane did not converge"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{nodes} nodes, {pods} pods Running and Ready after {:?} (start-up included)",
        started.elapsed()
    );
    println!(
        "resident memory: {:.0} MiB (before start {:.0} MiB)",
        rss_mib(),
        rss_before
    );

    let http = reqwest::Client::new();
    let base = cluster.url();
    let names: Vec<String> = (0..nodes)
        .map(|i| {
            workload::node(i, false)["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let mut list = Vec::new();
    for i in 0..300 {
        let node = &names[(i * 7) % nodes];
        let t = Instant::now();
        let resp = http
            .get(format!(
                "{base}/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"
            ))
            .send()
            .await
            .expect("list");
        let body: Value = resp.json().await.expect("list body");
        list.push(t.elapsed());
        assert!(!body["items"].as_array().expect("items").is_empty());
    }
    println!(
        "list one node's pods by field selector: {}",
        percentiles(list)
    );

    let victims: Vec<String> = store.read(|i| {
        i.list(PODS, Some("default"))
            .step_by(pods / 200)
            .take(200)
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    });
    let mut evictions = Vec::new();
    let mut refused = 0;
    for name in &victims {
        let body = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}, "deleteOptions": {"gracePeriodSeconds": 1}});
        let t = Instant::now();
        let resp = http
            .post(format!(
                "{base}/api/v1/namespaces/default/pods/{name}/eviction"
            ))
            .json(&body)
            .send()
            .await
            .expect("eviction");
        let status = resp.status().as_u16();
        let _ = resp.bytes().await;
        evictions.push(t.elapsed());
        if status == 429 {
            refused += 1;
        }
    }
    println!(
        "eviction round trip ({} evictions, {refused} refused by the budget): {}",
        victims.len(),
        percentiles(evictions)
    );
    println!("resident memory after the evictions: {:.0} MiB", rss_mib());
}
