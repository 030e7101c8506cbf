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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use serde_json::json;
use sih_core::{
    DrainPolicy, EVICTION_ANNOTATION, EvictionChoice, PodFacts, plan_drain, tier_starts,
};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::{ApiClass, NodeError, classify};
pub use crate::progress::{DrainEnd, DrainReport, PodRef, Progress};

/// First wait after a budget refusal; doubles up to the cap, with ±20 % jitter so many drains
/// do not retry in lockstep.
const PDB_RETRY_BASE: Duration = Duration::from_millis(250);
/// Short enough that a pod whose replacement became Ready leaves within a couple of seconds.
const PDB_RETRY_CAP: Duration = Duration::from_secs(2);
/// How often a leaving pod is checked for being gone.
const GONE_POLL: Duration = Duration::from_millis(250);

/// A call never gets less than this, however near the next decision is.
const MIN_CALL: Duration = Duration::from_millis(200);
/// A drain whose deadline has already passed (a notice that came late: the instance is
/// stopping now) still gets this long from its start to get the pods out, with 1 s of grace.
pub const LATE_WINDOW: Duration = Duration::from_secs(15);

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
        }
    }
}

/// What the drain plans against, as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Grace periods fit before this.
    pub deadline: Instant,
    /// The instance is gone at this moment whatever happens: a pod not yet out (its budget
    /// refuses, its evictions fail) is deleted in time for its grace to fit before it.
    pub hard: Option<Instant>,
}

impl Target {
    /// The drain gives up at this moment.
    pub fn ends(&self) -> Instant {
        self.hard.map_or(self.deadline, |h| h.max(self.deadline))
    }

    /// What grace periods must fit before, at `now`: the deadline, or once it has passed the
    /// hard deadline still ahead.
    pub fn grace_until(&self, now: Instant) -> Instant {
        if now < self.deadline {
            self.deadline
        } else {
            self.hard.unwrap_or(self.deadline)
        }
    }

    /// A fixed target (a drain by hand, tests): `hard` makes the deadline hard.
    pub fn fixed(deadline: Instant, hard: bool) -> watch::Receiver<Option<Target>> {
        watch::channel(Some(Target {
            deadline,
            hard: hard.then_some(deadline),
        }))
        .1
    }
}

/// When a drain gives up on its target as it moves. An instance whose hard deadline had
/// already passed when the target was set (a notice that came late: the instance is stopping
/// now) still gets `LATE_WINDOW` from that moment: trying costs nothing on a machine going away.
/// A target that merely reaches its deadline as time passes gets no more; nor does a soft
/// deadline, which is a promise to whoever set it.
#[derive(Debug, Default)]
pub struct GiveUp {
    seen: Option<Target>,
    floor: Option<Instant>,
}

impl GiveUp {
    pub fn at(&mut self, t: &Target, now: Instant) -> Instant {
        if self.seen != Some(*t) {
            self.seen = Some(*t);
            if t.hard.is_some() && t.ends() <= now + Duration::from_secs(1) {
                self.floor = Some(self.floor.unwrap_or(now + LATE_WINDOW));
            }
        }
        match (t.hard, self.floor) {
            (Some(_), Some(floor)) => t.ends().max(floor),
            _ => t.ends(),
        }
    }
}

