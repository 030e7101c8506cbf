//! The deadline-aware drain. How it differs from `kubectl drain`:
//! - every grace period is planned against the notice's deadline
//!   (`min(pod's own, --pod-termination-grace-period, time left − margin)`), not a fixed timeout;
//! - a PodDisruptionBudget refusal (429) is retried with short, jittered, capped backoff, not a
//!   flat 5 s sleep;
//! - when the deadline is hard, a pod its budget still protects is deleted at the last moment
//!   its own grace period still fits, instead of being killed with none when the instance dies;
//! - evictions carry the pod's UID, so a replacement with the same name is never evicted;
//! - critical pods leave after the others; mirror, DaemonSet, finished pods and our own stay;
//! - it is level-triggered: run it again after a crash and it continues (pods already
//!   terminating are waited for, not evicted again);
//! - its target moves while it runs: a nearer deadline tightens it (pods still stopping get a
//!   second, shorter deletion), a hard deadline arriving makes it delete budget-protected pods
//!   in time, and no target at all stops it;
//! - every call is bounded: a hung eviction is abandoned in time for the deadline deletion,
//!   and no wait outlives the time the target leaves;
//! - it reports progress as typed events, not log lines, for others to turn into logs, Events,
//!   metrics and webhook summaries.

mod evict;
mod hold;
mod recovery;
mod target;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use sih_core::{
    Backoff, DrainPolicy, EVICTION_ANNOTATION, EvictionChoice, PodFacts, PodPlan, plan_drain,
    tier_starts,
};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::NodeError;
pub use crate::progress::{DrainEnd, DrainReport, PodRef, Progress};
use crate::surge::Surged;
use evict::Left;
pub use recovery::recovered;
pub use target::{GiveUp, LATE_WINDOW, Target, instant_of};

/// First wait after a budget refusal; doubles up to the cap, with ±20 % jitter so many drains
/// do not retry in lockstep (`sih_core::Backoff`).
const PDB_RETRY_BASE: Duration = Duration::from_millis(250);
/// Short enough that a pod whose replacement became Ready leaves within a couple of seconds.
const PDB_RETRY_CAP: Duration = Duration::from_secs(2);
/// How often a leaving pod is checked for being gone.
const GONE_POLL: Duration = Duration::from_millis(250);

/// A call never gets less than this, however near the next decision is.
const MIN_CALL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct DrainConfig {
    pub policy: DrainPolicy,
    /// `--max-concurrent-evictions`.
    pub max_concurrent: usize,
    /// Our own pod `(namespace, name)`, which must keep running.
    pub own_pod: Option<(String, String)>,
    /// The longest any one API call may take (`--api-timeout`).
    pub api_timeout: Duration,
    /// `--lb-drain-delay`: pods that are endpoints of a Service on this node are evicted this
    /// long after the drain starts (the fence has labelled the node out of external load
    /// balancers; they need the time to stop sending it traffic), or at their last moment
    /// before the deadline if that comes first. Zero: no wait.
    pub lb_drain_delay: Duration,
    /// `--surge-selector`: Deployments with all these labels are surged as if annotated.
    pub surge_selector: std::collections::BTreeMap<String, String>,
    /// `--lb-target-health`: endpoints wait until the load balancers no longer send the node
    /// new requests (never past their last moment); `lb_drain_delay` is the fallback when
    /// they cannot be asked.
    pub target_health: Option<crate::lb::LbHealth>,
    /// `--reserve-capacity`: placeholders for the pods it moves, made beside the first
    /// evictions (`crate::reserve`).
    pub reserve: Option<crate::reserve::Reservations>,
    /// Features turned off for a missing permission (`crate::access`).
    pub off: crate::access::Switches,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            policy: DrainPolicy::default(),
            max_concurrent: 50,
            own_pod: None,
            api_timeout: crate::API_TIMEOUT,
            lb_drain_delay: Duration::ZERO,
            surge_selector: Default::default(),
            target_health: None,
            reserve: None,
            off: Default::default(),
        }
    }
}

