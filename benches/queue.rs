//! Benchmark of queue mode under a mass reclaim: 1000 spot warnings put on the queue at once
//! for 1000 nodes of `simulate cluster`, each node an instance of a real moto EC2 (named by
//! the private DNS name moto gave it). The controller is the release binary as a process.
//!
//! Measured:
//! - queue mode's own pickup → fenced latency (`..._fence_latency_seconds` from the
//!   controller's /metrics: from the moment a message is handled to the fence written);
//! - wall time from the controller's start until every node is fenced (p50/p99/max over the
//!   nodes, seen through a watch) and until every message is deleted after its drain;
//! - two floors on the same moto first, each on a queue of the same depth: a no-op consumer
//!   (receive 10, delete each) and a keeping one (receive 10, keep them in flight, as a
//!   correct handler must until each drain is done): moto's SQS slows with the messages it
//!   holds (tens a second at 1000), so the wall times are reported next to these, as ratios;
//! - the controller's peak resident memory.
//!
//! Needs python3 with `moto[server]` (./scripts/test installs it).
//! Run: `cargo bench --bench queue` (`-- --nodes 200` for a smaller run).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use serde_json::{Value, json};
use sih_sim_cluster::{ClusterConfig, workload};

#[path = "../tests/support/moto.rs"]
#[allow(dead_code)] // the Auto Scaling half is for the tests
mod moto;
mod support;

use moto::Moto;
use support::{product_bin, quantile, status_kib};

const BIN: &str = env!("CARGO_BIN_EXE_spot-interrupt-handler");
const TAINT: &str = "spot-interrupt-handler/spot-interruption";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let nodes = args
        .iter()
        .position(|a| a == "--nodes")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(1000usize);
    let rt = support::runtime();
    rt.block_on(run(nodes));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pct(mut v: Vec<Duration>) -> String {
    let secs = |d: Duration| d.as_secs_f64();
    format!(
        "n {}  p50 {:.2} s  p99 {:.2} s  max {:.2} s",
        v.len(),
        secs(quantile(&mut v, 0.5)),
        secs(quantile(&mut v, 0.99)),
        secs(quantile(&mut v, 1.0))
    )
}

async fn fill(sqs: &aws_sdk_sqs::Client, url: &str, instances: &[sih_queue::Instance]) {
    let now = jiff::Timestamp::now().to_string();
    for chunk in instances.chunks(10) {
        let entries: Vec<SendMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .map(|(i, inst)| {
                let body = json!({
                    "version": "0", "id": format!("bench-{}", inst.id),
                    "detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2",
                    "account": "123456789012", "time": now, "region": "us-east-1",
                    "resources": [format!("arn:aws:ec2:us-east-1a:instance/{}", inst.id)],
                    "detail": {"instance-id": inst.id, "instance-action": "terminate"}
                });
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body.to_string())
                    .build()
                    .unwrap()
            })
            .collect();
        sqs.send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
    }
}

async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let a = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    let n = |k: A| -> u64 { a.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0) };
    n(A::ApproximateNumberOfMessages) + n(A::ApproximateNumberOfMessagesNotVisible)
}

/// A floor that keeps what it receives (hidden for 5 minutes), as a correct handler must
/// until each drain is done: moto's receives slow down with the messages in flight.
async fn keeping_consumer(sqs: &aws_sdk_sqs::Client, url: &str, total: usize) -> Duration {
    let started = Instant::now();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < total {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(300)
            .send()
            .await
            .unwrap();
        for m in got.messages.unwrap_or_default() {
            seen.insert(m.message_id.unwrap_or_default());
        }
    }
    started.elapsed()
}

