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