/// What the drain needs to know about a pod, read off its object.
pub fn facts_of(p: &Pod) -> PodFacts {
    let meta = &p.metadata;
    let spec = p.spec.as_ref();
    // A placeholder of ours (one node's, on another node now reclaimed in turn) belongs to
    // its Node: not a pod nobody recreates, nothing to warn about.
    let owner = meta.owner_references.as_ref().and_then(|o| {
        o.iter().find(|r| r.controller == Some(true)).or_else(|| {
            crate::reserve::is_placeholder(p)
                .then(|| o.iter().find(|r| r.kind == "Node"))
                .flatten()
        })
    });
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    let class = spec
        .and_then(|s| s.priority_class_name.as_deref())
        .unwrap_or_default();
    let asked = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(EVICTION_ANNOTATION))
        .map(|v| EvictionChoice::parse(v));
    PodFacts {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        owner_kind: owner.map(|o| o.kind.clone()),
        owner_name: owner.map(|o| o.name.clone()),
        mirror: meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror")),
        terminal: matches!(phase, Some("Succeeded" | "Failed")),
        terminating: meta.deletion_timestamp.is_some(),
        critical: matches!(class, "system-node-critical" | "system-cluster-critical"),
        priority: spec.and_then(|s| s.priority).unwrap_or(0),
        choice: match &asked {
            Some(Ok(c)) => *c,
            _ => EvictionChoice::Default,
        },
        invalid_choice: match asked {
            Some(Err(v)) => Some(v),
            _ => None,
        },
        grace_seconds: spec
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30),
        empty_dir: spec
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|v| v.iter().any(|v| v.empty_dir.is_some())),
        // Known only from the EndpointSlices, read by the drain.
        serves_traffic: false,
    }
}

fn pod_ref(p: &PodFacts) -> PodRef {
    PodRef {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        uid: p.uid.clone(),
    }
}

struct Ctx {
    client: kube::Client,
    target: watch::Receiver<Option<Target>>,
    cfg: DrainConfig,
    progress: mpsc::UnboundedSender<Progress>,
    give_up: std::sync::Mutex<GiveUp>,
}

impl Ctx {
    /// When the drain gives up on target `t`.
    fn gives_up(&self, t: &Target) -> Instant {
        // A poisoned lock only means another task panicked mid-update: the value is still sound.
        let mut g = self.give_up.lock().unwrap_or_else(|e| e.into_inner());
        g.at(t, Instant::now())
    }

