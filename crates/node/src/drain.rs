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
//! - it reports progress as typed events, not log lines, for others to turn into logs, Events,
//!   metrics and webhook summaries.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use serde_json::json;
use sih_core::{DrainPolicy, PodFacts, SkipReason, plan_drain};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::{ApiClass, NodeError, classify};

/// First wait after a budget refusal; doubles up to the cap, with ±20 % jitter so many drains
/// do not retry in lockstep.
const PDB_RETRY_BASE: Duration = Duration::from_millis(250);
/// Short enough that a pod whose replacement became Ready leaves within a couple of seconds.
const PDB_RETRY_CAP: Duration = Duration::from_secs(2);
/// How often a leaving pod is checked for being gone.
const GONE_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct DrainConfig {
    pub policy: DrainPolicy,
    /// `--max-concurrent-evictions`.
    pub max_concurrent: usize,
    /// Our own pod `(namespace, name)`, which must keep running.
    pub own_pod: Option<(String, String)>,
    /// The instance is gone at the deadline (spot interruption, state change).
    pub hard_deadline: bool,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            policy: DrainPolicy::default(),
            max_concurrent: 50,
            own_pod: None,
            hard_deadline: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What happened during a drain, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Planned {
        evict: usize,
        terminating: usize,
        skipped: usize,
    },
    Skipped {
        pod: PodRef,
        reason: SkipReason,
    },
    /// The pod is evicted although nobody recreates it, or its emptyDir data is lost.
    Warning {
        pod: PodRef,
        reason: String,
    },
    Evicted {
        pod: PodRef,
        grace: i64,
    },
    BlockedByBudget {
        pod: PodRef,
        attempt: u32,
        message: String,
    },
    DeletedAtDeadline {
        pod: PodRef,
        grace: i64,
    },
    Gone {
        pod: PodRef,
    },
    Failed {
        pod: PodRef,
        reason: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub evicted: usize,
    pub budget_refusals: u32,
    pub deleted_at_deadline: usize,
    pub failed: Vec<(PodRef, String)>,
    /// Pods still on the node when the drain ended.
    pub remaining: Vec<PodRef>,
    pub took: Duration,
    /// Time left before the deadline when the drain ended (negative: past it).
    pub slack_ms: i64,
}

impl DrainReport {
    /// Every pod left, none failed. A drain never reports success while pods remain.
    pub fn succeeded(&self) -> bool {
        self.remaining.is_empty() && self.failed.is_empty()
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
    PodFacts {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        owner_kind: owner.map(|o| o.kind.clone()),
        mirror: meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror")),
        terminal: matches!(phase, Some("Succeeded" | "Failed")),
        terminating: meta.deletion_timestamp.is_some(),
        critical: matches!(class, "system-node-critical" | "system-cluster-critical"),
        grace_seconds: spec
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30),
        empty_dir: spec
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|v| v.iter().any(|v| v.empty_dir.is_some())),
    }
}

fn pod_ref(p: &PodFacts) -> PodRef {
    PodRef {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
    }
}

/// How one pod left (or did not).
enum Left {
    Evicted,
    Deleted,
    AlreadyGone,
    Failed,
}

struct Ctx {
    client: kube::Client,
    deadline: Instant,
    cfg: DrainConfig,
    progress: mpsc::UnboundedSender<Progress>,
}

impl Ctx {
    fn say(&self, p: Progress) {
        // Nobody listening is fine: the report still says everything.
        let _ = self.progress.send(p);
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }
}

