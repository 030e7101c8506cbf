//! Helpers the benchmark binaries share (each includes this with `mod support;`).
#![allow(dead_code)] // each benchmark uses its own subset

use std::time::Duration;

/// The nearest-rank `p` quantile of `v` (sorted here).
pub fn quantile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize)
        .saturating_sub(1)
        .min(v.len() - 1)]
}

/// A field of `/proc/PID/status` in KiB (`VmRSS:`, `VmHWM:`, `RssAnon:`); 0 when gone.
pub fn status_kib(pid: u32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The product binary measured: the one `cargo bench` built (`built`), or the one
/// `SIH_AGENT_BIN` names — the footprint targets are for the image's binary, the static musl
/// build of `scripts/build-static` (`target/x86_64-unknown-linux-musl/release/spot-interrupt-handler`).
pub fn product_bin(built: &str) -> String {
    std::env::var("SIH_AGENT_BIN").unwrap_or_else(|_| built.to_string())
}

/// The runtime every benchmark measures on: two worker threads, as on the 2-core machines the
/// numbers are recorded on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// CPU time of a process: the sum of its threads' time on a CPU from
/// `/proc/PID/task/*/schedstat`, in nanoseconds (an idle agent's poll is about a millisecond,
/// a tenth of `/proc/PID/stat`'s 10 ms tick, which made per-poll figures over 60 s good to
/// ±15 % only); the ticks when schedstat is not there.
pub fn cpu_time(pid: u32) -> Duration {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    let mut ns = 0u64;
    let mut read = false;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        if let Some(v) = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            ns += v;
            read = true;
        }
    }
    if read {
        return Duration::from_nanos(ns);
    }
    let (user, system) = user_system(pid);
    user + system
}

/// User and system CPU time of a process from `/proc/PID/stat` (10 ms ticks): where a
/// process's time goes, in its own code or in the kernel on its behalf.
pub fn user_system(pid: u32) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    let ticks = |i: usize| -> Duration {
        let t: u64 = fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
        Duration::from_millis(t * 10)
    };
    (ticks(11), ticks(12))
}

/// A simulated cluster's kubeconfig written to a temporary file, a client without retries,
/// and its spot node's name.
pub async fn cluster_access(
    cluster: &sih_sim_cluster::RunningCluster,
    tag: &str,
) -> (std::path::PathBuf, kube::Client, String) {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Api, ListParams};
    let kubeconfig = std::env::temp_dir().join(format!("sih-bench-{tag}-{}", std::process::id()));
    std::fs::write(&kubeconfig, cluster.kubeconfig()).expect("kubeconfig written");
    let mut kc = kube::Config::new(cluster.url().parse().expect("cluster URL"));
    kc.default_retry = false;
    let client = kube::Client::try_from(kc).expect("client");
    let node = Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels("lifecycle=Ec2Spot"))
        .await
        .expect("nodes")
        .items[0]
        .metadata
        .name
        .clone()
        .expect("a named spot node");
    (kubeconfig, client, node)
}