    fn say(&self, p: Progress) {
        // Nobody listening is fine: the report still says everything.
        let _ = self.progress.send(p);
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// A call bounded by the API timeout and by `until` (the next moment something must be
    /// decided), abandoned early when the target changes. `None`: abandoned for a change.
    async fn call<T>(
        &self,
        rx: &mut watch::Receiver<Option<Target>>,
        until: Instant,
        what: &'static str,
        call: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Option<Result<T, NodeError>> {
        let limit = self
            .cfg
            .api_timeout
            .min(until.saturating_duration_since(Instant::now()))
            .max(MIN_CALL);
        tokio::select! {
            r = crate::bounded(limit, what, call) => Some(r.and_then(|r| r.map_err(NodeError::Api))),
            _ = rx.changed() => None,
        }
    }
}

/// Sleeps until `until`, or until the target changes (false when it went away for good).
async fn pause(rx: &mut watch::Receiver<Option<Target>>, until: Instant) -> bool {
    tokio::select! {
        _ = tokio::time::sleep_until(until) => true,
        changed = rx.changed() => changed.is_ok(),
    }
}

/// Drains `node` against a fixed target (a drain by hand, tests, benchmarks).
pub async fn drain_until(
    client: kube::Client,
    node: &str,
    target: Target,
    cfg: DrainConfig,
    progress: mpsc::UnboundedSender<Progress>,
) -> Result<DrainReport, NodeError> {
    let (_keep, rx) = watch::channel(Some(target));
    Ok(drain(client, node, rx, cfg, progress)
        .await?
        .report()
        .clone())
}

/// Drains `node` against `target` as it moves: every pod leaves before the deadline if it can.
/// Progress goes to `progress`. The phases: survey the node (its pods, which serve traffic,
/// the plan), surge the Deployments that asked, ask the pods to leave tier by tier, wait until
/// they are gone, restore the surged Deployments.
pub async fn drain(
    client: kube::Client,
    node: &str,
    target: watch::Receiver<Option<Target>>,
    cfg: DrainConfig,
    progress: mpsc::UnboundedSender<Progress>,
) -> Result<DrainEnd, NodeError> {
    let started = Instant::now();
    let mut cfg = cfg;
    // Without `pods delete` a protected pod is left to the deadline (as `--on-pdb-deadline
    // wait`), said once at start; never a deletion refused at the last moment.
    if cfg.off.is_off(crate::access::Feature::DeadlineDeletion) {
        cfg.policy.delete_at_deadline = false;
    }
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        target,
        cfg,
        progress,
        give_up: Default::default(),
    });
    let mut report = DrainReport::default();
    let all: Api<Pod> = Api::all(client);
    let Some(listed) = list_with_retries(&ctx, &all, node).await? else {
        return Ok(DrainEnd::Stopped(finish(report, &ctx, started)));
    };
    let plan = survey(&ctx, node, &listed).await;
    // Endpoints wait on the load balancers' word, asked by a task of its own that ends with
    // the drain.
    let (gate_tx, gate) = watch::channel(crate::lb::Gate::Waiting);
    let lb_watch = match &ctx.cfg.target_health {
        Some(health) if plan.to_evict().any(|p| p.serves_traffic) => {
            Some(hold::AbortOnDrop(tokio::spawn(crate::lb::watch_targets(
                health.0.clone(),
                ctx.client.clone(),
                node.to_owned(),
                ctx.cfg.api_timeout,
                gate_tx,
                ctx.progress.clone(),
            ))))
        }
        _ => None,
    };
    // Placeholders for the pods about to move, made by a task of their own: a slow or hung
    // create never holds up an eviction. Ends with the drain (a withdrawal's removal, a
    // recovery's or the TTL's, is the responder's).
    let _reserving = reserve_for(&ctx, node, &plan, &listed);
    let (surged, surge_of) = surge_up(&ctx, &plan).await;
    report.already_leaving = plan.terminating.len();
    say_plan(&ctx, &plan, &listed);

    // Pods on their way out, with when their grace runs out. A pod found terminating (a drain
    // resumed after a restart) runs out at its deletion timestamp.
    let stopping_by = |p: &PodFacts| {
        listed
            .iter()
            .find(|l| l.metadata.uid.as_deref() == Some(p.uid.as_str()))
            .and_then(|l| l.metadata.deletion_timestamp.as_ref())
            .map(|t| instant_of(t.0))
    };
    // Each pod on its way out is watched from the moment it is known to leave, beside the
    // asks still going on: one whose grace runs past a deadline that tightened meanwhile is
    // hastened at once, not after the last budget-blocked pod was asked (seed 61178: a pod
    // found stopping with 27 s of grace outlived a maintenance deadline that came 1 s later).
    let mut waits: Waits = JoinSet::new();
    for p in plan.terminating.iter().cloned() {
        let by = stopping_by(&p);
        watch_leaving(&ctx, &mut waits, p, by, None);
    }
    let asks = Asks {
        started,
        gate: lb_watch.as_ref().map(|_| gate),
        surged: Arc::new(surged),
        surge_of,
        refusals: Arc::new(AtomicU32::new(0)),
    };
    let mut stopped = ask_to_leave(&ctx, plan, &asks, &mut report, &mut waits).await;
    stopped |= wait_all_gone(&ctx, waits, &mut report).await;
    drop(lb_watch);
    // The surge is over once the pods are gone (or the drain stopped): counts restored.
    restore(&ctx, &asks.surged).await;
    report.budget_refusals = asks.refusals.load(Ordering::Relaxed);
    let report = finish(report, &ctx, started);
    Ok(if stopped || ctx.target.borrow().is_none() {
        DrainEnd::Stopped(report)
    } else {
        DrainEnd::Finished(report)
    })
}