/// Drains `node` so that every pod has left before `deadline`. Progress goes to `progress`.
pub async fn drain(
    client: kube::Client,
    node: &str,
    deadline: Instant,
    cfg: DrainConfig,
    progress: mpsc::UnboundedSender<Progress>,
) -> Result<DrainReport, NodeError> {
    let started = Instant::now();
    let all: Api<Pod> = Api::all(client.clone());
    let listed = list_with_retries(&all, node, deadline).await?;
    let own = cfg.own_pod.clone();
    let plan = plan_drain(
        listed.iter().map(facts_of).collect(),
        own.as_ref().map(|(n, p)| (n.as_str(), p.as_str())),
    );
    let ctx = Arc::new(Ctx {
        client,
        deadline,
        cfg,
        progress,
    });
    ctx.say(Progress::Planned {
        evict: plan.first.len() + plan.last.len(),
        terminating: plan.terminating.len(),
        skipped: plan.skipped.len(),
    });
    for (p, reason) in &plan.skipped {
        ctx.say(Progress::Skipped {
            pod: pod_ref(p),
            reason: *reason,
        });
    }
    for p in plan.first.iter().chain(&plan.last) {
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

    let mut report = DrainReport::default();
    let refusals = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut leaving: Vec<PodFacts> = plan.terminating.clone();
    for tier in [plan.first, plan.last] {
        let limit = Arc::new(Semaphore::new(ctx.cfg.max_concurrent.max(1)));
        let mut tasks = JoinSet::new();
        for pod in tier {
            let (ctx, limit, refusals) = (ctx.clone(), limit.clone(), refusals.clone());
            tasks.spawn(async move {
                let _slot = limit.acquire_owned().await;
                let outcome = leave(&ctx, &pod, &refusals).await;
                (pod, outcome)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((pod, outcome)) = joined else { continue };
            match outcome {
                Left::Evicted => {
                    report.evicted += 1;
                    leaving.push(pod);
                }
                Left::Deleted => {
                    report.deleted_at_deadline += 1;
                    leaving.push(pod);
                }
                Left::AlreadyGone => ctx.say(Progress::Gone { pod: pod_ref(&pod) }),
                Left::Failed => report.remaining.push(pod_ref(&pod)),
            }
        }
    }

    // Done when each pod is gone (404) or replaced (a new UID under the same name).
    let mut waits = JoinSet::new();
    for pod in leaving {
        let ctx = ctx.clone();
        waits.spawn(async move {
            let gone = wait_gone(&ctx, &pod).await;
            (pod, gone)
        });
    }
    while let Some(joined) = waits.join_next().await {
        let Ok((pod, gone)) = joined else { continue };
        if gone {
            ctx.say(Progress::Gone { pod: pod_ref(&pod) });
        } else {
            report.remaining.push(pod_ref(&pod));
        }
    }
    report.budget_refusals = refusals.load(std::sync::atomic::Ordering::Relaxed);
    report.took = started.elapsed();
    let now = Instant::now();
    report.slack_ms = if now <= deadline {
        deadline.duration_since(now).as_millis() as i64
    } else {
        -(now.duration_since(deadline).as_millis() as i64)
    };
    Ok(report)
}

async fn list_with_retries(
    all: &Api<Pod>,
    node: &str,
    deadline: Instant,
) -> Result<Vec<Pod>, NodeError> {
    let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let mut wait = PDB_RETRY_BASE;
    loop {
        match all.list(&params).await {
            Ok(list) => return Ok(list.items),
            Err(e) if classify(&e) == ApiClass::Transient && Instant::now() + wait < deadline => {
                tracing::warn!(error = %e, "listing the node's pods failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(PDB_RETRY_CAP);
            }
            Err(e) => return Err(NodeError::Api(e)),
        }
    }
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.8 + fastrand::f64() * 0.4)
}

/// Gets one pod off the node: eviction, retried while a budget refuses, deletion at the last
/// useful moment when the deadline is hard.
async fn leave(ctx: &Ctx, pod: &PodFacts, refusals: &std::sync::atomic::AtomicU32) -> Left {
    let who = pod_ref(pod);
    let api = ctx.pods(&pod.namespace);
    let policy = ctx.cfg.policy;
    let may_delete = ctx.cfg.hard_deadline && policy.delete_at_deadline;
    let delete_at = ctx
        .deadline
        .checked_sub(policy.delete_lead(pod.grace_seconds))
        .unwrap_or_else(Instant::now);
    let mut attempt = 0u32;
    let mut blocked = false;
    let mut tried_delete = false;
    let mut wait = PDB_RETRY_BASE;
    loop {
        let now = Instant::now();
        let left = ctx.deadline.saturating_duration_since(now);
        let grace = policy.grace(pod.grace_seconds, left);
        if blocked && may_delete && now >= delete_at {
            tried_delete = true;
            let params = DeleteParams {
                grace_period_seconds: Some(grace as u32),
                preconditions: Some(Preconditions {
                    uid: Some(pod.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&pod.name, &params).await {
                Ok(_) => {
                    ctx.say(Progress::DeletedAtDeadline { pod: who, grace });
                    return Left::Deleted;
                }
                Err(e) => match classify(&e) {
                    ApiClass::NotFound | ApiClass::Conflict => return Left::AlreadyGone,
                    ApiClass::Transient if now < ctx.deadline => {}
                    _ => {
                        ctx.say(Progress::Failed {
                            pod: who,
                            reason: format!("delete at the deadline: {e}"),
                        });
                        return Left::Failed;
                    }
                },
            }
        } else {
            let eviction = json!({
                "apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": pod.name, "namespace": pod.namespace},
                "deleteOptions": {"gracePeriodSeconds": grace, "preconditions": {"uid": pod.uid}},
            });
            match api
                .create_subresource::<_, serde_json::Value>(
                    "eviction",
                    &pod.name,
                    &PostParams::default(),
                    &eviction,
                )
                .await
            {
                Ok(_) => {
                    ctx.say(Progress::Evicted { pod: who, grace });
                    return Left::Evicted;
                }
                Err(e) => match classify(&e) {
                    // Gone already, or replaced by a pod with another UID: nothing to do.
                    ApiClass::NotFound | ApiClass::Conflict => return Left::AlreadyGone,
                    ApiClass::TooManyRequests => {
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
                    ApiClass::Transient => {}
                    _ => {
                        ctx.say(Progress::Failed {
                            pod: who,
                            reason: e.to_string(),
                        });
                        return Left::Failed;
                    }
                },
            }
        }
        let now = Instant::now();
        // Past the deadline a pod its budget protects still gets its one deletion (a notice
        // that arrived late): the sleep below ends at once and the loop deletes it.
        let deletion_due = blocked && may_delete && !tried_delete;
        if now >= ctx.deadline && !deletion_due {
            let why = if blocked {
                "its PodDisruptionBudget still refused at the deadline"
            } else {
                "the API kept failing until the deadline"
            };
            ctx.say(Progress::Failed {
                pod: who,
                reason: why.into(),
            });
            return Left::Failed;
        }
        // Wake no later than the moment to delete, nor past the deadline.
        let mut until = now + jittered(wait);
        if blocked && may_delete && delete_at > now {
            until = until.min(delete_at);
        }
        tokio::time::sleep_until(until.min(ctx.deadline)).await;
        wait = (wait * 2).min(PDB_RETRY_CAP);
    }
}

/// Waits until the pod is gone or replaced; false when it is still there at the deadline plus
/// its grace period (the kubelet may still be stopping it).
async fn wait_gone(ctx: &Ctx, pod: &PodFacts) -> bool {
    let api = ctx.pods(&pod.namespace);
    let give_up = ctx.deadline + Duration::from_secs(pod.grace_seconds.clamp(1, 30) as u64);
    loop {
        match api.get_opt(&pod.name).await {
            Ok(None) => return true,
            Ok(Some(p)) if p.metadata.uid.as_deref() != Some(pod.uid.as_str()) => return true,
            _ => {}
        }
        if Instant::now() >= give_up {
            return false;
        }
        tokio::time::sleep(GONE_POLL).await;
    }
}