/// The floor: receive 10 at a time and delete each, as fast as moto allows.
async fn no_op_consumer(sqs: &aws_sdk_sqs::Client, url: &str, total: usize) -> Duration {
    let started = Instant::now();
    let mut done = 0;
    while done < total {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let mut deletes = Vec::new();
        for m in got.messages.unwrap_or_default() {
            let sqs = sqs.clone();
            let url = url.to_owned();
            deletes.push(tokio::spawn(async move {
                sqs.delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle.unwrap())
                    .send()
                    .await
                    .unwrap();
            }));
        }
        for d in deletes {
            d.await.unwrap();
            done += 1;
        }
    }
    started.elapsed()
}

/// A quantile of a Prometheus histogram, by its buckets (the upper bound it falls under).
fn histogram_quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    buckets
        .iter()
        .find(|(_, c)| *c >= total * q)
        .map(|(le, _)| *le)
}

async fn run(count: usize) {
    let moto = Moto::start().await;
    let sqs = moto.sqs().await;
    let ids = moto.run_instances(count, None).await;
    let t = Instant::now();
    let instances = moto.instances(&ids).await;
    let describe = t.elapsed();
    assert_eq!(instances.len(), count);

    // The cluster: one node per instance, a DaemonSet pod on each, 300 web pods.
    let mut objects: Vec<Value> = instances
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            let mut n = workload::node(i, true);
            let name = inst.private_dns_name.clone().unwrap();
            n["metadata"]["name"] = json!(name);
            n["metadata"]["labels"]["kubernetes.io/hostname"] = json!(name);
            n["spec"]["providerID"] = json!(format!("aws:///us-east-1a/{}", inst.id));
            n
        })
        .collect();
    objects.extend(
        workload::parse(&format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: {}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{{name: web, image: nginx}}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: node-agent, namespace: kube-system}}
spec:
  selector: {{matchLabels: {{app: node-agent}}}}
  template:
    metadata: {{labels: {{app: node-agent}}}}
    spec:
      containers: [{{name: a, image: busybox}}]