/// The pods on their way out, each watched until it is gone: the pod, whether it went (`None`:
/// the drain was stopped), and how long it took from when it was asked (none for a pod found
/// terminating).
type Waits = JoinSet<(PodFacts, Option<bool>, Option<Duration>)>;

/// Watches `pod` until it is gone; `stops_by` is when its grace runs out, `asked` when this
/// drain asked it to leave.
fn watch_leaving(
    ctx: &Arc<Ctx>,
    waits: &mut Waits,
    pod: PodFacts,
    stops_by: Option<Instant>,
    asked: Option<Instant>,
) {
    let ctx = ctx.clone();
    waits.spawn(async move {
        let gone = evict::wait_gone(&ctx, &pod, stops_by).await;
        (pod, gone, asked.map(|a| a.elapsed()))
    });
}

/// The plan for the listed pods, with which of them serve traffic through a Service.
async fn survey(ctx: &Ctx, node: &str, listed: &[Pod]) -> PodPlan {
    let own = ctx.cfg.own_pod.as_ref();
    let serving = if ctx.cfg.lb_drain_delay.is_zero() && ctx.cfg.target_health.is_none() {
        hold::Serving::Known(HashSet::new())
    } else {
        hold::endpoints_on(ctx, node).await
    };
    plan_drain(
        listed
            .iter()
            .map(facts_of)
            .map(|mut p| {
                p.serves_traffic = serving.includes(&p.uid);
                p
            })
            .collect(),
        own.map(|(n, p)| (n.as_str(), p.as_str())),
    )
}

/// Starts reserving the room of the pods the plan moves, when the drain reserves.
fn reserve_for(
    ctx: &Arc<Ctx>,
    node: &str,
    plan: &PodPlan,
    listed: &[Pod],
) -> Option<hold::AbortOnDrop> {
    let r = ctx.cfg.reserve.clone()?;
    if ctx.cfg.off.is_off(crate::access::Feature::Reserve) {
        return None;
    }
    let moving: HashSet<&str> = plan.to_evict().map(|p| p.uid.as_str()).collect();
    let leaving: Vec<Pod> = listed
        .iter()
        .filter(|p| {
            p.metadata
                .uid
                .as_deref()
                .is_some_and(|u| moving.contains(u))
        })
        .cloned()
        .collect();
    let (client, node, progress) = (ctx.client.clone(), node.to_owned(), ctx.progress.clone());
    // The keeper watches closely from now: a create sent may be answered after this drain
    // ended and aborted this task, with nobody left to ring the bell below (seed 64079).
    if !leaving.is_empty() {
        r.asked.notify_one();
    }
    Some(hold::AbortOnDrop(tokio::spawn(async move {
        let said = match crate::reserve::reserve(&client, &node, &leaving, &r.config).await {
            Ok(done) if done == crate::reserve::Reserved::default() => return,
            Ok(done) => {
                if done.made > 0 {
                    r.asked.notify_one();
                }
                Progress::Reserved {
                    what: done.summary(),
                    warning: done.failed > 0,
                }
            }
            Err(e) => Progress::Reserved {
                what: format!("no placeholders reserved: {e}"),
                warning: true,
            },
        };
        let _ = progress.send(said);
    })))
}

