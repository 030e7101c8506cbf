//! The waits before a pod is asked to leave: its last moment (its grace and the margin still
//! fit before the deadline), the load balancers letting go of the node, a surged Deployment's
//! new replicas. Each ends early at the pod's last moment and follows the target as it moves.

use std::collections::HashSet;

use kube::api::{Api, ListParams};
use sih_core::PodFacts;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Ctx, GONE_POLL, MIN_CALL, Target, pause, pod_ref};
use crate::error::NodeError;
use crate::progress::Progress;

/// The last moment `pod` can be asked to leave with its whole grace (and the margin) before
/// the target's end.
pub(super) fn last_moment(ctx: &Ctx, t: &Target, pod: &PodFacts) -> Instant {
    t.ends()
        .checked_sub(ctx.cfg.policy.delete_lead(pod.grace_seconds))
        .unwrap_or_else(Instant::now)
}

/// Waits until `until` or the pod's last moment (its grace and the margin still fit before
/// the deadline), whichever comes first; the last moment moves with the target. False when
/// the target went away meanwhile.
pub(super) async fn hold(ctx: &Ctx, pod: &PodFacts, until: Option<Instant>) -> bool {
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
pub(super) async fn hold_for_load_balancers(
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
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits until the surged Deployment has its new replicas Ready, or the pod's last moment
/// comes (then it goes anyway, and says so). False when the target went away meanwhile.
pub(super) async fn hold_for_surge(ctx: &Ctx, pod: &PodFacts, s: &crate::surge::Surged) -> bool {
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
pub(super) enum Serving {
    Known(HashSet<String>),
    /// The EndpointSlices could not be read: every pod is taken to be an endpoint (a wait the
    /// deadline bounds costs less than requests cut off).
    Unknown,
}

impl Serving {
    pub(super) fn includes(&self, uid: &str) -> bool {
        match self {
            Self::Known(uids) => uids.contains(uid),
            Self::Unknown => true,
        }
    }
}

/// The pods on `node` that some EndpointSlice lists (ready or still serving).
pub(super) async fn endpoints_on(ctx: &Ctx, node: &str) -> Serving {
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
