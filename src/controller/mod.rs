//! The queue-mode controller: long-polls SQS, parses each message (one parser per kind, in
//! `sih_queue`), resolves each instance to a node (`resolve`), and hands the notice to the
//! responder (`crate::responder`), which fences at once and drains (one drain per node, at
//! most `--workers` waiting their turn meanwhile). Every message about one instance joins that
//! node's one evacuation: a spot warning and the state changes after it are one drain. The
//! message stays invisible while its action runs and is deleted only when it is done or can
//! never succeed (`outcome`).
//!
//! Auto Scaling lifecycle actions: a terminate hook is completed with CONTINUE after its drain
//! (heartbeats while it runs, derived from the message so a restart resumes them), and also
//! for an instance that is not in this cluster, so the group is never held up; a launch hook
//! once its node is Ready (ABANDON after `--launch-ready-timeout`).
//!
//! Several replicas on one queue: duplicates within a replica ride along with the first copy
//! (`in_flight`); across replicas a Lease per node (`sih_node::Claims`) says which replica
//! evacuates it. Claims live a few seconds (`--claim-ttl`) and are renewed a few times per
//! life (`claims`): a replica that dies mid-drain is taken over by a survivor as soon as its
//! claim expires, from the node's record, without waiting for the message to come back. What
//! was announced and drained is on that record, so the new holder repeats neither. A replica
//! that cannot renew a claim for its whole life stops acting on the node (its messages come
//! back): two replicas never drain one node.
//!
//! SQS trouble is visible: every failed AWS call is counted (by operation and class), readiness
//! fails while receives fail, liveness when none completes for a while, and a first receive
//! that fails for good (a missing queue, no permission) stops the start with its reason.

mod claims;
mod held;
mod in_flight;
mod outcome;
pub mod resolve;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use sih_core::Backoff;
use sih_node::Claims;
use sih_queue::{
    HookResult, Hooks, Keeper, LifecycleAction, Message, Parsed, Queue, QueueError, QueueNotice,
    Transition,
};
use sih_report::Metrics;

use crate::admin::health::Health;
use crate::responder::{Responder, Settled};
use in_flight::InFlight;
use outcome::Outcome;
use resolve::{Resolved, Resolver};

pub struct ControllerConfig {
    pub dry_run: bool,
    /// How many nodes are drained at once (the others wait their turn, fenced): shown in
    /// the start-up line; the responder enforces it.
    pub workers: usize,
    /// How long a received message stays invisible; extended while its action runs.
    pub visibility: Duration,
    pub heartbeat_interval: Option<Duration>,
    /// Heartbeats stop this long after the lifecycle event (a hook cannot be held longer).
    pub heartbeat_until: Duration,
    /// Whether a message about an instance that is not ours is deleted.
    pub delete_unknown: bool,
    pub complete_delay: Duration,
    pub launch_ready_timeout: Duration,
    /// Released claims are deleted this long after their release.
    pub claim_retention: Duration,
}

struct Shared {
    cfg: ControllerConfig,
    queue: Queue,
    /// Every message held here stays hidden until deleted or let go.
    keeper: Keeper,
    hooks: Hooks,
    responder: Responder,
    /// Cluster-wide: which replica evacuates a node (none in dry-run: it writes nothing).
    claims: Option<Claims>,
    /// Nodes whose lease we hold.
    held: Mutex<held::Holdings>,
    /// Notices handed over to us, taken off their claim, whose node we lost before they
    /// could join its evacuation: kept until they do, or reach the node's new holder.
    strays: Mutex<Vec<claims::Stray>>,
    resolver: Resolver,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    in_flight: InFlight,
}

impl Shared {
    fn held(&self) -> std::sync::MutexGuard<'_, held::Holdings> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Controller {
    shared: Arc<Shared>,
}

