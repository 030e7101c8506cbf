//! The live view at 1000 nodes and 30 000 pods, in headless Chromium (chromedriver must be
//! installed: `apt-get install chromium chromium-driver`):
//! - what it costs the API server: requests to start (lists, pages of 500) and per second
//!   once running, and the watches it holds;
//! - the page: time to draw the whole cluster, then while 10 spot nodes are fenced and their
//!   330 pods evicted (and replaced elsewhere), the time from the server sending a change to
//!   the page having drawn it (update latency) and the longest frame spent drawing.
//!
//! Run: `cargo bench --bench view` (add `-- --quick` for 100 nodes and 3000 pods).

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

fn view_requests(cluster: &sih_sim_cluster::RunningCluster) -> Vec<(String, String)> {
    cluster
        .journal()
        .requests()
        .into_iter()
        .filter(|r| matches!(r.verb.as_str(), "list" | "watch"))
        .filter(|r| matches!(r.resource.as_deref(), Some("nodes" | "pods" | "events")))
        .map(|r| (r.verb, r.resource.unwrap_or_default()))
        .collect()
}

async fn stats(browser: &fantoccini::Client) -> Value {
    browser
        .execute("return window.viewStats;", vec![])
        .await
        .expect("the page answers")
}

async fn run(nodes: usize, pods: usize) {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fleet", "namespace": "default"},
        "spec": {"replicas": pods, "selector": {"matchLabels": {"app": "fleet"}},
            "template": {"metadata": {"labels": {"app": "fleet"}},
                "spec": {"terminationGracePeriodSeconds": 2, "containers": [{"name": "app", "image": "nginx"}]}}},
    });
    let cluster = sih_sim_cluster::start(
        ClusterConfig {
            nodes,
            spot_nodes: nodes / 10,
            workload: Some(vec![deployment]),
            max_pods: 110,
            pod_start_delay: Duration::from_millis(100),
            ..ClusterConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("cluster starts");
    let store = cluster.store().clone();
    while store.read(|i| {
        i.get(DEPLOYMENTS, "default", "fleet")
            .and_then(|d| d["status"]["readyReplicas"].as_u64())
    }) != Some(pods as u64)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{nodes} nodes, {pods} pods Ready");

    let kubeconfig = std::env::temp_dir().join(format!("sih-view-bench-{}", std::process::id()));
    std::fs::write(&kubeconfig, cluster.kubeconfig()).expect("kubeconfig");
    let client = sih_node::client(Some(&kubeconfig)).await.expect("client");
    cluster.journal().clear();
    let t = Instant::now();
    let view = sih_view::Running::start(client, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("view");
    while view.state.counts() != (nodes, pods) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start_requests = view_requests(&cluster);
    println!(
        "view server: whole cluster known after {:?}; {} requests to start ({} pod lists)",
        t.elapsed(),
        start_requests.len(),
        start_requests
            .iter()
            .filter(|(v, r)| v == "list" && r == "pods")
            .count()
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let _driver = tokio::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver (apt-get install chromium chromium-driver)");
    let driver = format!("http://127.0.0.1:{port}");
    while reqwest::get(format!("{driver}/status")).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let profile = std::env::temp_dir().join(format!("sih-view-bench-profile-{port}"));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--window-size=1600,1000", format!("--user-data-dir={}", profile.display())]}),
    );
    let browser =
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver)
            .await
            .expect("a chromium session");
    let t = Instant::now();
    browser.goto(&view.url()).await.expect("page");
    loop {
        let s = stats(&browser).await;
        if s["pods"].as_u64() == Some(pods as u64) && s["nodes"].as_u64() == Some(nodes as u64) {
            println!(
                "page: whole cluster drawn {:?} after navigation; that frame {:.0} ms",
                t.elapsed(),
                s["lastRenderMs"].as_f64().unwrap_or_default()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Idle: what holding the page open costs the API server.
    cluster.journal().clear();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = view_requests(&cluster).len();
    println!(
        "API server while idle: {:.2} requests/s from the view; 3 watches held (nodes, pods, events); {} page(s) connected",
        idle as f64 / 10.0,
        view.state.viewers()
    );

    // A drain of 10 spot nodes: fenced in one patch each, then every pod evicted.
    browser
        .execute(
            "window.viewStats.maxRenderMs = 0; window.viewStats.maxLatencyMs = 0;",
            vec![],
        )
        .await
        .expect("reset");
    let http = reqwest::Client::new();
    let base = cluster.url();
    let deadline = (jiff::Timestamp::now() + Duration::from_secs(120)).to_string();
    let mut samples = Vec::new();
    let started = Instant::now();
    for i in 0..10 {
        let node = workload::node(i, true)["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let record = json!({"notices": [{"kind": "spot-interruption", "id": format!("i-{i}-spot"), "node": node,
            "detected": jiff::Timestamp::now().to_string(), "deadline": deadline, "source": "imds"}], "cordoned": true, "wasCordoned": false});
        http.patch(format!("{base}/api/v1/nodes/{node}"))
            .header("content-type", "application/merge-patch+json")
            .body(json!({"metadata": {"annotations": {"spot-interrupt-handler/notice": record.to_string()},
                "labels": {"node.kubernetes.io/exclude-from-external-load-balancers": "spot-interrupt-handler"}},
                "spec": {"unschedulable": true, "taints": [{"key": "spot-interrupt-handler/spot-interruption", "value": format!("i-{i}-spot"), "effect": "NoSchedule"}]}}).to_string())
            .send()
            .await
            .expect("fence");
        let victims: Vec<String> = store.read(|s| {
            s.pods_on_node(&node)
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
                .collect()
        });
        for name in victims {
            let body = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}});
            let _ = http
                .post(format!(
                    "{base}/api/v1/namespaces/default/pods/{name}/eviction"
                ))
                .json(&body)
                .send()
                .await;
        }
        let s = stats(&browser).await;
        samples.push(s["lastLatencyMs"].as_f64().unwrap_or_default());
    }
    // Until the evicted pods are gone and their replacements run.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(8) {
        let s = stats(&browser).await;
        samples.push(s["lastLatencyMs"].as_f64().unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = stats(&browser).await;
    let during = view_requests(&cluster).len();
    samples.sort_by(f64::total_cmp);
    let pods_now = store.read(|i| i.count(PODS));
    println!(
        "while 10 nodes were fenced and their pods evicted and replaced ({:?}): update latency p50 {:.0} ms, max {:.0} ms (sampled {}); longest frame {:.0} ms; {} messages; {} view requests to the API server",
        started.elapsed(),
        samples[samples.len() / 2],
        s["maxLatencyMs"].as_f64().unwrap_or_default(),
        samples.len(),
        s["maxRenderMs"].as_f64().unwrap_or_default(),
        s["messages"],
        during,
    );
    println!("pods in the cluster now: {pods_now}");
    let _ = browser.close().await;
    view.stop().await.expect("the view stops");
    let _ = std::fs::remove_file(&kubeconfig);
    let _ = std::fs::remove_dir_all(&profile);
}