/// Deployments that asked for a surge are raised now; their pods wait for the new replicas.
/// Returns the surged ones, and for each pod uid the index of its surged Deployment.
async fn surge_up(ctx: &Ctx, plan: &PodPlan) -> (Vec<Surged>, HashMap<String, usize>) {
    if ctx.cfg.off.is_off(crate::access::Feature::Surge) {
        return Default::default();
    }
    let evictable: Vec<&PodFacts> = plan.to_evict().collect();
    let prepared = match tokio::time::timeout(
        ctx.cfg.api_timeout,
        crate::surge::prepare(
            &ctx.client,
            &evictable,
            &ctx.cfg.surge_selector,
            ctx.cfg.api_timeout,
        ),
    )
    .await
    {
        Ok(p) => p,
        Err(_) => {
            tracing::warn!("reading the pods' Deployments for a surge took too long; no surge");
            Vec::new()
        }
    };
    let mut surged: Vec<Surged> = Vec::new();
    let mut surge_of: HashMap<String, usize> = HashMap::new();
    for (outcome, uids) in prepared {
        match outcome {
            crate::surge::Prepared::Surged(s) => {
                ctx.say(Progress::Surge {
                    workload: s.name(),
                    what: format!(
                        "replicas raised from {} to {} before its {} pod(s) here are evicted",
                        s.restore_to,
                        s.ready_at,
                        uids.len()
                    ),
                    warning: false,
                });
                for uid in uids {
                    surge_of.insert(uid, surged.len());
                }
                surged.push(s);
            }
            crate::surge::Prepared::Skipped { workload, why } => ctx.say(Progress::Surge {
                workload,
                what: format!("not surged: {why}"),
                warning: true,
            }),
        }
    }
    (surged, surge_of)
}

/// Says what the drain will do: the plan, the pods it leaves, and what evicting some costs.
fn say_plan(ctx: &Ctx, plan: &PodPlan, listed: &[Pod]) {
    ctx.say(Progress::Planned {
        evict: plan.to_evict().count(),
        terminating: plan.terminating.len(),
        skipped: plan.skipped.len(),
    });
    for (p, reason) in &plan.skipped {
        ctx.say(Progress::Skipped {
            pod: pod_ref(p),
            reason: *reason,
        });
    }
    for p in listed.iter().map(facts_of) {
        if let Some(value) = p.invalid_choice.clone() {
            ctx.say(Progress::InvalidChoice {
                pod: pod_ref(&p),
                value,
            });
        }
    }
    for p in plan.to_evict() {
        if p.unmanaged() {
            ctx.say(Progress::Warning {
                pod: pod_ref(p),
                reason: "no controller will recreate this pod".into(),
            });
        }
        if p.empty_dir {
            ctx.say(Progress::Warning {
                pod: pod_ref(p),
                reason: "its emptyDir data is lost".into(),
            });
        }
    }
}

/// What asking pods to leave shares across them.
struct Asks {
    started: Instant,
    /// The load balancers' word, when they are asked.
    gate: Option<watch::Receiver<crate::lb::Gate>>,
    surged: Arc<Vec<Surged>>,
    surge_of: HashMap<String, usize>,
    /// Budget refusals met, counted for the report.
    refusals: Arc<AtomicU32>,
}

