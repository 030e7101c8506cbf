//! The responder: the one place that takes notices to nodes, for the IMDS agent, the queue
//! controller and `drain` alike. It keeps, per node, the set of notices the node carries (a
//! `Tracker`), derives the node's evacuation plan from that set (`sih_core::evacuation_plan`)
//! whenever it changes, and carries the plan out:
//!
//! - the fence by the node's writer task (`writer`): one optimistic write of the latest plan,
//!   retried until it lands, that also records every notice on the node;
//! - at most one drain per node (`drainer`), started once the fence is written, whose target
//!   follows the plan as notices come and go (a nearer deadline tightens it, a withdrawal
//!   that leaves nothing to drain stops it);
//! - every update on the one stream to the reporters, each notice announced once: a notice
//!   the node's record already carries (a restart, a redelivered message) is resumed, not new.
//!
//! It is an actor: sources send it what they saw and never wait for Kubernetes; its own tasks
//! report back to it. Every Kubernetes call they make is bounded (`--api-timeout`), so a hung
//! API server delays a write or a drain step, never the responder or a source.
//!
//! Before a node's record has been read, new notices wait (up to `resume_patience`) so that a
//! restart does not announce again what was announced before it; with the API down longer than
//! that they are announced anyway (detection must not wait for Kubernetes).

mod drainer;
mod handle;
mod ledger;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use sih_core::{Change, Notice, NoticeKind};
use sih_node::NodeRecord;
use sih_node::drain::{DrainEnd, Target};
use sih_report::Update;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin::health::Health;
use drainer::Ended;
pub use handle::{Command, Responder, ResponderConfig};
pub use ledger::Settled;
use ledger::{DrainResult, DrainStep, Ledger, Rules, WriteFailure};
use writer::{Desired, WriteResult};

struct RunningDrain {
    id: u64,
    target: watch::Sender<Option<Target>>,
    task: JoinHandle<()>,
    lead: Notice,
    /// The notices it drains for (marked drained when it succeeds).
    covers: Vec<String>,
}

/// One node: its ledger, and what runs for it.
struct NodeState {
    ledger: Ledger<oneshot::Sender<Settled>>,
    written_tx: watch::Sender<u64>,
    desired: watch::Sender<Desired>,
    writer: JoinHandle<()>,
    drain: Option<RunningDrain>,
    last_activity: Instant,
    /// Drop this state as soon as nothing is pending on it.
    forget: bool,
}

impl NodeState {
    /// Nothing runs, waits or remains to be written.
    fn idle(&self) -> bool {
        self.ledger.idle(self.drain.is_some())
    }
}

impl Drop for NodeState {
    fn drop(&mut self) {
        self.writer.abort();
        if let Some(d) = &self.drain {
            d.task.abort();
        }
    }
}

struct Actor {
    cfg: ResponderConfig,
    /// What every node's ledger follows (from `cfg`).
    rules: Arc<Rules>,
    /// Drains allowed at once.
    drains: Option<Arc<tokio::sync::Semaphore>>,
    client: kube::Client,
    nodes_api: Api<Node>,
    updates: mpsc::UnboundedSender<Update>,
    health: Arc<Health>,
    tx: mpsc::UnboundedSender<Command>,
    nodes: HashMap<String, NodeState>,
    next_drain: u64,
    /// What was announced about nodes whose state was dropped (queue mode): said once even
    /// if the node's record cannot be read when a later message comes. Bounded.
    announced_before: HashMap<String, HashSet<String>>,
}

impl Actor {
    fn new(
        cfg: ResponderConfig,
        client: kube::Client,
        updates: mpsc::UnboundedSender<Update>,
        health: Arc<Health>,
        tx: mpsc::UnboundedSender<Command>,
    ) -> Self {
        let drains = cfg
            .max_drains
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1))));
        let rules = Arc::new(Rules {
            plan: cfg.rules.clone(),
            source: cfg.source,
            booted_at: cfg.booted_at,
            resume: cfg.resume,
            rebalance_ttl: cfg.rebalance_ttl,
            dry_run: cfg.dry_run,
        });
        Actor {
            rules,
            drains,
            nodes_api: Api::all(client.clone()),
            client,
            cfg,
            updates,
            health,
            tx,
            nodes: HashMap::new(),
            next_drain: 0,
            announced_before: HashMap::new(),
        }
    }
}