"#,
            (count * 3 / 10).max(3)
        ))
        .unwrap(),
    );
    let cluster = sih_sim_cluster::start(
        ClusterConfig {
            nodes: 0,
            spot_nodes: 0,
            workload: Some(objects),
            pod_start_delay: Duration::from_millis(50),
            ..ClusterConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let kubeconfig = std::env::temp_dir().join(format!("sih-bench-queue-{}", std::process::id()));
    std::fs::write(&kubeconfig, cluster.kubeconfig()).unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    tokio::time::sleep(Duration::from_secs(2)).await; // pods scheduled and running

    // The floors, each on its own queue of the same depth: a no-op consumer that deletes,
    // and one that keeps every message in flight.
    let queue = |name: &'static str| {
        let sqs = sqs.clone();
        async move {
            sqs.create_queue()
                .queue_name(name)
                .send()
                .await
                .unwrap()
                .queue_url
                .unwrap()
        }
    };
    let url = queue("floor-delete").await;
    fill(&sqs, &url, &instances).await;
    let floor = no_op_consumer(&sqs, &url, count).await;
    let url = queue("floor-keep").await;
    fill(&sqs, &url, &instances).await;
    let keep_floor = keeping_consumer(&sqs, &url, count).await;

    // The handler, on a queue of its own.
    let url = queue("bench").await;
    fill(&sqs, &url, &instances).await;
    let fenced_at = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<String, Instant>::new()));
    let watch = {
        use futures_util::StreamExt;
        let fenced_at = fenced_at.clone();
        let nodes = nodes.clone();
        tokio::spawn(async move {
            let stream = kube::runtime::watcher(nodes, Default::default());
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(e)) = stream.next().await {
                let list = match e {
                    kube::runtime::watcher::Event::Apply(n)
                    | kube::runtime::watcher::Event::InitApply(n) => vec![n],
                    _ => vec![],
                };
                for n in list {
                    let tainted = n
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .is_some_and(|t| t.iter().any(|t| t.key == TAINT));
                    if tainted {
                        fenced_at
                            .lock()
                            .unwrap()
                            .entry(n.metadata.name.unwrap_or_default())
                            .or_insert_with(Instant::now);
                    }
                }
            }
        })
    };
    // Idle: a controller on an empty queue for a while (long polls, the node index built).
    let idle_url = queue("idle").await;
    let mut idle = controller(&idle_url, &moto.url, &kubeconfig, free_port());
    tokio::time::sleep(Duration::from_secs(8)).await;
    let idle_kib = status_kib(idle.id().unwrap(), "VmRSS:");
    let _ = idle.kill().await;

    let admin_port = free_port();
    let start = Instant::now();
    let mut controller = controller(&url, &moto.url, &kubeconfig, admin_port);
    let pid = controller.id().unwrap();
    let mut all_fenced = None;
    let mut all_deleted = None;
    let mut peak_kib = 0;
    while all_deleted.is_none() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak_kib = peak_kib.max(status_kib(pid, "VmHWM:"));
        if all_fenced.is_none() && fenced_at.lock().unwrap().len() == count {
            all_fenced = Some(start.elapsed());
        }
        if all_fenced.is_some() && depth(&sqs, &url).await == 0 {
            all_deleted = Some(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(900) {
            let fenced = fenced_at.lock().unwrap().len();
            let left = depth(&sqs, &url).await;
            panic!("not done after 15 minutes: {fenced} fenced, {left} messages left");
        }
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    peak_kib = peak_kib.max(status_kib(pid, "VmHWM:"));
    let _ = controller.kill().await;
    watch.abort();
    let fence_times: Vec<Duration> = fenced_at
        .lock()
        .unwrap()
        .values()
        .map(|t| t.duration_since(start))
        .collect();
    let latency = |q| {
        histogram_quantile(&metrics, "spot_interrupt_handler_fence_latency_seconds", q)
            .map(|s| format!("≤ {s} s"))
            .unwrap_or_else(|| "n/a".into())
    };
    let (all_fenced, all_deleted) = (all_fenced.unwrap(), all_deleted.unwrap());
    println!(
        "queue burst: {count} spot warnings for {count} nodes (moto SQS + EC2, simulate cluster, --workers 10)"
    );
    println!(
        "  DescribeInstances of {count} ids through our signed client: {:.0} ms",
        describe.as_secs_f64() * 1e3
    );
    println!(
        "  no-op consumer (receive 10 + delete, one loop): all {count} deleted in {:.1} s",
        floor.as_secs_f64()
    );
    println!(
        "  keeping consumer (receive 10, keep them in flight): all {count} received in {:.1} s",
        keep_floor.as_secs_f64()
    );
    println!("  controller start → node fenced: {}", pct(fence_times));
    println!(
        "  controller start → all fenced: {:.1} s ({:.2}× the no-op consumer's time, {:.2}× the keeping consumer's)",
        all_fenced.as_secs_f64(),
        all_fenced.as_secs_f64() / floor.as_secs_f64(),
        all_fenced.as_secs_f64() / keep_floor.as_secs_f64()
    );
    println!(
        "  controller start → every message deleted after its drain: {:.1} s ({:.2}×)",
        all_deleted.as_secs_f64(),
        all_deleted.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "  handled → fenced (fence_latency histogram): p50 {}  p99 {}",
        latency(0.5),
        latency(0.99)
    );
    println!(
        "  controller RSS idle on an empty queue: {:.1} MiB; peak (VmHWM) during the burst: {:.1} MiB ({})",
        idle_kib as f64 / 1024.0,
        peak_kib as f64 / 1024.0,
        product_bin(BIN)
    );
    let _ = std::fs::remove_file(&kubeconfig);
    drop(cluster);
}

/// The queue controller under test, quiet, against moto and the simulated cluster.
fn controller(
    url: &str,
    moto: &str,
    kubeconfig: &std::path::Path,
    admin_port: u16,
) -> tokio::process::Child {
    tokio::process::Command::new(product_bin(BIN))
        .args([
            "--log-level",
            "warn",
            "queue",
            "--queue-url",
            url,
            "--aws-endpoint",
            moto,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}