/// What the drain needs to know about a pod, read off its object.
pub fn facts_of(p: &Pod) -> PodFacts {
    let meta = &p.metadata;
    let spec = p.spec.as_ref();
    let owner = meta
        .owner_references
        .as_ref()
        .and_then(|o| o.iter().find(|r| r.controller == Some(true)));
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

/// How one pod left (or did not).
enum Left {
    /// Asked to leave with this much grace (by eviction, or deletion at the deadline).
    Evicted(i64),
    Deleted(i64),
    AlreadyGone,
    Failed,
    Stopped,
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
/// Progress goes to `progress`.
pub async fn drain(
    client: kube::Client,
    node: &str,
    target: watch::Receiver<Option<Target>>,
    cfg: DrainConfig,
    progress: mpsc::UnboundedSender<Progress>,
) -> Result<DrainEnd, NodeError> {
    let started = Instant::now();
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
    let own = ctx.cfg.own_pod.clone();
    let serving = if ctx.cfg.lb_drain_delay.is_zero() && ctx.cfg.target_health.is_none() {
        Serving::Known(HashSet::new())
    } else {
        endpoints_on(&ctx, node).await
    };
    let plan = plan_drain(
        listed
            .iter()
            .map(facts_of)
            .map(|mut p| {
                p.serves_traffic = serving.includes(&p.uid);
                p
            })
            .collect(),
        own.as_ref().map(|(n, p)| (n.as_str(), p.as_str())),
    );
    // Endpoints wait on the load balancers' word, asked by a task of its own that ends with
    // the drain.
    let (gate_tx, gate) = watch::channel(crate::lb::Gate::Waiting);
    let lb_watch = match &ctx.cfg.target_health {
        Some(health) if plan.to_evict().any(|p| p.serves_traffic) => {
            Some(AbortOnDrop(tokio::spawn(crate::lb::watch_targets(
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
    let gate = lb_watch.as_ref().map(|_| gate);
    // Deployments that asked for a surge are raised now; their pods wait for the new replicas.
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
    let mut surged: Vec<crate::surge::Surged> = Vec::new();
    let mut surge_of: std::collections::HashMap<String, usize> = Default::default();
    for (outcome, uids) in prepared {
        match outcome {
            crate::surge::Outcome::Surged(s) => {
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
            crate::surge::Outcome::Skipped { workload, why } => ctx.say(Progress::Surge {
                workload,
                what: format!("not surged: {why}"),
                warning: true,
            }),
        }
    }
    let surged = Arc::new(surged);
    report.already_leaving = plan.terminating.len();
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

    let refusals = Arc::new(std::sync::atomic::AtomicU32::new(0));
    // Pods on their way out, with when their grace runs out. A pod found terminating (a drain
    // resumed after a restart) runs out at its deletion timestamp.
    let stopping_by = |p: &PodFacts| {
        listed
            .iter()
            .find(|l| l.metadata.uid.as_deref() == Some(p.uid.as_str()))
            .and_then(|l| l.metadata.deletion_timestamp.as_ref())
            .map(|t| instant_of(t.0))
    };
    // Each with when its grace runs out and (for pods this drain asked) when it was asked.
    let mut leaving: Vec<(PodFacts, Option<Instant>, Option<Instant>)> = plan
        .terminating
        .iter()
        .cloned()
        .map(|p| {
            let by = stopping_by(&p);
            (p, by, None)
        })
        .collect();
    let mut stopped = false;
    // Each tier starts once the one before is evicted, or at the latest at its share of the
    // time: a budget holding one tier back never eats the next tiers' time.
    let time_left = (*ctx.target.borrow())
        .map(|t| t.grace_until(started).saturating_duration_since(started))
        .unwrap_or_default();
    let longest = plan.to_evict().map(|p| p.grace_seconds).max().unwrap_or(0);
    let starts = tier_starts(plan.tiers.len(), time_left, &ctx.cfg.policy, longest);
    let limit = Arc::new(Semaphore::new(ctx.cfg.max_concurrent.max(1)));
    // Each task: the pod, how it left, when, and whether it belongs to a tier.
    let mut tasks = JoinSet::new();
    // `at-deadline` pods wait for their moment on their own, from the start.
    for pod in plan.at_deadline {
        let (ctx, limit, refusals) = (ctx.clone(), limit.clone(), refusals.clone());
        tasks.spawn(async move {
            let outcome = leave_at_deadline(&ctx, &pod, &limit, &refusals).await;
            (pod, outcome, Instant::now(), false)
        });
    }
    let mut tiers = plan.tiers.into_iter().zip(starts).peekable();
    // Pods of the started tiers not yet asked to leave.
    let mut unasked = 0usize;
    loop {
        // The next tier starts when the ones before are all asked, or when its time comes.
        let due = tiers.peek().map(|(_, at)| started + *at);
        if let Some(due) = due
            && !stopped
            && (unasked == 0 || Instant::now() >= due)
        {
            let (tier, _) = tiers.next().expect("peeked");
            for pod in tier {
                unasked += 1;
                let (ctx, limit, refusals) = (ctx.clone(), limit.clone(), refusals.clone());
                let surge = surge_of.get(&pod.uid).map(|i| (surged.clone(), *i));
                let gate = gate.clone();
                tasks.spawn(async move {
                    // A surged Deployment's pod waits for its new replicas to be Ready, never
                    // past its last moment.
                    if let Some((surged, i)) = surge
                        && !hold_for_surge(&ctx, &pod, &surged[i]).await
                    {
                        return (pod, Left::Stopped, Instant::now(), true);
                    }
                    // An endpoint of a Service waits for the load balancers first, never
                    // past its last moment.
                    if pod.serves_traffic
                        && !hold_for_load_balancers(&ctx, &pod, started, gate).await
                    {
                        return (pod, Left::Stopped, Instant::now(), true);
                    }
                    let _slot = limit.acquire_owned().await;
                    let outcome = leave(&ctx, &pod, &refusals).await;
                    (pod, outcome, Instant::now(), true)
                });
            }
            continue;
        }
        let joined = match due.filter(|_| !stopped) {
            Some(due) => tokio::select! {
                j = tasks.join_next() => j,
                _ = tokio::time::sleep_until(due) => continue,
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
                leaving.push((pod, by(g), Some(at)));
            }
            Left::Deleted(g) => {
                report.deleted_at_deadline += 1;
                leaving.push((pod, by(g), Some(at)));
            }
            Left::AlreadyGone => ctx.say(Progress::Gone { pod: pod_ref(&pod) }),
            Left::Failed => report.remaining.push(pod_ref(&pod)),
            Left::Stopped => stopped = true,
        }
    }

    // Done when each pod is gone (404) or replaced (a new UID under the same name).
    let mut waits = JoinSet::new();
    for (pod, stops_by, asked) in leaving {
        let ctx = ctx.clone();
        waits.spawn(async move {
            let gone = wait_gone(&ctx, &pod, stops_by).await;
            (pod, gone, asked.map(|a| a.elapsed()))
        });
    }
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
    drop(lb_watch);
    // The surge is over once the pods are gone (or the drain stopped): counts restored.
    for s in surged.iter() {
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
    report.budget_refusals = refusals.load(std::sync::atomic::Ordering::Relaxed);
    let report = finish(report, &ctx, started);
    Ok(if stopped || ctx.target.borrow().is_none() {
        DrainEnd::Stopped(report)
    } else {
        DrainEnd::Finished(report)
    })
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
    let mut wait = PDB_RETRY_BASE;
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
            Err(e) if e.is_retryable() && Instant::now() + wait < end => {
                tracing::warn!(error = %e, "listing the node's pods failed; retrying");
                if !pause(&mut rx, Instant::now() + wait).await {
                    return Ok(None);
                }
                wait = (wait * 2).min(PDB_RETRY_CAP);
            }
            Err(e) => return Err(e),
        }
    }
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.8 + fastrand::f64() * 0.4)
}

fn delete_params(uid: &str, grace: i64) -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(grace.max(1) as u32),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// Gets one pod off the node: eviction, retried while a budget refuses or the API fails;
/// deletion at the last useful moment when a hard deadline comes.
async fn leave(ctx: &Ctx, pod: &PodFacts, refusals: &std::sync::atomic::AtomicU32) -> Left {
    let who = pod_ref(pod);
    let api = ctx.pods(&pod.namespace);
    let policy = ctx.cfg.policy;
    let mut rx = ctx.target.clone();
    let mut attempt = 0u32;
    let mut blocked = false;
    // The graceful path first: a deletion only ever follows an eviction that did not work.
    let mut tried_evict = false;
    let mut tried_delete = false;
    let mut last_error = String::new();
    let mut wait = PDB_RETRY_BASE;
    loop {
        let Some(t) = *rx.borrow_and_update() else {
            return Left::Stopped;
        };
        let now = Instant::now();
        let grace = policy.grace(
            pod.grace_seconds,
            t.grace_until(now).saturating_duration_since(now),
        );
        // At a hard deadline a pod not yet out is deleted once its own grace would no longer
        // fit: whatever kept it (a budget, failing or hanging evictions), the instance is going.
        // A pod whose grace is longer than the whole notice is tried once by eviction, then
        // deleted at once with all the time there is.
        let delete_at = t.hard.filter(|_| policy.delete_at_deadline).map(|h| {
            h.checked_sub(policy.delete_lead(pod.grace_seconds))
                .unwrap_or(now)
        });
        let end = ctx.gives_up(&t);
        let next_decision = delete_at.filter(|d| *d > now).unwrap_or(end);
        if tried_evict && delete_at.is_some_and(|d| now >= d) {
            tried_delete = true;
            let params = delete_params(&pod.uid, grace);
            let call = api.delete(&pod.name, &params);
            match ctx.call(&mut rx, end, "delete pod", call).await {
                None => continue,
                Some(Ok(_)) => {
                    ctx.say(Progress::DeletedAtDeadline { pod: who, grace });
                    return Left::Deleted(grace);
                }
                Some(Err(NodeError::Api(e)))
                    if matches!(classify(&e), ApiClass::NotFound | ApiClass::Conflict) =>
                {
                    return Left::AlreadyGone;
                }
                Some(Err(e)) if e.is_retryable() => last_error = e.to_string(),
                Some(Err(e)) => {
                    ctx.say(Progress::Failed {
                        pod: who,
                        reason: format!("delete at the deadline: {e}"),
                    });
                    return Left::Failed;
                }
            }
        } else {
            let eviction = json!({
                "apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": pod.name, "namespace": pod.namespace},
                "deleteOptions": {"gracePeriodSeconds": grace, "preconditions": {"uid": pod.uid}},
            });
            let post = PostParams::default();
            let call = api.create_subresource::<_, serde_json::Value>(
                "eviction", &pod.name, &post, &eviction,
            );
            tried_evict = true;
            match ctx.call(&mut rx, next_decision, "evict pod", call).await {
                None => continue,
                Some(Ok(_)) => {
                    ctx.say(Progress::Evicted { pod: who, grace });
                    return Left::Evicted(grace);
                }
                Some(Err(NodeError::Api(e))) => match classify(&e) {
                    // Gone already, or replaced by a pod with another UID: nothing to do.
                    ApiClass::NotFound | ApiClass::Conflict => return Left::AlreadyGone,
                    ApiClass::TooManyRequests => {
                        // An eviction the budget already granted (the pod is in its
                        // `disruptedPods`) whose pod was never deleted: an interrupted eviction
                        // (its answer lost on the way) leaves the budget spent on this pod for
                        // two minutes, refusing every other. Finish what the API server granted.
                        if granted_but_not_deleted(ctx, &mut rx, next_decision, pod).await {
                            let params = delete_params(&pod.uid, grace);
                            let call = api.delete(&pod.name, &params);
                            if let Some(Ok(_)) =
                                ctx.call(&mut rx, next_decision, "delete pod", call).await
                            {
                                tracing::info!(pod = %who, "its budget had granted its eviction, which never deleted it: deleted with its grace");
                                ctx.say(Progress::Evicted { pod: who, grace });
                                return Left::Evicted(grace);
                            }
                        }
                        blocked = true;
                        attempt += 1;
                        refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let message = match &e {
                            kube::Error::Api(s) => s.message.clone(),
                            other => other.to_string(),
                        };
                        if attempt == 1 || attempt.is_multiple_of(10) {
                            ctx.say(Progress::BlockedByBudget {
                                pod: who.clone(),
                                attempt,
                                message,
                            });
                        }
                    }
                    ApiClass::Transient => last_error = e.to_string(),
                    _ => {
                        ctx.say(Progress::Failed {
                            pod: who,
                            reason: e.to_string(),
                        });
                        return Left::Failed;
                    }
                },
                Some(Err(e)) if e.is_retryable() => last_error = e.to_string(),
                Some(Err(e)) => {
                    ctx.say(Progress::Failed {
                        pod: who,
                        reason: e.to_string(),
                    });
                    return Left::Failed;
                }
            }
        }
        let now = Instant::now();
        // Past the end, a pod its hard deadline says must go still gets its one deletion (a
        // notice that arrived late): the pause below ends at once and the loop deletes it.
        let deletion_due = delete_at.is_some() && !tried_delete;
        if now >= end && !deletion_due {
            let why = if blocked {
                "its PodDisruptionBudget still refused at the deadline".to_owned()
            } else {
                format!("the API kept failing until the deadline ({last_error})")
            };
            ctx.say(Progress::Failed {
                pod: who,
                reason: why,
            });
            return Left::Failed;
        }
        // Wake no later than the moment to delete, nor past the end.
        let until = (now + jittered(wait)).min(next_decision).min(end);
        if !pause(&mut rx, until).await {
            return Left::Stopped;
        }
        wait = (wait * 2).min(PDB_RETRY_CAP);
    }
}

/// Whether a budget of `pod`'s namespace lists it in `status.disruptedPods`: its eviction was
/// granted (and counted against the budget), yet the pod is still here, not being deleted. A
/// real API server records the grant before it deletes the pod; a request cut in between
/// (seen on the real control plane: an API link cut mid-drain) leaves it so for the disruption
/// controller's two minutes. Unreadable budgets (no permission, an API error) say no.
async fn granted_but_not_deleted(
    ctx: &Ctx,
    rx: &mut watch::Receiver<Option<Target>>,
    until: Instant,
    pod: &PodFacts,
) -> bool {
    let api: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(ctx.client.clone(), &pod.namespace);
    let params = ListParams::default();
    match ctx.call(rx, until, "list budgets", api.list(&params)).await {
        Some(Ok(budgets)) => budgets.items.iter().any(|b| {
            b.status
                .as_ref()
                .and_then(|s| s.disrupted_pods.as_ref())
                .is_some_and(|d| d.contains_key(&pod.name))
        }),
        _ => false,
    }
}

/// An `at-deadline` pod: left alone until the last moment its grace still fits before the
/// deadline (less the margin), then asked to leave as any other (deleted at once if its budget
/// refuses, since that moment is also its deletion's). The moment moves with the target.
async fn leave_at_deadline(
    ctx: &Ctx,
    pod: &PodFacts,
    limit: &Semaphore,
    refusals: &std::sync::atomic::AtomicU32,
) -> Left {
    if !hold(ctx, pod, None).await {
        return Left::Stopped;
    }
    let _slot = limit.acquire().await;
    leave(ctx, pod, refusals).await
}

/// The last moment `pod` can be asked to leave with its whole grace (and the margin) before
/// the target's end.
fn last_moment(ctx: &Ctx, t: &Target, pod: &PodFacts) -> Instant {
    t.ends()
        .checked_sub(ctx.cfg.policy.delete_lead(pod.grace_seconds))
        .unwrap_or_else(Instant::now)
}

/// Waits until `until` or the pod's last moment (its grace and the margin still fit before
/// the deadline), whichever comes first; the last moment moves with the target. False when
/// the target went away meanwhile.
async fn hold(ctx: &Ctx, pod: &PodFacts, until: Option<Instant>) -> bool {
    let mut rx = ctx.target.clone();
    loop {
        let Some(t) = *rx.borrow_and_update() else {
            return false;
        };
        let last = last_moment(ctx, &t, pod);
        let moment = until.map_or(last, |u| u.min(last));
        if Instant::now() >= moment {
            return true;
        }
        if !pause(&mut rx, moment).await {
            return false;
        }
    }
}

/// Waits until the load balancers no longer send the node new requests (`gate`), or
/// `--lb-drain-delay` after the drain began when they are not asked or cannot be, or the pod's
/// last moment, whichever comes first. False when the target went away meanwhile.
async fn hold_for_load_balancers(
    ctx: &Ctx,
    pod: &PodFacts,
    started: Instant,
    gate: Option<watch::Receiver<crate::lb::Gate>>,
) -> bool {
    use crate::lb::Gate;
    let delay = started + ctx.cfg.lb_drain_delay;
    let Some(mut gate) = gate else {
        return hold(ctx, pod, Some(delay)).await;
    };
    let mut rx = ctx.target.clone();
    let mut asking = true;
    loop {
        let Some(t) = *rx.borrow_and_update() else {
            return false;
        };
        let last = last_moment(ctx, &t, pod);
        let moment = match *gate.borrow_and_update() {
            Gate::Open => return true,
            Gate::Fallback => delay.min(last),
            Gate::Waiting => last,
        };
        if Instant::now() >= moment {
            return true;
        }
        tokio::select! {
            going = pause(&mut rx, moment) => if !going { return false },
            // The watcher is gone only at the drain's end, or after its last word.
            changed = gate.changed(), if asking => asking = changed.is_ok(),
        }
    }
}

/// Aborts the task when dropped: a watcher lives no longer than its drain.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits until the surged Deployment has its new replicas Ready, or the pod's last moment
/// comes (then it goes anyway, and says so). False when the target went away meanwhile.
async fn hold_for_surge(ctx: &Ctx, pod: &PodFacts, s: &crate::surge::Surged) -> bool {
    let mut rx = ctx.target.clone();
    loop {
        let Some(t) = *rx.borrow_and_update() else {
            return false;
        };
        let last = last_moment(ctx, &t, pod);
        let now = Instant::now();
        if now >= last {
            ctx.say(Progress::Surge {
                workload: s.name(),
                what: format!(
                    "its new replicas were not Ready by {}'s last moment; evicting it anyway",
                    pod_ref(pod)
                ),
                warning: true,
            });
            return true;
        }
        let limit = ctx.cfg.api_timeout.min(last - now).max(MIN_CALL);
        if crate::surge::ready(&ctx.client, s, limit).await {
            return true;
        }
        if !pause(&mut rx, (Instant::now() + GONE_POLL).min(last)).await {
            return false;
        }
    }
}

/// Which pods of a node receive traffic through a Service.
enum Serving {
    Known(HashSet<String>),
    /// The EndpointSlices could not be read: every pod is taken to be an endpoint (a wait the
    /// deadline bounds costs less than requests cut off).
    Unknown,
}

impl Serving {
    fn includes(&self, uid: &str) -> bool {
        match self {
            Self::Known(uids) => uids.contains(uid),
            Self::Unknown => true,
        }
    }
}

/// The pods on `node` that some EndpointSlice lists (ready or still serving).
async fn endpoints_on(ctx: &Ctx, node: &str) -> Serving {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let slices: Api<EndpointSlice> = Api::all(ctx.client.clone());
    let listed = crate::bounded(
        ctx.cfg.api_timeout,
        "list endpointslices",
        slices.list(&ListParams::default()),
    )
    .await;
    match listed.and_then(|r| r.map_err(NodeError::Api)) {
        Ok(list) => Serving::Known(
            list.items
                .iter()
                .flat_map(|s| &s.endpoints)
                .filter(|e| e.node_name.as_deref() == Some(node))
                .filter(|e| {
                    e.conditions
                        .as_ref()
                        .is_none_or(|c| c.ready != Some(false) || c.serving == Some(true))
                })
                .filter_map(|e| e.target_ref.as_ref().and_then(|r| r.uid.clone()))
                .collect(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the EndpointSlices; every pod waits --lb-drain-delay");
            Serving::Unknown
        }
    }
}

/// Waits until every ReplicaSet in `owners` has as many Ready replicas as it wants (the
/// evicted pods' replacements run elsewhere), polling, for at most `within`. `true` once they
/// have; `false` if they had not by then (or could not be read).
pub async fn recovered(
    client: &kube::Client,
    owners: &[(String, String)],
    timeout: Duration,
    within: Duration,
) -> bool {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    let end = Instant::now() + within;
    let mut waiting: Vec<&(String, String)> = owners.iter().collect();
    while Instant::now() < end {
        let mut still = Vec::new();
        for owner in waiting {
            let api: Api<ReplicaSet> = Api::namespaced(client.clone(), &owner.0);
            let ready = crate::bounded(timeout, "get replicaset", api.get(&owner.1))
                .await
                .ok()
                .and_then(Result::ok)
                .is_some_and(|rs| {
                    let want = rs.spec.and_then(|s| s.replicas).unwrap_or(1);
                    rs.status.and_then(|s| s.ready_replicas).unwrap_or(0) >= want
                });
            if !ready {
                still.push(owner);
            }
        }
        if still.is_empty() {
            return true;
        }
        waiting = still;
        tokio::time::sleep(GONE_POLL).await;
    }
    false
}

/// The monotonic moment of a wall-clock time.
pub fn instant_of(at: jiff::Timestamp) -> Instant {
    let left = at.duration_since(jiff::Timestamp::now());
    match Duration::try_from(left) {
        Ok(d) => Instant::now() + d,
        Err(_) => Instant::now()
            .checked_sub(Duration::try_from(-left).unwrap_or_default())
            .unwrap_or_else(Instant::now),
    }
}

/// Waits until the pod is gone or replaced: `Some(false)` when it is still there well past
/// the end (the kubelet may still be stopping it), `None` when the drain was stopped. A pod
/// whose grace runs out (`stops_by`) after what the target now allows (it tightened, or a
/// restarted drain found the pod stopping with a grace planned for a later deadline) is asked
/// again with the grace that fits.
async fn wait_gone(ctx: &Ctx, pod: &PodFacts, mut stops_by: Option<Instant>) -> Option<bool> {
    let api = ctx.pods(&pod.namespace);
    let mut rx = ctx.target.clone();
    let margin = ctx.cfg.policy.margin.max(Duration::from_secs(1));
    loop {
        let t = (*rx.borrow_and_update())?;
        let now = Instant::now();
        if let Some(by) = stops_by {
            let must_end = t.grace_until(now).checked_sub(margin).unwrap_or(now);
            let shorter = must_end.saturating_duration_since(now).as_secs().max(1);
            if by > must_end + Duration::from_secs(1) && now + Duration::from_secs(shorter + 1) < by
            {
                let params = delete_params(&pod.uid, shorter as i64);
                let call = api.delete(&pod.name, &params);
                if let Some(Ok(_)) = ctx
                    .call(&mut rx, ctx.gives_up(&t), "delete pod", call)
                    .await
                {
                    ctx.say(Progress::Hastened {
                        pod: pod_ref(pod),
                        grace: shorter as i64,
                    });
                    stops_by = Some(Instant::now() + Duration::from_secs(shorter));
                }
            }
        }
        let give_up = ctx.gives_up(&t) + Duration::from_secs(pod.grace_seconds.clamp(1, 30) as u64);
        match ctx
            .call(&mut rx, give_up, "get pod", api.get_opt(&pod.name))
            .await
        {
            Some(Ok(None)) => return Some(true),
            Some(Ok(Some(p))) if p.metadata.uid.as_deref() != Some(pod.uid.as_str()) => {
                return Some(true);
            }
            _ => {}
        }
        if Instant::now() >= give_up {
            return Some(false);
        }
        if !pause(&mut rx, Instant::now() + GONE_POLL).await {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(now: Instant, in_secs: i64, hard: bool) -> Target {
        let at = if in_secs >= 0 {
            now + Duration::from_secs(in_secs as u64)
        } else {
            now - Duration::from_secs((-in_secs) as u64)
        };
        Target {
            deadline: at,
            hard: hard.then_some(at),
        }
    }

    #[test]
    fn a_late_hard_target_gets_the_late_window_once() {
        let now = Instant::now() + Duration::from_secs(100);
        let mut g = GiveUp::default();
        let late = target(now, -5, true);
        assert_eq!(g.at(&late, now), now + LATE_WINDOW);
        // Asked again later, the window does not slide.
        assert_eq!(g.at(&late, now + Duration::from_secs(3)), now + LATE_WINDOW);
        // Another late target later keeps the first window.
        let later = target(now, -1, true);
        assert_eq!(
            g.at(&later, now + Duration::from_secs(4)),
            now + LATE_WINDOW
        );
        // A target further out than the window ends on its own.
        let far = target(now, 60, true);
        assert_eq!(g.at(&far, now + Duration::from_secs(5)), far.ends());
    }

    #[test]
    fn a_target_reaching_its_deadline_or_a_soft_one_gets_no_window() {
        let now = Instant::now() + Duration::from_secs(100);
        let mut g = GiveUp::default();
        let t = target(now, 3, true);
        assert_eq!(g.at(&t, now), t.ends());
        assert_eq!(g.at(&t, now + Duration::from_secs(10)), t.ends());
        let mut g = GiveUp::default();
        let soft = target(now, -5, false);
        assert_eq!(g.at(&soft, now), soft.ends());
    }
}