impl Controller {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: ControllerConfig,
        queue: Queue,
        hooks: Hooks,
        claims: Option<Claims>,
        responder: Responder,
        resolver: Resolver,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                keeper: Keeper::spawn(queue.clone(), cfg.visibility),
                cfg,
                queue,
                hooks,
                responder,
                claims,
                held: Mutex::new(held::Holdings::default()),
                strays: Mutex::new(Vec::new()),
                resolver,
                metrics,
                health,
                in_flight: InFlight::default(),
            }),
        }
    }

    /// Receives until `stop` completes; messages being handled then are left to come back.
    /// Fails only when the very first receive fails for good (the queue cannot be read).
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) -> Result<(), QueueError> {
        let mut stop = std::pin::pin!(stop);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut received_once = false;
        tracing::info!(workers = self.shared.cfg.workers, "consuming the queue");
        let keeping = tokio::spawn(claims::keep(self.shared.clone()));
        let taking_over = tokio::spawn(claims::take_over(self.shared.clone()));
        let mut refused = None;
        loop {
            // The first receive does not wait: whether the queue can be read is known (and
            // readiness said) at once; long polls after it.
            let wait = Duration::from_secs(if received_once { 20 } else { 0 });
            let received = tokio::select! {
                _ = &mut stop => break,
                r = self.shared.queue.receive(10, wait, self.shared.cfg.visibility) => r,
            };
            match received {
                Ok(messages) => {
                    received_once = true;
                    self.shared.health.polled();
                    self.shared.health.source_ok();
                    self.shared.health.set_ready();
                    backoff.reset();
                    if messages.is_empty() {
                        tracing::debug!("no message");
                    }
                    for m in messages {
                        let shared = self.shared.clone();
                        shared.keeper.hold(&m.receipt);
                        tokio::spawn(async move {
                            let outcome = handle(&shared, &m).await;
                            // A duplicate stays held until it is deleted with its first copy.
                            if outcome != Outcome::Duplicate {
                                shared.keeper.release(&m.receipt);
                            }
                            if outcome == Outcome::Retry && !shared.cfg.dry_run {
                                come_back_soon(&shared, &m).await;
                            }
                            shared.metrics.queue_message(outcome.label());
                        });
                    }
                }
                Err(e) if !received_once && !e.retryable() => {
                    refused = Some(e);
                    break;
                }
                Err(e) => {
                    // Not a completed poll: liveness fails if this lasts, readiness sooner.
                    self.shared.health.source_failed(&e.to_string());
                    tracing::warn!(error = %e, class = e.class.label(), retry_in_ms = backoff.peek().as_millis() as u64, "cannot receive from the queue");
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(backoff.wait()) => {}
                    }
                }
            }
        }
        keeping.abort();
        taking_over.abort();
        if tokio::time::timeout(Duration::from_millis(800), self.shared.responder.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("the responder did not stop in time; leaving it");
        }
        // Our drains have stopped: the other replicas may take our nodes over at once.
        if let Some(claims) = &self.shared.claims
            && let Err(e) = claims.resign().await
        {
            tracing::warn!(error = %e, "could not step down; our claims expire instead");
        }
        tracing::info!("controller stopped");
        refused.map_or(Ok(()), Err)
    }
}

/// A message whose action could not be done now (the API failed a claim, a lookup, a write)
/// comes back after a short pause that doubles with each receive (1 s, 2 s, 4 s... up to the
/// visibility timeout), not after the whole visibility timeout: a notice that met a second's
/// API trouble would otherwise wait 20 s of its two minutes.
async fn come_back_soon(shared: &Shared, m: &Message) {
    let pause = retry_pause(m.receives, shared.cfg.visibility);
    if let Err(e) = shared
        .queue
        .extend_batch(std::slice::from_ref(&m.receipt), pause)
        .await
    {
        tracing::debug!(error = %e, "could not shorten the message's absence; it comes back after its visibility timeout");
    }
}

/// The pause before a message that must be retried comes back, after its `receives`-th receive.
fn retry_pause(receives: u32, visibility: Duration) -> Duration {
    let doubled = Duration::from_secs(1 << receives.saturating_sub(1).min(10));
    doubled.min(visibility).max(Duration::from_secs(1))
}

async fn delete(shared: &Shared, receipt: &str) {
    shared.keeper.release(receipt);
    if let Err(e) = shared.queue.delete(receipt).await {
        // It comes back after its visibility timeout and is handled again (idempotently).
        tracing::warn!(error = %e, "could not delete a handled message");
    }
}

