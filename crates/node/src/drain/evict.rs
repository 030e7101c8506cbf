//! How one pod leaves: by eviction, retried while its budget refuses or the API fails; by
//! deletion at the last useful moment when a hard deadline comes (the choice between them is
//! `sih_core::leaving`'s); then the wait until it is gone, hastened if the target tightens.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use serde_json::json;
use sih_core::{Backoff, LeaveStep, Leaving, PodFacts};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::hold::hold;
use super::{Ctx, GONE_POLL, PDB_RETRY_BASE, PDB_RETRY_CAP, Target, pause, pod_ref};
use crate::error::{ApiClass, NodeError, classify};
use crate::progress::{PodRef, Progress};

/// How one pod left (or did not).
pub(super) enum Left {
    /// Asked to leave with this much grace (by eviction, or deletion at the deadline).
    Evicted(i64),
    Deleted(i64),
    AlreadyGone,
    Failed,
    Stopped,
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
pub(super) async fn leave(ctx: &Ctx, pod: &PodFacts, refusals: &AtomicU32) -> Left {
    let who = pod_ref(pod);
    let policy = ctx.cfg.policy;
    let mut rx = ctx.target.clone();
    let mut attempt = 0u32;
    let mut blocked = false;
    // Which ways were tried: the decision between them is `sih_core::leaving`'s.
    let mut leaving = Leaving::default();
    let mut last_error = String::new();
    let mut backoff = Backoff::new(PDB_RETRY_BASE, PDB_RETRY_CAP).jittered();
    loop {
        let Some(t) = *rx.borrow_and_update() else {
            return Left::Stopped;
        };
        let now = Instant::now();
        let grace = policy.grace(
            pod.grace_seconds,
            t.grace_until(now).saturating_duration_since(now),
        );
        let until_hard = t.hard.map(|h| h.saturating_duration_since(now));
        let end = ctx.gives_up(&t);
        let step = leaving.next(
            &policy,
            pod.grace_seconds,
            until_hard,
            end.saturating_duration_since(now),
        );
        let next_decision = match step {
            LeaveStep::Evict { decide_within } => now + decide_within,
            LeaveStep::Delete => end,
        };
        let ask = Ask {
            ctx,
            pod,
            who: &who,
            grace,
        };
        let tried = if step == LeaveStep::Delete {
            leaving.tried_delete = true;
            ask.delete(&mut rx, end).await
        } else {
            leaving.tried_evict = true;
            ask.evict(&mut rx, next_decision).await
        };
        match tried {
            Tried::Ended(left) => return left,
            Tried::Changed => continue,
            Tried::Refused(message) => {
                blocked = true;
                attempt += 1;
                refusals.fetch_add(1, Ordering::Relaxed);
                if attempt == 1 || attempt.is_multiple_of(10) {
                    ctx.say(Progress::BlockedByBudget {
                        pod: who.clone(),
                        attempt,
                        message,
                    });
                }
            }
            Tried::Failed(error) => last_error = error,
        }
        let now = Instant::now();
        // Past the end, a pod its hard deadline says must go still gets its one deletion (a
        // notice that arrived late): the pause below ends at once and the loop deletes it.
        if leaving.out_of_time(&policy, until_hard, end.saturating_duration_since(now)) {
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
        let until = (now + backoff.wait()).min(next_decision).min(end);
        if !pause(&mut rx, until).await {
            return Left::Stopped;
        }
    }
}

/// How one try to get a pod off went.
enum Tried {
    /// It left, was gone already, or cannot leave: the answer.
    Ended(Left),
    /// The target changed during the call: decide again at once.
    Changed,
    /// Its budget refused (the API server's message).
    Refused(String),
    /// The API failed in a way worth another try.
    Failed(String),
}

/// One pod asked to leave with `grace`.
struct Ask<'a> {
    ctx: &'a Ctx,
    pod: &'a PodFacts,
    who: &'a PodRef,
    grace: i64,
}

impl Ask<'_> {
    /// It cannot leave (an error no retry cures): said, and the end of its asking.
    fn fail(&self, reason: String) -> Tried {
        self.ctx.say(Progress::Failed {
            pod: self.who.clone(),
            reason,
        });
        Tried::Ended(Left::Failed)
    }