/// Asks every pod of the plan to leave: `at-deadline` pods at their own moment, the tiers in
/// order. Each tier starts once the one before is asked, or at the latest at its share of the
/// time: a budget holding one tier back never eats the next tiers' time. Pods asked go to
/// `waits`; true when the drain was stopped.
async fn ask_to_leave(
    ctx: &Arc<Ctx>,
    plan: PodPlan,
    asks: &Asks,
    report: &mut DrainReport,
    waits: &mut Waits,
) -> bool {
    let started = asks.started;
    let longest = plan.to_evict().map(|p| p.grace_seconds).max().unwrap_or(0);
    let tier_count = plan.tiers.len();
    // The latest start of tier `k`, from the target as it stands now: a notice that moves the
    // deadline earlier (an Auto Scaling termination joining a spot drain whose time could not
    // be read, the soak's seed 61986) brings the later tiers forward with it.
    let due_of = |k: usize| {
        let time_left = (*ctx.target.borrow())
            .map(|t| t.grace_until(started).saturating_duration_since(started))
            .unwrap_or_default();
        let starts = tier_starts(tier_count, time_left, &ctx.cfg.policy, longest);
        started + starts.get(k).copied().unwrap_or_default()
    };
    let mut moved = ctx.target.clone();
    let limit = Arc::new(Semaphore::new(ctx.cfg.max_concurrent.max(1)));
    // Each task: the pod, how it left, when, and whether it belongs to a tier.
    let mut tasks = JoinSet::new();
    // `at-deadline` pods wait for their moment on their own, from the start.
    for pod in plan.at_deadline {
        let (ctx, limit, refusals) = (ctx.clone(), limit.clone(), asks.refusals.clone());
        tasks.spawn(async move {
            let outcome = evict::leave_at_deadline(&ctx, &pod, &limit, &refusals).await;
            (pod, outcome, Instant::now(), false)
        });
    }
    let mut tiers = plan.tiers.into_iter().enumerate().peekable();
    let mut stopped = false;
    // Pods of the started tiers not yet asked to leave.
    let mut unasked = 0usize;
    loop {
        // The next tier starts when the ones before are all asked, or when its time comes.
        let due = tiers.peek().map(|(k, _)| due_of(*k));
        if let Some(due) = due
            && !stopped
            && (unasked == 0 || Instant::now() >= due)
        {
            let (_, tier) = tiers.next().expect("peeked");
            for pod in tier {
                unasked += 1;
                let (ctx, limit, refusals) = (ctx.clone(), limit.clone(), asks.refusals.clone());
                let surge = asks
                    .surge_of
                    .get(&pod.uid)
                    .map(|i| (asks.surged.clone(), *i));
                let gate = asks.gate.clone();
                tasks.spawn(async move {
                    // A surged Deployment's pod waits for its new replicas to be Ready, never
                    // past its last moment.
                    if let Some((surged, i)) = surge
                        && !hold::hold_for_surge(&ctx, &pod, &surged[i]).await
                    {
                        return (pod, Left::Stopped, Instant::now(), true);
                    }
                    // An endpoint of a Service waits for the load balancers first, never
                    // past its last moment.
                    if pod.serves_traffic
                        && !hold::hold_for_load_balancers(&ctx, &pod, started, gate).await
                    {
                        return (pod, Left::Stopped, Instant::now(), true);
                    }
                    let _slot = limit.acquire_owned().await;
                    let outcome = evict::leave(&ctx, &pod, &refusals).await;
                    (pod, outcome, Instant::now(), true)
                });
            }
            continue;
        }
        let joined = match due.filter(|_| !stopped) {
            Some(due) => tokio::select! {
                j = tasks.join_next() => j,
                _ = tokio::time::sleep_until(due) => continue,
                // A moved target moves the next tier's time; a closed one changes nothing.
                Ok(()) = moved.changed() => continue,
            },
            None => tasks.join_next().await,
        };
        let Some(joined) = joined else { break };
        let Ok((pod, outcome, at, tiered)) = joined else {
            continue;
        };
        if tiered {
            unasked = unasked.saturating_sub(1);
        }
        stopped |= count(ctx, report, waits, pod, outcome, at);
    }
    stopped
}