async fn handle(shared: &Arc<Shared>, m: &Message) -> Outcome {
    if let Some(sent) = m.sent {
        let age = Timestamp::now().duration_since(sent).as_secs_f64().max(0.0);
        shared.metrics.queue_message_age.observe(age);
    }
    let notices = match sih_queue::parse(&m.body) {
        Err(e) => {
            tracing::warn!(message_id = %m.id, reason = e.reason(), error = %e, "malformed message; deleting it");
            if !shared.cfg.dry_run {
                delete(shared, &m.receipt).await;
            }
            return Outcome::Malformed;
        }
        Ok(Parsed::Ignore(why)) => {
            tracing::info!(message_id = %m.id, why = %why, "nothing to do; deleting the message");
            if !shared.cfg.dry_run {
                delete(shared, &m.receipt).await;
            }
            return Outcome::Ignored;
        }
        Ok(Parsed::Act(n)) => n,
    };
    // Each instance of a message (an AWS Health event may name many) is acted on at once:
    // a fence never waits behind another instance's drain.
    let mut acting = tokio::task::JoinSet::new();
    for q in notices {
        let shared = shared.clone();
        let receipt = m.receipt.clone();
        acting.spawn(async move { act(&shared, q, &receipt).await });
    }
    let mut outcomes = Vec::with_capacity(acting.len());
    while let Some(done) = acting.join_next().await {
        outcomes.push(done.unwrap_or_else(|e| {
            tracing::error!(message_id = %m.id, error = %e, "acting on a notice failed; the message comes back");
            Outcome::Retry
        }));
    }
    let outcome = Outcome::combine(&outcomes);
    if outcome.deletes(shared.cfg.delete_unknown) {
        if shared.cfg.dry_run {
            tracing::info!(message_id = %m.id, "dry run: would delete the message");
        } else {
            delete(shared, &m.receipt).await;
        }
    }
    outcome
}

/// Gives up on a notice for now: its duplicates come back with it.
fn release_duplicates(shared: &Shared, notice_id: &str) {
    for duplicate in shared.in_flight.leave(notice_id) {
        shared.keeper.release(&duplicate);
    }
}

/// Completes a lifecycle action (not in dry-run); false when it should be tried again.
async fn complete(
    shared: &Shared,
    a: &LifecycleAction,
    instance: &str,
    result: HookResult,
) -> bool {
    if shared.cfg.dry_run {
        tracing::info!(group = %a.group, hook = %a.hook, instance = %instance, result = %result.as_str(),
            "dry run: would complete the lifecycle action");
        return true;
    }
    match shared.hooks.complete(a, instance, result).await {
        Ok(()) => {
            shared.metrics.action("complete_lifecycle_action", true);
            tracing::info!(group = %a.group, hook = %a.hook, instance = %instance, result = %result.as_str(),
                "lifecycle action completed");
            true
        }
        Err(e) => {
            shared.metrics.action("complete_lifecycle_action", false);
            tracing::warn!(error = %e, instance, "could not complete the lifecycle action");
            // A hook that is gone (timed out, or completed by another replica) never will be.
            !e.retryable()
        }
    }
}

