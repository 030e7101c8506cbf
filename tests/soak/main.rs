//! The chaos soak: many random scenarios, each a fresh simulated cluster and metadata service
//! (and moto, for queue mode), random workloads, random notices of every kind at random times,
//! random faults from both simulators, kills and restarts of the agent or the controller, and
//! an invariant checker over what the simulators recorded (`check.rs` lists the promises).
//!
//! `cargo test --test soak` runs the CI form: 240 scenarios on `simulate cluster` (EC2's
//! metadata service and the queue 80 each, GCE and Azure 40 each), then 40 on the real control
//! plane (kube-apiserver, etcd, controllers and kwok, one per scenario; the IMDS agent and the
//! queue 20 each, under the manifests' RBAC and confinement, with the scenarios' cluster faults
//! played by a fault-injecting proxy: `real.rs`). The long form:
//!
//! ```sh
//! cargo test --release --test soak -- --backend simulator --scenarios 10000 --jobs 16 --report soak.json
//! ```
//!
//! Options: `--backend simulator|real|both`, `--scenarios N` (on the simulator),
//! `--real-scenarios N`, `--seed FIRST` (seeds FIRST..FIRST+N), `--only SEED` (replay one),
//! `--mode imds|queue|gce|azure|both|all`, `--jobs J` and `--real-jobs J` (scenarios at once),
//! `--report FILE` (JSON summary), `--expect-violations` (exit 0 even when the checker finds
//! some: to record a baseline). Environment: `SIH_SOAK_SCENARIOS`, `SIH_SOAK_REAL_SCENARIOS`,
//! `SIH_SOAK_JOBS`, `SIH_SOAK_REAL_JOBS`. A failing scenario prints its backend, seed and a
//! one-line description; `--backend B --only SEED` replays it exactly (timing aside).

mod check;
#[path = "../support/fault_proxy.rs"]
mod fault_proxy;
#[path = "../support/moto.rs"]
mod moto;
mod real;
#[allow(dead_code)] // the soak uses the control plane, not the test-body switch
#[path = "../support/real_cluster.rs"]
mod real_cluster;
mod run;
mod scenario;

use std::collections::BTreeMap;
use std::sync::Arc;

use scenario::{Mode, Scenario};

struct Args {
    scenarios: u64,
    real_scenarios: u64,
    real_jobs: usize,
    simulator: bool,
    real: bool,
    /// `--mode` given: the real slice plays it too (else the agent and the queue).
    mode_given: bool,
    first: u64,
    only: Option<u64>,
    modes: Vec<Mode>,
    jobs: usize,
    report: Option<std::path::PathBuf>,
    expect_violations: bool,
}

/// Which cluster a scenario played on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Backend {
    Simulator,
    Real,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Simulator => "simulator",
            Self::Real => "real",
        }
    }
}