/// Nodes whose announcements are remembered after their state is dropped, at most.
const REMEMBERED_NODES: usize = 10_000;

/// Answers waiters (one that stopped listening has nothing to lose).
fn answer(answers: Vec<(oneshot::Sender<Settled>, Settled)>) {
    for (w, o) in answers {
        let _ = w.send(o);
    }
}

impl Actor {
    fn send(&self, u: Update) {
        // The reporters outlive the responder; a send can only fail at shutdown.
        let _ = self.updates.send(u);
    }

    fn send_all(&self, updates: Vec<Update>) {
        for u in updates {
            self.send(u);
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Command::Observe { node, observation } => {
                    let changes = self.state(&node).ledger.observe(observation);
                    self.apply_changes(&node, changes);
                }
                Command::Add { node, notice, done } => {
                    let changes = self.state(&node).ledger.add(notice, done);
                    if changes.is_empty() {
                        self.replan(&node);
                    } else {
                        self.apply_changes(&node, changes);
                    }
                }
                Command::Await { node, id, done } => {
                    self.state(&node).ledger.wait(&id, done);
                    self.settle_waiters(&node);
                }
                Command::Watch { node } => {
                    self.state(&node);
                }
                Command::Forget { node } => {
                    if let Some(s) = self.nodes.get_mut(&node) {
                        s.forget = true;
                    }
                    self.forget_if_idle(&node);
                }
                Command::Resume { node, done } => {
                    self.state(&node).ledger.wait_whole(done);
                    self.settle_waiters(&node);
                }
                Command::Abandon { node, why } => self.abandon(&node, &why),
                Command::Loaded { node, record } => self.loaded(&node, record),
                Command::Written {
                    node,
                    generation,
                    result,
                } => self.written(&node, generation, result),
                Command::DrainEnded { node, id, ended } => self.drain_ended(&node, id, ended),
                Command::Patience { node } => self.announce_pending(&node),
                // A node let go of meanwhile (queue mode) is read again from its record,
                // where the recommendation waits with the time it was seen.
                Command::RebalanceDue { node } => self.apply_changes(&node, Vec::new()),
                Command::Sweep => self.sweep(),
                Command::Shutdown { done } => {
                    self.shutdown();
                    let _ = done.send(());
                    return;
                }
            }
        }
    }

    /// The node's state, created (its writer started, its record being read) on first use.
    fn state(&mut self, node: &str) -> &mut NodeState {
        if !self.nodes.contains_key(node) {
            let (desired, desired_rx) = watch::channel(Desired::default());
            let writer = tokio::spawn(writer::run(
                self.nodes_api.clone(),
                node.to_owned(),
                writer::WriterConfig {
                    source: self.cfg.source,
                    rules: self.cfg.rules.clone(),
                    timeout: self.cfg.drain.api_timeout,
                    dry_run: self.cfg.dry_run,
                },
                desired_rx,
                self.tx.clone(),
            ));
            let patience = self.tx.clone();
            let (name, wait) = (node.to_owned(), self.cfg.resume_patience);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = patience.send(Command::Patience { node: name });
            });
            let announced = self.announced_before.remove(node).unwrap_or_default();
            self.nodes.insert(
                node.to_owned(),
                NodeState {
                    ledger: Ledger::new(node, Arc::clone(&self.rules), announced),
                    written_tx: watch::channel(0).0,
                    desired,
                    writer,
                    drain: None,
                    last_activity: Instant::now(),
                    forget: false,
                },
            );
        }
        let s = self.nodes.get_mut(node).expect("inserted above");
        s.last_activity = Instant::now();
        s
    }

    /// Tells when the workloads a drain evicted from are whole again (bounded: ten minutes),
    /// and then removes the node's placeholders: their work is done.
    fn watch_recovery(&self, node: &str, notice: Notice, owners: Vec<(String, String)>) {
        if self
            .cfg
            .drain
            .off
            .is_off(sih_node::access::Feature::Recovery)
        {
            return;
        }
        // A weak sender: a watch still running never keeps the reporters from finishing.
        let (client, updates) = (self.client.clone(), self.updates.downgrade());
        let timeout = self.cfg.drain.api_timeout;
        let release = self.cfg.drain.reserve.is_some().then(|| node.to_owned());
        tokio::spawn(async move {
            let within = Duration::from_secs(600);
            let whole = sih_node::drain::recovered(&client, &owners, timeout, within).await;
            if whole {
                let after = Timestamp::now().duration_since(notice.detected);
                let after = Duration::try_from(after).unwrap_or_default();
                if let Some(updates) = updates.upgrade() {
                    let _ = updates.send(Update::Recovered { notice, after });
                }
            }
            // Not whole within ten minutes: the TTL (at most an hour) removes them.
            if let Some(node) = release.filter(|_| whole) {
                release_placeholders(&client, &node, timeout).await;
            }
        });
    }

    /// Removes the node's placeholders now (its drain was withdrawn, or had nothing to wait
    /// for), when the drain reserves.
    fn release(&self, node: &str) {
        if self.cfg.drain.reserve.is_none() {
            return;
        }
        let (client, node) = (self.client.clone(), node.to_owned());
        let timeout = self.cfg.drain.api_timeout;
        tokio::spawn(async move { release_placeholders(&client, &node, timeout).await });
    }

    /// Looks again once `n` may have outlived `ttl` (a queue may say nothing more about it).
    fn rebalance_due(&self, node: &str, n: &Notice, ttl: Duration) {
        let left = jiff::SignedDuration::try_from(ttl)
            .ok()
            .and_then(|ttl| n.detected.checked_add(ttl).ok())
            .map(|end| end.duration_since(Timestamp::now()))
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or_default();
        let tx = self.tx.clone();
        let node = node.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(left + Duration::from_millis(10)).await;
            let _ = tx.send(Command::RebalanceDue { node });
        });
    }

    /// Each rebalance recommendation among `notices` is looked at again at its `--rebalance-ttl`.
    fn rebalances_due<'a>(&self, node: &str, notices: impl IntoIterator<Item = &'a Notice>) {
        let Some(ttl) = self.cfg.rebalance_ttl else {
            return;
        };
        for n in notices {
            if n.kind == NoticeKind::RebalanceRecommendation {
                self.rebalance_due(node, n, ttl);
            }
        }
    }

    fn apply_changes(&mut self, node: &str, mut changes: Vec<Change>) {
        // Added now and already past its time (resumed after a restart) counts too.
        self.rebalances_due(
            node,
            changes.iter().filter_map(|c| match c {
                Change::Added(n) => Some(n),
                _ => None,
            }),
        );
        let expired = self.state(node).ledger.expire_rebalances(Timestamp::now());
        changes.extend(expired);
        if changes.is_empty() {
            self.settle_waiters(node);
            return;
        }
        let say = self.state(node).ledger.apply(changes);
        self.send_all(say);
        self.replan(node);
    }

    fn announce_pending(&mut self, node: &str) {
        if !self.nodes.contains_key(node) {
            return;
        }
        let (say, unread) = self.state(node).ledger.patience_over();
        if unread {
            tracing::warn!(
                node,
                "the node's record cannot be read yet; announcing new notices without it"
            );
        }
        self.send_all(say);
    }

    fn loaded(&mut self, node: &str, record: Option<NodeRecord>) {
        let resumed = self.state(node).ledger.load(record);
        for r in &resumed {
            tracing::info!(node, notice_id = %r.notice.id, kind = %r.notice.kind,
                seen_again = r.seen_again, "resuming the notice recorded on the node");
        }
        self.rebalances_due(
            node,
            resumed.iter().filter(|r| !r.seen_again).map(|r| &r.notice),
        );
        self.announce_pending(node);
        self.replan(node);
    }

    /// The plan for what the node carries now: the writer gets the new state; the drain is
    /// started, moved or stopped.
    fn replan(&mut self, node: &str) {
        let s = self.state(node);
        let plan = s.ledger.replan(s.drain.is_some());
        s.desired.send_replace(Desired {
            generation: plan.generation,
            loaded: plan.loaded,
            notices: plan.carried,
        });
        match plan.drain {
            DrainStep::Follow { target, covers } => {
                if let Some(running) = s.drain.as_mut() {
                    running
                        .target
                        .send_replace(target.as_ref().map(drainer::target_of));
                    running.covers = covers;
                }
                if let Some(t) = &target {
                    self.health
                        .drain_running(node, drainer::target_of(t).ends());
                }
            }
            DrainStep::Start {
                lead,
                target,
                covers,
            } => self.start_drain(node, lead, &target, covers, plan.generation),
            DrainStep::Nothing => {}
        }
        self.settle_waiters(node);
    }

    fn start_drain(
        &mut self,
        node: &str,
        lead: Notice,
        t: &sih_core::DrainTarget,
        covers: Vec<String>,
        generation: u64,
    ) {
        self.next_drain += 1;
        let id = self.next_drain;
        let target = drainer::target_of(t);
        let (target_tx, target_rx) = watch::channel(Some(target));
        let s = self
            .nodes
            .get_mut(node)
            .expect("a node being planned exists");
        let job = drainer::DrainJob {
            client: self.client.clone(),
            node: node.to_owned(),
            id,
            lead: lead.clone(),
            config: self.cfg.drain.clone(),
            dry_run: self.cfg.dry_run,
            target: target_rx,
            written: s.written_tx.subscribe(),
            needs: generation,
            slots: self.drains.clone(),
            updates: self.updates.clone(),
            report: self.tx.clone(),
        };
        s.drain = Some(RunningDrain {
            id,
            target: target_tx,
            task: tokio::spawn(drainer::run(job)),
            lead,
            covers,
        });
        self.health.drain_running(node, target.ends());
    }

    fn written(&mut self, node: &str, generation: u64, result: WriteResult) {
        let Some(s) = self.nodes.get_mut(node) else {
            return;
        };
        let (changed, facts) = match result {
            WriteResult::Written { changed, facts } => (changed, facts),
            WriteResult::WouldWrite { what } => {
                if let Some(n) = s.ledger.would_write(&what) {
                    self.send(Update::WouldDo { notice: n, what });
                }
                (true, None)
            }
            WriteResult::Failed { error } => {
                self.write_failed(node, error.to_string(), error.is_retryable(), "api_error");
                return;
            }
            WriteResult::NodeGone => {
                self.write_failed(node, format!("node {node:?} not found"), false, "not_found");
                self.state(node).ledger.node_gone();
                self.settle_waiters(node);
                return;
            }
        };
        self.health.api_ok();
        let s = self.state(node);
        let say = s.ledger.wrote(generation, changed, facts, Timestamp::now());
        s.written_tx.send_replace(s.ledger.written());
        self.send_all(say);
        self.settle_waiters(node);
    }

    /// Each failure is counted; a lasting one is said once (until a write works again).
    fn write_failed(&mut self, node: &str, error: String, retrying: bool, reason: &'static str) {
        self.health.node_write_failed(reason);
        if retrying {
            self.health.api_failed();
        }
        let Some(s) = self.nodes.get_mut(node) else {
            return;
        };
        match s.ledger.write_failed() {
            WriteFailure::Said => {} // the writer keeps trying
            WriteFailure::About(notice) => self.send(Update::Failed {
                notice,
                action: "fence",
                error,
                retrying: true,
            }),
            WriteFailure::NoNotice => {
                tracing::warn!(node, error = %error, "cannot read the node yet; retrying")
            }
        }
    }

    fn drain_ended(&mut self, node: &str, id: u64, ended: Ended) {
        let Some(s) = self.nodes.get_mut(node) else {
            return;
        };
        let Some(running) = s.drain.take_if(|d| d.id == id) else {
            return;
        };
        self.health.drain_over(node);
        let lead = running.lead.clone();
        let (result, failed) = match ended {
            Ended::Previewed => (DrainResult::Drained, None),
            Ended::Drain(DrainEnd::Finished(report)) => {
                let ok = report.succeeded();
                let failed = (!ok).then(|| {
                    format!(
                        "the drain ended with {} pod(s) still on the node",
                        report.remaining.len()
                    )
                });
                if ok && !report.owners.is_empty() {
                    self.watch_recovery(node, lead.clone(), report.owners.clone());
                } else if ok {
                    self.release(node);
                }
                self.send(Update::DrainFinished {
                    notice: lead.clone(),
                    report,
                });
                if ok && self.cfg.out_of_service_taint {
                    self.out_of_service(node, lead);
                }
                let result = if ok {
                    DrainResult::Drained
                } else {
                    DrainResult::Failed
                };
                (result, failed)
            }
            Ended::Drain(DrainEnd::Stopped(_)) => {
                self.release(node);
                self.send(Update::DrainStopped {
                    notice: lead,
                    why: "no notice needs a drain any more".into(),
                });
                (DrainResult::Stopped, None)
            }
            Ended::GaveUp(error) => {
                self.send(Update::Failed {
                    notice: lead.clone(),
                    action: "drain",
                    error: error.clone(),
                    retrying: false,
                });
                self.send(Update::DrainStopped {
                    notice: lead,
                    why: format!("gave up: {error}"),
                });
                (DrainResult::Failed, Some(error))
            }
        };
        let s = self.state(node);
        s.ledger.drain_ended(&running.covers, result);
        if let Some(why) = failed {
            answer(s.ledger.fail(&running.covers, &why));
        }
        // The drained flags go into the record; a notice that came meanwhile gets its drain.
        self.replan(node);
    }

    fn out_of_service(&self, node: &str, notice: Notice) {
        let (api, node, updates) = (
            self.nodes_api.clone(),
            node.to_owned(),
            self.updates.clone(),
        );
        let timeout = self.cfg.drain.api_timeout;
        tokio::spawn(async move {
            let u = match sih_node::mark_out_of_service(&api, &node, timeout).await {
                Ok(_) => Update::OutOfService { notice },
                Err(e) => Update::Failed {
                    notice,
                    action: "out_of_service_taint",
                    error: e.to_string(),
                    retrying: false,
                },
            };
            let _ = updates.send(u);
        });
    }

    /// Answers the notices whose action is now done (queue messages, drains by hand).
    fn settle_waiters(&mut self, node: &str) {
        let Some(s) = self.nodes.get_mut(node) else {
            return;
        };
        answer(s.ledger.settle(s.drain.is_some()));
        self.forget_if_idle(node);
    }

    /// Our claim on the node is gone: whoever holds it now acts; we stop without a word to
    /// the node (its record and fence stay as written, for the new holder to resume).
    fn abandon(&mut self, node: &str, why: &str) {
        let Some(mut s) = self.nodes.remove(node) else {
            return;
        };
        if let Some(d) = s.drain.take() {
            d.task.abort();
            self.health.drain_over(node);
            self.send(Update::DrainStopped {
                notice: d.lead,
                why: format!("stopped here: {why}"),
            });
        }
        answer(s.ledger.fail_all(why));
        self.remember_announced(node, &s);
    }

    /// Forgets nodes with nothing going on (queue mode): their records keep what matters.
    fn sweep(&mut self) {
        let Some(idle) = self.cfg.forget_idle else {
            return;
        };
        let now = Instant::now();
        let stale: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, s)| s.idle() && now.saturating_duration_since(s.last_activity) >= idle)
            .map(|(n, _)| n.clone())
            .collect();
        for node in stale {
            self.drop_state(&node);
        }
    }

    fn forget_if_idle(&mut self, node: &str) {
        if self.nodes.get(node).is_some_and(|s| s.forget && s.idle()) {
            self.drop_state(node);
        }
    }

    fn drop_state(&mut self, node: &str) {
        if let Some(s) = self.nodes.remove(node) {
            self.remember_announced(node, &s);
        }
    }

    fn remember_announced(&mut self, node: &str, s: &NodeState) {
        if self.announced_before.len() >= REMEMBERED_NODES {
            self.announced_before.clear();
        }
        self.announced_before
            .insert(node.to_owned(), s.ledger.announced().clone());
    }

    fn shutdown(&mut self) {
        let nodes: Vec<String> = self.nodes.keys().cloned().collect();
        for node in nodes {
            let Some(s) = self.nodes.get_mut(&node) else {
                continue;
            };
            if let Some(d) = s.drain.take() {
                d.task.abort();
                self.health.drain_over(&node);
                self.send(Update::DrainStopped {
                    notice: d.lead,
                    why: "stopping; a restarted process resumes the drain from the node's record"
                        .into(),
                });
            }
        }
        self.nodes.clear();
    }
}

/// Removes `node`'s placeholders; a failure is left to the TTL, and said.
async fn release_placeholders(client: &kube::Client, node: &str, timeout: Duration) {
    match sih_node::reserve::release(client, node, timeout).await {
        Ok(0) => {}
        Ok(removed) => tracing::info!(node, removed, "placeholders removed"),
        Err(e) => {
            tracing::warn!(node, error = %e, "cannot remove the placeholders yet; their TTL will")
        }
    }
}
