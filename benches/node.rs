//! Benchmarks of the node actions against `simulate cluster` on loopback:
//! - fence latency (one optimistic write), p50/p99;
//! - fence → all 110 evictions of a node issued;
//! - 50 concurrent fences of 50 nodes, in total, none lost.
//!
//! Run: `cargo bench --bench node`.

mod support;

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use serde_json::json;
use sih_core::{Carried, Notice, PlanRules, Source};
use sih_node::{DrainConfig, FenceOutcome, NodeError, Progress};
use sih_sim_cluster::{ClusterConfig, workload};

fn main() {
    let rt = support::runtime();
    rt.block_on(run());
}

/// Fences `node` for a spot notice of instance `id`, as the responder's writer does.
async fn fence(nodes: &Api<Node>, node: &str, id: &str) -> Result<FenceOutcome, NodeError> {
    let now = Timestamp::now();
    let spot = Carried::new(Notice::spot_interruption(id, node, now, now, Source::Agent));
    sih_node::fence(
        nodes,
        node,
        Source::Agent,
        &[spot],
        &PlanRules::default(),
        sih_node::API_TIMEOUT,
    )
    .await
}

fn pct(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    format!(
        "p50 {:?}  p99 {:?}  max {:?}",
        at(0.5),
        at(0.99),
        v[v.len() - 1]
    )
}

async fn client_for(url: &str) -> kube::Client {
    let mut config = kube::Config::new(url.parse().expect("url"));
    config.default_retry = false;
    kube::Client::try_from(config).expect("client")
}

async fn run() {
    // 52 nodes; 110 web pods pinned to the first one.
    let web = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 110, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "nodeSelector": {"kubernetes.io/hostname": workload::node(0, true)["metadata"]["name"]},
                "terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "nginx"}]}}}});
    let cluster = sih_sim_cluster::start(
        ClusterConfig {
            nodes: 52,
            spot_nodes: 52,
            workload: Some(vec![web]),
            max_pods: 110,
            pod_start_delay: Duration::from_millis(50),
            ..ClusterConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("cluster");
    let client = client_for(&cluster.url()).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let name = |i: usize| {
        workload::node(i, true)["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    loop {
        let ready = cluster.store().read(|i| {
            i.get(sih_sim_cluster::resources::DEPLOYMENTS, "default", "web")
                .and_then(|d| d["status"]["readyReplicas"].as_u64())
        });
        if ready == Some(110) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Fence latency: fence and unfence node 51 over and over (each fence is one GET and one PATCH).
    let n = name(51);
    let mut samples = Vec::new();
    for i in 0..300 {
        let t = Instant::now();
        fence(&nodes, &n, &format!("bench-{i}"))
            .await
            .expect("fence");
        samples.push(t.elapsed());
        sih_node::unfence(
            &nodes,
            &n,
            None,
            &PlanRules::default(),
            sih_node::API_TIMEOUT,
        )
        .await
        .expect("unfence");
    }
    println!(
        "fence latency (GET + merge PATCH), 300 fences: {}",
        pct(samples)
    );

    // 50 concurrent fences of 50 nodes.
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 1..=50 {
        let (nodes, n) = (nodes.clone(), name(i));
        set.spawn(async move { fence(&nodes, &n, "mass").await.is_ok() });
    }
    let mut ok = 0;
    while let Some(r) = set.join_next().await {
        ok += usize::from(r.unwrap_or(false));
    }
    let took = t.elapsed();
    let mut fenced = 0;
    for i in 1..=50 {
        let node = nodes.get(&name(i)).await.expect("node");
        let tainted = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| {
                t.iter()
                    .any(|t| t.key == "spot-interrupt-handler/spot-interruption")
            });
        fenced += usize::from(tainted && node.spec.and_then(|s| s.unschedulable) == Some(true));
    }
    println!(
        "50 concurrent fences of 50 nodes: {took:?} in total, {ok} succeeded, {fenced} nodes fenced"
    );

    // Fence → all 110 evictions issued.
    let n0 = name(0);
    let t = Instant::now();
    fence(&nodes, &n0, "drain").await.expect("fence");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let (drain_client, drain_node) = (client.clone(), n0.clone());
    let drain = tokio::spawn(async move {
        sih_node::drain::drain_until(
            drain_client,
            &drain_node,
            sih_node::drain::Target {
                deadline,
                hard: Some(deadline),
            },
            DrainConfig {
                max_concurrent: 50,
                ..DrainConfig::default()
            },
            tx,
        )
        .await
    });
    let mut evicted = 0;
    let mut all_issued = None;
    while let Some(p) = rx.recv().await {
        if matches!(p, Progress::Evicted { .. }) {
            evicted += 1;
            if evicted == 110 {
                all_issued = Some(t.elapsed());
                break;
            }
        }
    }
    println!(
        "fence → all {evicted} evictions issued: {:?}",
        all_issued.unwrap_or_default()
    );
    drain.abort();
}