fn args() -> Result<Args, String> {
    let env_num = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let mut a = Args {
        scenarios: env_num("SIH_SOAK_SCENARIOS", 240),
        real_scenarios: env_num("SIH_SOAK_REAL_SCENARIOS", 40),
        real_jobs: env_num("SIH_SOAK_REAL_JOBS", 8) as usize,
        simulator: true,
        real: true,
        mode_given: false,
        first: 1,
        only: None,
        modes: ALL_MODES.to_vec(),
        jobs: env_num("SIH_SOAK_JOBS", 32) as usize,
        report: None,
        expect_violations: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |s: String| {
            s.parse::<u64>()
                .map_err(|_| format!("{s:?} is not a number"))
        };
        match flag.as_str() {
            "--scenarios" => a.scenarios = num(value()?)?,
            "--real-scenarios" => a.real_scenarios = num(value()?)?,
            "--real-jobs" => a.real_jobs = num(value()?)?.max(1) as usize,
            "--backend" => {
                (a.simulator, a.real) = match value()?.as_str() {
                    "simulator" => (true, false),
                    "real" => (false, true),
                    "both" => (true, true),
                    other => {
                        return Err(format!("--backend {other:?}: simulator, real or both"));
                    }
                }
            }
            "--seed" => a.first = num(value()?)?,
            "--only" => a.only = Some(num(value()?)?),
            "--jobs" => a.jobs = num(value()?)?.max(1) as usize,
            "--report" => a.report = Some(value()?.into()),
            "--mode" => {
                a.mode_given = true;
                a.modes = match value()?.as_str() {
                    "imds" => vec![Mode::Imds],
                    "queue" => vec![Mode::Queue],
                    "gce" => vec![Mode::Gce],
                    "azure" => vec![Mode::Azure],
                    "both" => vec![Mode::Imds, Mode::Queue],
                    "all" => ALL_MODES.to_vec(),
                    other => {
                        return Err(format!(
                            "--mode {other:?}: imds, queue, gce, azure, both (imds and queue) or all"
                        ));
                    }
                }
            }
            "--expect-violations" => a.expect_violations = true,
            // What the test harness passes to every test binary.
            "--nocapture" | "--quiet" | "-q" | "--test-threads" => {}
            other if other.starts_with("--test-threads=") || other.starts_with("--format") => {}
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(a)
}

/// The CI form's mix: EC2's metadata service and the queue a third each, GCE and Azure a
/// sixth each.
const ALL_MODES: [Mode; 6] = [
    Mode::Imds,
    Mode::Queue,
    Mode::Gce,
    Mode::Imds,
    Mode::Queue,
    Mode::Azure,
];

/// Which mode a seed plays: modes alternate, so any range covers them all.
fn mode_of(seed: u64, modes: &[Mode]) -> Mode {
    modes[(seed % modes.len() as u64) as usize]
}

struct Outcome {
    backend: Backend,
    scenario: Scenario,
    violations: Vec<check::Violation>,
    harness_error: Option<String>,
    fault_totals: BTreeMap<&'static str, u64>,
    imds_fault_hits: u64,
    kills: usize,
    notices: usize,
    /// Each notice's time to fence, seconds.
    fence_times: Vec<f64>,
    /// The busiest second's requests to the metadata service.
    metadata_peak: usize,
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = rt.block_on(soak(a));
    std::process::exit(code);
}

async fn soak(a: Args) -> i32 {
    let dir = std::env::temp_dir().join(format!("sih-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    let started = std::time::Instant::now();
    let seeds = |n: u64| -> Vec<u64> {
        match a.only {
            Some(s) => vec![s],
            None => (a.first..a.first + n).collect(),
        }
    };
    let mut outcomes = Vec::new();
    let mut panicked = 0;
    if a.simulator && a.scenarios > 0 {
        let (o, p) = phase(
            Backend::Simulator,
            seeds(a.scenarios),
            &a.modes,
            a.jobs,
            &dir,
        )
        .await;
        outcomes.extend(o);
        panicked += p;
    }
    if a.real && a.real_scenarios > 0 {
        // The real slice: the per-node agent on EC2's metadata service and the queue (the
        // other clouds differ from the agent only in what they read).
        let modes = if a.mode_given {
            a.modes.clone()
        } else {
            vec![Mode::Imds, Mode::Queue]
        };
        let (o, p) = phase(
            Backend::Real,
            seeds(a.real_scenarios),
            &modes,
            a.real_jobs,
            &dir,
        )
        .await;
        outcomes.extend(o);
        panicked += p;
    }
    outcomes.sort_by_key(|o| (o.backend, o.scenario.seed));
    summarize(&a, &outcomes, panicked, started.elapsed(), &dir)
}

/// Plays `seeds` on one backend, `jobs` at once; the outcomes and how many panicked.
async fn phase(
    backend: Backend,
    seeds: Vec<u64>,
    modes: &[Mode],
    jobs: usize,
    dir: &std::path::Path,
) -> (Vec<Outcome>, usize) {
    let dir = dir.join(backend.name());
    std::fs::create_dir_all(&dir).expect("work dir");
    let shared = Arc::new(run::Shared::new(
        run::Webhooks::start().await,
        jobs.min(seeds.len()),
        dir.clone(),
        backend == Backend::Real,
    ));
    println!(
        "soak: {} scenario(s) on the {} from seed {}, {jobs} at once",
        seeds.len(),
        match backend {
            Backend::Simulator => "simulator",
            Backend::Real => "real control plane",
        },
        seeds[0],
    );
    let limit = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut tasks = tokio::task::JoinSet::new();
    for seed in seeds {
        let scenario = Scenario::generate(seed, mode_of(seed, modes));
        let (shared, limit) = (shared.clone(), limit.clone());
        tasks.spawn(async move {
            let _slot = limit.acquire_owned().await;
            let rec = run::play(&scenario, &shared).await;
            let violations = check::check(&scenario, &rec);
            let fence_times = check::fence_times(&scenario, &rec);
            let metadata_peak = check::metadata_peak(&rec);
            Outcome {
                metadata_peak,
                fence_times,
                backend,
                violations,
                harness_error: rec.harness_error.clone(),
                fault_totals: rec.fault_totals.clone(),
                imds_fault_hits: rec.imds_fault_hits,
                kills: rec.lives.iter().filter(|l| l.killed).count(),
                notices: rec.visible.iter().filter(|v| v.is_some()).count(),
                scenario,
            }
        });
    }
    let mut outcomes = Vec::new();
    let mut panicked = 0;
    while let Some(done) = tasks.join_next().await {
        let Ok(o) = done else {
            // Not played: counted, never silently dropped (the panic is printed above).
            panicked += 1;
            println!("   PANIC  a scenario's harness panicked; it was not played");
            continue;
        };
        let status = if o.harness_error.is_some() {
            "HARNESS"
        } else if o.violations.is_empty() {
            "ok"
        } else {
            "VIOLATED"
        };
        let on = if backend == Backend::Real {
            "real "
        } else {
            ""
        };
        println!("{status:>8}  {on}{}", o.scenario.describe());
        for v in o.violations.iter().take(6) {
            println!("          {}: {}", v.invariant, v.detail);
        }
        if o.violations.len() > 6 {
            println!("          ... and {} more", o.violations.len() - 6);
        }
        if let Some(e) = &o.harness_error {
            println!("          harness: {e}");
        }
        if o.violations.is_empty() && o.harness_error.is_none() {
            let _ = std::fs::remove_dir_all(dir.join(format!("seed-{}", o.scenario.seed)));
        }
        outcomes.push(o);
    }
    (outcomes, panicked)
}

fn summarize(
    a: &Args,
    outcomes: &[Outcome],
    panicked: usize,
    took: std::time::Duration,
    dir: &std::path::Path,
) -> i32 {
    // A seed names a scenario on the simulator; `real:SEED` one on the real control plane.
    let label = |o: &Outcome| match o.backend {
        Backend::Simulator => o.scenario.seed.to_string(),
        Backend::Real => format!("real:{}", o.scenario.seed),
    };
    let mut by_invariant: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let mut kills = 0;
    let mut notices = 0;
    let mut harness = Vec::new();
    for o in outcomes {
        for v in &o.violations {
            let seeds = by_invariant.entry(v.invariant).or_default();
            if seeds.last() != Some(&label(o)) {
                seeds.push(label(o));
            }
        }
        for (k, n) in &o.fault_totals {
            *faults.entry(format!("cluster {k}")).or_default() += n;
        }
        *faults.entry("imds 5xx".into()).or_default() += o.imds_fault_hits;
        kills += o.kills;
        notices += o.notices;
        if o.harness_error.is_some() {
            harness.push(label(o));
        }
    }
    let failing: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.violations.is_empty())
        .map(label)
        .collect();
    let per_mode = |m: Mode| outcomes.iter().filter(|o| o.scenario.mode == m).count();
    let real = outcomes
        .iter()
        .filter(|o| o.backend == Backend::Real)
        .count();
    println!(
        "\nsoak: {} scenarios ({} on the simulator, {real} on the real control plane; {} imds, {} queue, {} gce, {} azure) in {:.0}s; {notices} notices, {kills} kills and restarts",
        outcomes.len(),
        outcomes.len() - real,
        per_mode(Mode::Imds),
        per_mode(Mode::Queue),
        per_mode(Mode::Gce),
        per_mode(Mode::Azure),
        took.as_secs_f64()
    );
    println!(
        "faults injected (requests hit): {}",
        faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for backend in [Backend::Simulator, Backend::Real] {
        let mut times: Vec<f64> = outcomes
            .iter()
            .filter(|o| o.backend == backend)
            .flat_map(|o| o.fence_times.iter().copied())
            .collect();
        if times.is_empty() {
            continue;
        }
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        println!(
            "time to fence on the {} ({} notices): p50 {:.2}s, p90 {:.2}s, p99 {:.2}s, max {:.2}s (bound {}s of usable time)",
            backend.name(),
            times.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            at(1.0),
            match backend {
                Backend::Simulator => check::FENCE_BOUND,
                Backend::Real => check::FENCE_BOUND_REAL,
            }
        );
    }
    if let Some(peak) = outcomes.iter().map(|o| o.metadata_peak).max() {
        println!(
            "metadata service: at most {peak} requests in one second (bound {})",
            check::METADATA_RPS
        );
    }
    println!("violations: {}", failing.len());
    for (inv, seeds) in &by_invariant {
        println!("  {inv}: seeds {seeds:?}");
    }
    if !harness.is_empty() {
        println!("harness errors (scenario not played): seeds {harness:?}");
    }
    if panicked > 0 {
        println!("harness panics (scenario not played): {panicked}");
    }
    if !failing.is_empty() {
        println!(
            "replay one with: cargo test --test soak -- --backend simulator --only SEED (real:SEED: --backend real; records kept in {})",
            dir.display()
        );
    }
    if let Some(path) = &a.report {
        let report = serde_json::json!({
            "scenarios": outcomes.len(),
            "real_control_plane": real,
            "seeds": [outcomes.first().map(|o| o.scenario.seed), outcomes.last().map(|o| o.scenario.seed)],
            "seconds": took.as_secs_f64(),
            "notices": notices,
            "kills": kills,
            "faults": faults,
            "violations": by_invariant,
            "failing_seeds": failing,
            "harness_errors": harness,
            "harness_panics": panicked,
        });
        let _ = std::fs::write(
            path,
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        );
    }
    // A soak where most scenarios could not even be played tests nothing.
    let asked = outcomes.len() + panicked;
    let played = outcomes.len() - harness.len();
    if played * 10 < asked * 9 {
        println!("soak: too many scenarios could not be played");
        return 1;
    }
    if failing.is_empty() || a.expect_violations {
        0
    } else {
        1
    }
}