/// Counts how one pod left in the report; true when the drain was stopped.
fn count(
    ctx: &Arc<Ctx>,
    report: &mut DrainReport,
    waits: &mut Waits,
    pod: PodFacts,
    outcome: Left,
    at: Instant,
) -> bool {
    let by = |g: i64| Some(at + Duration::from_secs(g.max(0) as u64));
    if matches!(outcome, Left::Evicted(_) | Left::Deleted(_))
        && pod.owner_kind.as_deref() == Some("ReplicaSet")
        && let Some(rs) = &pod.owner_name
    {
        let owner = (pod.namespace.clone(), rs.clone());
        if !report.owners.contains(&owner) {
            report.owners.push(owner);
        }
    }
    match outcome {
        Left::Evicted(g) => {
            report.evicted += 1;
            watch_leaving(ctx, waits, pod, by(g), Some(at));
        }
        Left::Deleted(g) => {
            report.deleted_at_deadline += 1;
            watch_leaving(ctx, waits, pod, by(g), Some(at));
        }
        Left::AlreadyGone => ctx.say(Progress::Gone { pod: pod_ref(&pod) }),
        Left::Failed => report.remaining.push(pod_ref(&pod)),
        Left::Stopped => return true,
    }
    false
}

/// Done when each pod is gone (404) or replaced (a new UID under the same name); true when
/// the drain was stopped meanwhile.
async fn wait_all_gone(ctx: &Ctx, mut waits: Waits, report: &mut DrainReport) -> bool {
    let mut stopped = false;
    while let Some(joined) = waits.join_next().await {
        let Ok((pod, gone, took)) = joined else {
            continue;
        };
        match gone {
            Some(true) => {
                if let Some(took) = took {
                    report.exits.push(took);
                    if report.slowest.as_ref().is_none_or(|(_, t)| took > *t) {
                        report.slowest = Some((pod_ref(&pod), took));
                    }
                }
                ctx.say(Progress::Gone { pod: pod_ref(&pod) })
            }
            Some(false) => report.remaining.push(pod_ref(&pod)),
            None => stopped = true,
        }
    }
    stopped
}

/// The surged Deployments' replicas back to what they were.
async fn restore(ctx: &Ctx, surged: &[Surged]) {
    for s in surged {
        match crate::surge::restore(&ctx.client, s, ctx.cfg.api_timeout).await {
            Ok(()) => ctx.say(Progress::Surge {
                workload: s.name(),
                what: format!("replicas restored to {}", s.restore_to),
                warning: false,
            }),
            Err(e) => ctx.say(Progress::Surge {
                workload: s.name(),
                what: format!(
                    "replicas not restored to {} ({e}); the next drain, or a person, restores them",
                    s.restore_to
                ),
                warning: true,
            }),
        }
    }
}

fn finish(mut report: DrainReport, ctx: &Ctx, started: Instant) -> DrainReport {
    report.took = started.elapsed();
    let now = Instant::now();
    let deadline = (*ctx.target.borrow()).map_or(now, |t| t.ends());
    report.slack_ms = if now <= deadline {
        deadline.duration_since(now).as_millis() as i64
    } else {
        -(now.duration_since(deadline).as_millis() as i64)
    };
    report
}

/// The node's pods, retried while the API fails and time is left; `None` when the target
/// went away meanwhile.
async fn list_with_retries(
    ctx: &Ctx,
    all: &Api<Pod>,
    node: &str,
) -> Result<Option<Vec<Pod>>, NodeError> {
    let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let mut rx = ctx.target.clone();
    let mut backoff = Backoff::new(PDB_RETRY_BASE, PDB_RETRY_CAP);
    loop {
        let Some(t) = *rx.borrow_and_update() else {
            return Ok(None);
        };
        let end = ctx.gives_up(&t);
        let Some(result) = ctx.call(&mut rx, end, "list pods", all.list(&params)).await else {
            continue;
        };
        match result {
            Ok(list) => return Ok(Some(list.items)),
            Err(e) if e.is_retryable() && Instant::now() + backoff.peek() < end => {
                tracing::warn!(error = %e, "listing the node's pods failed; retrying");
                if !pause(&mut rx, Instant::now() + backoff.wait()).await {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
}