/// A launch hook: CONTINUE once the instance's node is Ready, ABANDON after the timeout.
async fn launch(shared: &Shared, q: &QueueNotice, a: &LifecycleAction) -> Outcome {
    let until = tokio::time::Instant::now() + shared.cfg.launch_ready_timeout;
    let finish = |result| async move {
        if complete(shared, a, &q.instance_id, result).await {
            Outcome::Done
        } else {
            Outcome::Retry
        }
    };
    loop {
        match shared.resolver.resolve(&q.instance_id).await {
            Ok(Resolved::Node(node)) if shared.resolver.index.is_ready(&node) => {
                tracing::info!(instance_id = %q.instance_id, node = %node, "launched node is Ready");
                return finish(HookResult::Continue).await;
            }
            Ok(Resolved::Unmanaged) => {
                tracing::info!(instance_id = %q.instance_id, "launched instance is not managed here; not holding it up");
                return finish(HookResult::Continue).await;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(instance_id = %q.instance_id, error = %e, "cannot look the launched instance up yet");
            }
        }
        if tokio::time::Instant::now() >= until {
            tracing::warn!(instance_id = %q.instance_id, "launched instance never became a Ready node");
            return finish(HookResult::Abandon).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// An instance that is not ours: nothing to do, and a terminate hook is completed so the group
/// is never held up (unless the message is kept, to be looked at again).
async fn not_ours(shared: &Shared, q: &QueueNotice, outcome: Outcome) -> Outcome {
    tracing::info!(instance_id = %q.instance_id, notice_id = %q.id, result = outcome.label(),
        "instance is not a node managed here; nothing to do");
    if outcome.deletes(shared.cfg.delete_unknown)
        && let Some(a) = &q.lifecycle
        && !complete(shared, a, &q.instance_id, HookResult::Continue).await
    {
        return Outcome::Retry;
    }
    outcome
}

async fn act(shared: &Arc<Shared>, q: QueueNotice, receipt: &str) -> Outcome {
    if let Some(a) = q.lifecycle.clone()
        && a.transition == Transition::Launching
    {
        return launch(shared, &q, &a).await;
    }
    let node = match shared.resolver.resolve(&q.instance_id).await {
        Ok(Resolved::Node(node)) => node,
        Ok(Resolved::NotInCluster) => return not_ours(shared, &q, Outcome::UnknownInstance).await,
        Ok(Resolved::Unmanaged) => return not_ours(shared, &q, Outcome::Unmanaged).await,
        Err(e) => {
            // The message comes back after its visibility timeout and is looked up again.
            tracing::warn!(instance_id = %q.instance_id, notice_id = %q.id, error = %e,
                retryable = e.retryable, "cannot look the instance up; the message comes back");
            return Outcome::Retry;
        }
    };
    let lifecycle = q.lifecycle.clone();
    let instance = q.instance_id.clone();
    // Heartbeats stop once the hook cannot be held any longer; measured from the event, so a
    // controller that restarts mid-drain keeps to the same end.
    let beats_until = q
        .event_time
        .checked_add(shared.cfg.heartbeat_until)
        .unwrap_or(Timestamp::MAX);
    if !shared.in_flight.join(&q.id, receipt) {
        tracing::info!(notice_id = %q.id, "already being handled; this copy goes with it");
        return Outcome::Duplicate;
    }
    let notice = q.into_notice(&node, Timestamp::now());
    let id = notice.id.clone();
    if let Err(outcome) = claims::claim_node(shared, &node, &notice).await {
        release_duplicates(shared, &id);
        return outcome;
    }
    let mut ok = carry_out(shared, &node, notice, lifecycle.as_ref(), beats_until).await;
    if ok && let Some(a) = &lifecycle {
        tokio::time::sleep(shared.cfg.complete_delay).await;
        ok = complete(shared, a, &instance, HookResult::Continue).await;
    }
    claims::unclaim_node(shared, &node).await;
    for duplicate in shared.in_flight.leave(&id) {
        if ok && !shared.cfg.dry_run {
            delete(shared, &duplicate).await;
        } else {
            shared.keeper.release(&duplicate);
        }
    }
    if ok { Outcome::Done } else { Outcome::Retry }
}

/// Hands the notice to the responder and waits for its action, keeping the lifecycle hook
/// alive meanwhile (the message stays hidden: the keeper holds it).
async fn carry_out(
    shared: &Arc<Shared>,
    node: &str,
    notice: sih_core::Notice,
    lifecycle: Option<&LifecycleAction>,
    beats_until: Timestamp,
) -> bool {
    let id = notice.id.clone();
    let instance = notice.instance_id.clone().unwrap_or_default();
    let done = shared.responder.add(node, notice);
    let mut done = std::pin::pin!(done);
    let beat_every = shared
        .cfg
        .heartbeat_interval
        .filter(|_| lifecycle.is_some())
        .unwrap_or(Duration::from_secs(86_400));
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + beat_every, beat_every);
    let mut beats = 0u32;
    loop {
        tokio::select! {
            outcome = &mut done => {
                return match outcome {
                    // Withdrawn (a rebalance past its time to live): nothing is left to do.
                    Ok(Settled::Done | Settled::Withdrawn) => true,
                    Ok(Settled::Failed(why)) => {
                        tracing::warn!(notice_id = %id, node, why = %why, "the notice's action did not finish; the message comes back");
                        false
                    }
                    Err(_) => false,
                };
            }
            _ = beat.tick() => {
                let Some(a) = lifecycle else { continue };
                if Timestamp::now() >= beats_until {
                    continue;
                }
                match shared.hooks.heartbeat(a, &instance).await {
                    Ok(()) => {
                        shared.metrics.action("lifecycle_heartbeat", true);
                        beats += 1;
                        // Each one for whoever follows the hook closely; the last one always,
                        // since after it the hook's own timeout runs.
                        let next = Timestamp::now()
                            .checked_add(beat_every)
                            .unwrap_or(Timestamp::MAX);
                        if next >= beats_until {
                            tracing::info!(notice_id = %id, node, heartbeats = beats, until = %beats_until, "the last lifecycle heartbeat was sent: the hook now runs out on its own timeout");
                        } else {
                            tracing::debug!(notice_id = %id, node, heartbeats = beats, "lifecycle heartbeat sent");
                        }
                    }
                    Err(e) => {
                        shared.metrics.action("lifecycle_heartbeat", false);
                        tracing::warn!(error = %e, notice_id = %id, "could not record a lifecycle heartbeat");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_message_comes_back_soon_then_less_often() {
        let vis = Duration::from_secs(20);
        let pauses: Vec<u64> = (1..=7).map(|n| retry_pause(n, vis).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 20, 20]);
        assert_eq!(retry_pause(0, vis), Duration::from_secs(1));
        assert_eq!(retry_pause(u32::MAX, vis), vis);
        assert_eq!(
            retry_pause(3, Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }
}
