//! Benchmarks of the metadata path, on loopback:
//! - one full poll of every interruption item by our client (p50/p99/max);
//! - the simulator's throughput with many keep-alive connections.
//!
//! Run: `cargo bench --bench imds` (add `-- --quick` for a short run). The simulator and the
//! load share this machine's cores, so throughput is a lower bound for the simulator alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sih_imds::{ImdsClient, ImdsConfig};
use sih_sim_imds::{SimConfig, TokenMode};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (polls, load_for) = if quick {
        (1_000, Duration::from_secs(1))
    } else {
        (10_000, Duration::from_secs(5))
    };

    // The simulator gets a runtime of its own so that client work does not run on its threads.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    let sim = server_rt
        .block_on(sih_sim_imds::start(
            SimConfig {
                imdsv2: TokenMode::Required,
                ..SimConfig::default()
            },
            "127.0.0.1:0".parse().expect("addr"),
        ))
        .expect("simulator starts");
    let url = sim.url();

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    client_rt.block_on(poll_latency(&url, polls));

    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("load runtime");
    load_rt.block_on(throughput(&url, 32, load_for));
    drop(sim);
}

async fn poll_latency(url: &str, polls: usize) {
    let client = ImdsClient::new(ImdsConfig {
        endpoint: url.to_owned(),
        ..ImdsConfig::default()
    })
    .expect("client");
    for _ in 0..200 {
        client.poll().await; // warm-up: token, connections
    }
    let mut samples = Vec::with_capacity(polls);
    for _ in 0..polls {
        let start = Instant::now();
        let snap = client.poll().await;
        samples.push(start.elapsed());
        assert_eq!(snap.errors().count(), 0, "poll failed during the benchmark");
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "full poll (5 items, IMDSv2, keep-alive), {polls} polls: p50 {:?}  p99 {:?}  max {:?}",
        pct(0.50),
        pct(0.99),
        samples[samples.len() - 1]
    );
}

async fn throughput(url: &str, connections: usize, run_for: Duration) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("http client");
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + run_for;
    let target = format!("{url}/latest/meta-data/instance-id");
    let token = http
        .put(format!("{url}/latest/api/token"))
        .header("x-aws-ec2-metadata-token-ttl-seconds", "600")
        .send()
        .await
        .expect("token")
        .text()
        .await
        .expect("token body");
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (http, done, target, token) =
                (http.clone(), done.clone(), target.clone(), token.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let resp = http
                        .get(&target)
                        .header("x-aws-ec2-metadata-token", &token)
                        .send()
                        .await;
                    if let Ok(r) = resp
                        && r.status().is_success()
                        && r.bytes().await.is_ok()
                    {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    let n = done.load(Ordering::Relaxed);
    println!(
        "simulator throughput, {connections} keep-alive connections, {:?}: {n} requests, {:.0} req/s",
        run_for,
        n as f64 / start.elapsed().as_secs_f64()
    );
}
