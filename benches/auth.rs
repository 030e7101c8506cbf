//! The cost of `simulate cluster --tls` per request: list one node's pods and evict a pod,
//! over plain HTTP (no auth), over HTTPS as the admin (token lookup, no RBAC walk) and over
//! HTTPS as the agent's service account (token lookup + RBAC through the manifest's
//! ClusterRole). Keep-alive connections, as clients use them.
//!
//! Run: `cargo bench --bench auth` (`-- --quick` for fewer samples).

mod support;

use support::quantile;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use sih_sim_cluster::{ClusterConfig, RunningCluster, workload};

const MANIFEST: &str = include_str!("../deploy/manifests/spot-interrupt-handler.yaml");
const SA: (&str, &str) = ("kube-system", "spot-interrupt-handler");

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = support::runtime();
    rt.block_on(run(quick));
}

fn pct(mut v: Vec<Duration>) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "p50 {:.3} ms  p99 {:.3} ms",
        ms(quantile(&mut v, 0.5)),
        ms(quantile(&mut v, 0.99))
    )
}

async fn start(tls: bool, pods: usize) -> RunningCluster {
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: default}}\nspec:\n  replicas: {pods}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers: [{{name: c, image: nginx}}]\n"
    );
    sih_sim_cluster::start(
        ClusterConfig {
            nodes: 4,
            spot_nodes: 4,
            workload: Some(workload::parse(&yaml).unwrap()),
            pod_start_delay: Duration::from_millis(20),
            tls,
            service_accounts: vec![(SA.0.into(), SA.1.into())],
            ..ClusterConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("cluster")
}

fn client(cluster: &RunningCluster, token: Option<&str>) -> kube::Client {
    let kc = match token {
        Some(t) => cluster.kubeconfig_for(t),
        None => cluster.kubeconfig(),
    };
    let kc = kube::config::Kubeconfig::from_yaml(&kc).unwrap();
    let mut config = kube::Config::try_from(kc).unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

async fn apply_rbac(admin: &kube::Client) {
    for o in workload::parse(MANIFEST).unwrap() {
        match o["kind"].as_str() {
            Some("ClusterRole") => {
                Api::<ClusterRole>::all(admin.clone())
                    .create(&PostParams::default(), &serde_json::from_value(o).unwrap())
                    .await
                    .unwrap();
            }
            Some("ClusterRoleBinding") => {
                Api::<ClusterRoleBinding>::all(admin.clone())
                    .create(&PostParams::default(), &serde_json::from_value(o).unwrap())
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
}

async fn measure(
    label: &str,
    admin: &kube::Client,
    c: &kube::Client,
    lists: usize,
    evictions: usize,
) {
    let all: Api<Pod> = Api::all(admin.clone());
    loop {
        let running = all
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running >= evictions * 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pods: Api<Pod> = Api::all(c.clone());
    let node = workload::node(0, true)["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let mut list = Vec::with_capacity(lists);
    for _ in 0..lists {
        let t = Instant::now();
        pods.list(&params).await.expect("list");
        list.push(t.elapsed());
    }
    let names: Vec<String> = all
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .take(evictions)
        .collect();
    let ns: Api<Pod> = Api::default_namespaced(c.clone());
    let mut evict = Vec::with_capacity(evictions);
    for name in names {
        let body: Value = json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": name, "namespace": "default"}});
        let t = Instant::now();
        ns.create_subresource::<_, Value>("eviction", &name, &PostParams::default(), &body)
            .await
            .expect("eviction");
        evict.push(t.elapsed());
    }
    println!("{label:<42} list {}   eviction {}", pct(list), pct(evict));
}

async fn run(quick: bool) {
    let (lists, evictions, pods) = if quick {
        (100, 30, 80)
    } else {
        (1000, 200, 440)
    };
    let plain = start(false, pods).await;
    let admin = client(&plain, None);
    measure(
        "plain HTTP, no authentication",
        &admin,
        &admin,
        lists,
        evictions,
    )
    .await;
    drop(plain);

    let tls = start(true, pods).await;
    let admin = client(&tls, tls.admin_token());
    apply_rbac(&admin).await;
    measure("HTTPS, admin token", &admin, &admin, lists, evictions / 2).await;
    let agent = client(&tls, tls.token_of(SA.0, SA.1));
    measure(
        "HTTPS, service-account token + RBAC",
        &admin,
        &agent,
        lists,
        evictions / 2,
    )
    .await;
}