    /// Deletes it at its last moment (its budget, or the API, kept it until then).
    async fn delete(&self, rx: &mut watch::Receiver<Option<Target>>, end: Instant) -> Tried {
        let (ctx, pod, grace) = (self.ctx, self.pod, self.grace);
        let api = ctx.pods(&pod.namespace);
        let params = delete_params(&pod.uid, grace);
        let call = api.delete(&pod.name, &params);
        match ctx.call(rx, end, "delete pod", call).await {
            None => Tried::Changed,
            Some(Ok(_)) => {
                ctx.say(Progress::DeletedAtDeadline {
                    pod: self.who.clone(),
                    grace,
                });
                Tried::Ended(Left::Deleted(grace))
            }
            Some(Err(NodeError::Api(e)))
                if matches!(classify(&e), ApiClass::NotFound | ApiClass::Conflict) =>
            {
                Tried::Ended(Left::AlreadyGone)
            }
            Some(Err(e)) if e.is_retryable() => Tried::Failed(e.to_string()),
            Some(Err(e)) => self.fail(format!("delete at the deadline: {e}")),
        }
    }

    /// Asks the Eviction API (its budget decides), waiting for the answer until `until`.
    async fn evict(&self, rx: &mut watch::Receiver<Option<Target>>, until: Instant) -> Tried {
        let (ctx, pod, grace) = (self.ctx, self.pod, self.grace);
        let api = ctx.pods(&pod.namespace);
        let eviction = json!({
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
            "deleteOptions": {"gracePeriodSeconds": grace, "preconditions": {"uid": pod.uid}},
        });
        let post = PostParams::default();
        let call =
            api.create_subresource::<_, serde_json::Value>("eviction", &pod.name, &post, &eviction);
        match ctx.call(rx, until, "evict pod", call).await {
            None => Tried::Changed,
            Some(Ok(_)) => {
                ctx.say(Progress::Evicted {
                    pod: self.who.clone(),
                    grace,
                });
                Tried::Ended(Left::Evicted(grace))
            }
            Some(Err(NodeError::Api(e))) => match classify(&e) {
                // Gone already, or replaced by a pod with another UID: nothing to do.
                ApiClass::NotFound | ApiClass::Conflict => Tried::Ended(Left::AlreadyGone),
                ApiClass::TooManyRequests => {
                    // An eviction the budget already granted (the pod is in its
                    // `disruptedPods`) whose pod was never deleted: an interrupted eviction (its
                    // answer lost on the way) leaves the budget spent on this pod for two
                    // minutes, refusing every other. Finish what the API server granted.
                    if granted_but_not_deleted(ctx, rx, until, pod).await {
                        let params = delete_params(&pod.uid, grace);
                        let call = api.delete(&pod.name, &params);
                        if let Some(Ok(_)) = ctx.call(rx, until, "delete pod", call).await {
                            tracing::info!(pod = %self.who, "its budget had granted its eviction, which never deleted it: deleted with its grace");
                            ctx.say(Progress::Evicted {
                                pod: self.who.clone(),
                                grace,
                            });
                            return Tried::Ended(Left::Evicted(grace));
                        }
                    }
                    Tried::Refused(match &e {
                        kube::Error::Api(s) => s.message.clone(),
                        other => other.to_string(),
                    })
                }
                ApiClass::Transient => Tried::Failed(e.to_string()),
                _ => self.fail(e.to_string()),
            },
            Some(Err(e)) if e.is_retryable() => Tried::Failed(e.to_string()),
            Some(Err(e)) => self.fail(e.to_string()),
        }
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
    if ctx.cfg.off.is_off(crate::access::Feature::GrantedEvictions) {
        return false;
    }
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
pub(super) async fn leave_at_deadline(
    ctx: &Ctx,
    pod: &PodFacts,
    limit: &Semaphore,
    refusals: &AtomicU32,
) -> Left {
    if !hold(ctx, pod, None).await {
        return Left::Stopped;
    }
    let _slot = limit.acquire().await;
    leave(ctx, pod, refusals).await
}

/// Waits until the pod is gone or replaced: `Some(false)` when it is still there well past
/// the end (the kubelet may still be stopping it), `None` when the drain was stopped. A pod
/// whose grace runs out (`stops_by`) after what the target now allows (it tightened, or a
/// restarted drain found the pod stopping with a grace planned for a later deadline) is asked
/// again with the grace that fits.
pub(super) async fn wait_gone(
    ctx: &Ctx,
    pod: &PodFacts,
    mut stops_by: Option<Instant>,
) -> Option<bool> {
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
