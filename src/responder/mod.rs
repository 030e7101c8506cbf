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
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use sih_core::{
    Action, Carried, Change, Notice, NoticeKind, Observation, PlanRules, Source, Tracker,
    evacuation_plan,
};
use sih_node::drain::{DrainEnd, Target};
use sih_node::{DrainConfig, NodeRecord};
use sih_report::Update;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::agent::health::Health;
use drainer::Ended;
use writer::{Desired, WriteResult};

/// What a notice added with [`Responder::add`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its action is done: fenced as asked, or drained.
    Done,
    /// Its action could not be done (worth trying again later).
    Failed(String),
    /// It went away (withdrawn, expired) before its action finished: nothing is left to do,
    /// and nothing may be said to be done (an Azure acknowledgement is never sent for it).
    Withdrawn,
}

pub struct ResponderConfig {
    pub source: Source,
    pub rules: PlanRules,
    pub drain: DrainConfig,
    pub out_of_service_taint: bool,
    pub dry_run: bool,
    /// Notices recorded before this moment ended with a reboot of the instance.
    pub booted_at: Option<Timestamp>,
    /// How long new notices wait for the node's record before they are announced anyway.
    pub resume_patience: Duration,
    /// Forget a node's state once nothing is pending on it for this long (queue mode, where
    /// nodes come and go; the record on the node keeps what matters).
    pub forget_idle: Option<Duration>,
    /// Resume the notices of our source recorded on a node. A drain by hand does not: its
    /// new notice replaces an earlier one.
    pub resume: bool,
    /// At most this many nodes drained at once (`--workers`); the others wait, fenced.
    pub max_drains: Option<usize>,
    /// A rebalance recommendation's fence is undone this long after it was seen when no
    /// interruption followed (`--rebalance-ttl`; `None`: kept while the recommendation is).
    pub rebalance_ttl: Option<Duration>,
}

pub enum Command {
    Observe {
        node: String,
        observation: Observation,
    },
    Add {
        node: String,
        notice: Notice,
        done: oneshot::Sender<Outcome>,
    },
    /// Answer once this notice (already observed) has its action done.
    Await {
        node: String,
        id: String,
        done: oneshot::Sender<Outcome>,
    },
    /// Start with this node now: read its record and resume what it carries.
    Watch {
        node: String,
    },
    /// Another process may act on this node next: what we know of it goes stale, and the
    /// node's record is read again the next time.
    Forget {
        node: String,
    },
    /// Take the node over from its record (queue mode, from a replica that died): answered
    /// once nothing recorded on it needs a drain any more.
    Resume {
        node: String,
        done: oneshot::Sender<Outcome>,
    },
    /// Stop acting on the node at once (queue mode: our claim on it was lost, another replica
    /// acts now): its drain stops, what waits on it fails, its state is dropped.
    Abandon {
        node: String,
        why: String,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
    // From the responder's own tasks.
    Loaded {
        node: String,
        record: Option<NodeRecord>,
    },
    Written {
        node: String,
        generation: u64,
        result: WriteResult,
    },
    DrainEnded {
        node: String,
        id: u64,
        ended: Ended,
    },
    Patience {
        node: String,
    },
    /// A rebalance recommendation of this node may have outlived its time to live.
    RebalanceDue {
        node: String,
    },
    Sweep,
}

/// A handle: cheap to clone, every call returns at once.
#[derive(Clone)]
pub struct Responder {
    tx: mpsc::UnboundedSender<Command>,
}

impl Responder {
    pub fn spawn(
        cfg: ResponderConfig,
        client: kube::Client,
        updates: mpsc::UnboundedSender<Update>,
        health: Arc<Health>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(idle) = cfg.forget_idle {
            let sweep = tx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(idle.max(Duration::from_secs(1))).await;
                    if sweep.send(Command::Sweep).is_err() {
                        return;
                    }
                }
            });
        }
        let drains = cfg
            .max_drains
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1))));
        let actor = Actor {
            drains,
            nodes_api: Api::all(client.clone()),
            client,
            cfg,
            updates,
            health,
            tx: tx.clone(),
            nodes: HashMap::new(),
            next_drain: 0,
            announced_before: HashMap::new(),
        };
        (Self { tx }, tokio::spawn(actor.run(rx)))
    }

    /// What a source saw about `node` (a complete look: withdrawn notices are gone).
    pub fn observe(&self, node: &str, observation: Observation) {
        let _ = self.tx.send(Command::Observe {
            node: node.to_owned(),
            observation,
        });
    }

    /// One notice (a queue message, a drain by hand); resolves when its action is done.
    pub fn add(&self, node: &str, notice: Notice) -> oneshot::Receiver<Outcome> {
        let (done, rx) = oneshot::channel();
        let _ = self.tx.send(Command::Add {
            node: node.to_owned(),
            notice,
            done,
        });
        rx
    }

    /// Resolves once the notice `id`, observed on `node` before this call, has its action
    /// done (a notice no longer carried counts as done: its source withdrew it).
    pub fn done(&self, node: &str, id: &str) -> oneshot::Receiver<Outcome> {
        let (done, rx) = oneshot::channel();
        let _ = self.tx.send(Command::Await {
            node: node.to_owned(),
            id: id.to_owned(),
            done,
        });
        rx
    }

    /// Resume `node` now, before any notice about it is seen (the agent's own node).
    pub fn watch(&self, node: &str) {
        let _ = self.tx.send(Command::Watch {
            node: node.to_owned(),
        });
    }

    /// Let go of `node` (queue mode, when our claim on it ends): its state here is dropped
    /// once nothing is pending on it, so a later notice starts from the node's record, which
    /// another replica may have changed meanwhile.
    pub fn forget(&self, node: &str) {
        let _ = self.tx.send(Command::Forget {
            node: node.to_owned(),
        });
    }

    /// Take `node` over from its record; resolves when what it carries is done.
    pub fn resume(&self, node: &str) -> oneshot::Receiver<Outcome> {
        let (done, rx) = oneshot::channel();
        let _ = self.tx.send(Command::Resume {
            node: node.to_owned(),
            done,
        });
        rx
    }

    /// Stop acting on `node` now (another replica holds it).
    pub fn abandon(&self, node: &str, why: &str) {
        let _ = self.tx.send(Command::Abandon {
            node: node.to_owned(),
            why: why.to_owned(),
        });
    }

    /// Stops every drain (a restarted process resumes them from the nodes' records) and the
    /// responder; resolves once the updates about it are sent.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown { done }).is_ok() {
            let _ = rx.await;
        }
    }
}

struct RunningDrain {
    id: u64,
    target: watch::Sender<Option<Target>>,
    task: JoinHandle<()>,
    lead: Notice,
    /// The notices it drains for (marked drained when it succeeds).
    covers: Vec<String>,
}

struct Waiter {
    id: String,
    done: oneshot::Sender<Outcome>,
}

struct NodeState {
    tracker: Tracker,
    /// Announced (here, or before a restart: recorded on the node).
    announced: HashSet<String>,
    /// Reported fenced (the Fenced update goes out once per notice).
    fenced: HashSet<String>,
    drained: HashSet<String>,
    /// The generation that first carried each notice (its fence is done once written).
    included: HashMap<String, u64>,
    /// The generation that first recorded each notice as drained: a replica taking the node
    /// over must find it drained, so a waiter is answered only once that is written.
    drained_at: HashMap<String, u64>,
    /// Withdrawn notices whose undo is not written yet: `Unfenced` once it is.
    withdrawn: Vec<(Notice, String)>,
    /// Ids withdrawn and not carried again since: their waiters hear `Withdrawn`, not `Done`.
    withdrawn_ids: HashSet<String>,
    loaded: bool,
    /// Seen before the record was read: announced once it is (or after some patience).
    pending: Vec<Notice>,
    /// The patience is over and the record still unread: a new notice is announced at once
    /// (detection and announcement never wait for Kubernetes).
    impatient: bool,
    generation: u64,
    written: u64,
    written_tx: watch::Sender<u64>,
    desired: watch::Sender<Desired>,
    writer: JoinHandle<()>,
    /// The last write failed (its failure was reported; the next success says so).
    failing: bool,
    /// A dry run's last "would write": said once, not again for each recomputed plan that
    /// would write the same (the drained flag's record, say).
    would_write: Option<String>,
    gone: bool,
    drain: Option<RunningDrain>,
    waiters: Vec<Waiter>,
    /// Takeovers waiting for the whole node to be done (`Resume`).
    resumers: Vec<oneshot::Sender<Outcome>>,
    last_activity: Instant,
    /// Drop this state as soon as nothing is pending on it.
    forget: bool,
    /// The last drain ended with pods still there (its deadline passed): no new drain until
    /// something changes (a notice, a deadline, a message about it again), never in a loop.
    drain_failed: bool,
}

impl NodeState {
    /// The active notices, each with whether it counts as drained.
    fn carried(&self, drained: impl Fn(&str) -> bool) -> Vec<Carried> {
        self.tracker
            .active()
            .iter()
            .map(|n| Carried {
                notice: n.clone(),
                drained: drained(&n.id),
            })
            .collect()
    }

    /// Nothing runs, waits or remains to be written.
    fn idle(&self) -> bool {
        self.drain.is_none()
            && self.waiters.is_empty()
            && self.resumers.is_empty()
            && self.pending.is_empty()
            && self.withdrawn.is_empty()
            && self.written >= self.generation
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

/// Nodes whose announcements are remembered after their state is dropped, at most.
const REMEMBERED_NODES: usize = 10_000;

fn withdrawal_reason(n: &Notice) -> String {
    match n.kind {
        NoticeKind::RebalanceRecommendation => "the rebalance recommendation disappeared".into(),
        NoticeKind::ScheduledMaintenance => {
            format!("scheduled event {} is no longer active", n.id)
        }
        _ => format!("the {} notice was withdrawn", n.kind),
    }
}

impl Actor {
    fn send(&self, u: Update) {
        // The reporters outlive the responder; a send can only fail at shutdown.
        let _ = self.updates.send(u);
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Command::Observe { node, observation } => {
                    let changes = self.state(&node).tracker.observe(observation);
                    self.apply_changes(&node, changes);
                }
                Command::Add { node, notice, done } => {
                    let id = notice.id.clone();
                    let s = self.state(&node);
                    let change = s.tracker.add(notice);
                    s.waiters.push(Waiter { id, done });
                    // A message about it again: worth another try of a drain that failed.
                    s.drain_failed = false;
                    let changes: Vec<Change> = change.into_iter().collect();
                    if changes.is_empty() {
                        self.replan(&node);
                    } else {
                        self.apply_changes(&node, changes);
                    }
                }
                Command::Await { node, id, done } => {
                    self.state(&node).waiters.push(Waiter { id, done });
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
                    let s = self.state(&node);
                    // A drain that failed stays failed: its messages bring it back.
                    s.resumers.push(done);
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
                    tracker: Tracker::new(),
                    announced,
                    fenced: HashSet::new(),
                    drained: HashSet::new(),
                    included: HashMap::new(),
                    drained_at: HashMap::new(),
                    withdrawn: Vec::new(),
                    withdrawn_ids: HashSet::new(),
                    loaded: false,
                    pending: Vec::new(),
                    impatient: false,
                    generation: 0,
                    written: 0,
                    written_tx: watch::channel(0).0,
                    desired,
                    writer,
                    failing: false,
                    would_write: None,
                    gone: false,
                    drain: None,
                    waiters: Vec::new(),
                    resumers: Vec::new(),
                    last_activity: Instant::now(),
                    forget: false,
                    drain_failed: false,
                },
            );
        }
        let s = self.nodes.get_mut(node).expect("inserted above");
        s.last_activity = Instant::now();
        s
    }

    fn action(&self, n: &Notice) -> Action {
        self.cfg.rules.policy.action_for(n.kind)
    }

    /// Tells people about a notice, once.
    fn announce(&mut self, node: &str, n: Notice) {
        let action = self.action(&n);
        let s = self.state(node);
        if s.announced.insert(n.id.clone()) {
            self.send(Update::Detected { notice: n, action });
        }
    }

    /// Tells when the workloads a drain evicted from are whole again (bounded: ten minutes).
    fn watch_recovery(&self, notice: Notice, owners: Vec<(String, String)>) {
        // A weak sender: a watch still running never keeps the reporters from finishing.
        let (client, updates) = (self.client.clone(), self.updates.downgrade());
        let timeout = self.cfg.drain.api_timeout;
        tokio::spawn(async move {
            let within = Duration::from_secs(600);
            if sih_node::drain::recovered(&client, &owners, timeout, within).await {
                let after = Timestamp::now().duration_since(notice.detected);
                let after = Duration::try_from(after).unwrap_or_default();
                if let Some(updates) = updates.upgrade() {
                    let _ = updates.send(Update::Recovered { notice, after });
                }
            }
        });
    }

    /// A notice gone: its fence is undone on the next write (`Unfenced` says why).
    fn withdraw(&mut self, node: &str, n: Notice, why: String) {
        let s = self.state(node);
        s.withdrawn_ids.insert(n.id.clone());
        s.drained.remove(&n.id);
        s.drained_at.remove(&n.id);
        s.announced.remove(&n.id);
        s.included.remove(&n.id);
        let was_fenced = s.fenced.remove(&n.id);
        if was_fenced || self.action(&n) < Action::Taint {
            self.state(node).withdrawn.push((n, why));
        }
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

    fn apply_changes(&mut self, node: &str, mut changes: Vec<Change>) {
        if let Some(ttl) = self.cfg.rebalance_ttl {
            // Added now and already past its time (resumed after a restart) counts too.
            for c in &changes {
                if let Change::Added(n) = c
                    && n.kind == NoticeKind::RebalanceRecommendation
                {
                    self.rebalance_due(node, n, ttl);
                }
            }
            let expired = self
                .state(node)
                .tracker
                .expire_rebalances(ttl, Timestamp::now());
            changes.extend(expired);
        }
        if changes.is_empty() {
            self.settle_waiters(node);
            return;
        }
        self.state(node).drain_failed = false;
        for c in changes {
            match c {
                Change::Added(n) => {
                    self.state(node).withdrawn_ids.remove(&n.id);
                    if self.state(node).loaded || self.state(node).impatient {
                        self.announce(node, n);
                    } else {
                        self.state(node).pending.push(n);
                    }
                }
                Change::Withdrawn(n) => {
                    let why = withdrawal_reason(&n);
                    self.withdraw(node, n, why);
                }
                Change::Expired(n) => {
                    let why = format!(
                        "no interruption followed the rebalance recommendation within --rebalance-ttl {}s",
                        self.cfg.rebalance_ttl.unwrap_or_default().as_secs()
                    );
                    self.withdraw(node, n, why);
                }
                Change::DeadlineMoved { id, from, .. } => {
                    if let Some(n) = self.state(node).tracker.get(&id).cloned() {
                        self.send(Update::DeadlineMoved { notice: n, from });
                    }
                }
            }
        }
        self.replan(node);
    }

    fn announce_pending(&mut self, node: &str) {
        let Some(s) = self.nodes.get_mut(node) else {
            return;
        };
        if s.gone && !s.loaded {
            s.pending.clear();
            return;
        }
        s.impatient = true;
        let pending = std::mem::take(&mut s.pending);
        if !pending.is_empty() && !s.loaded {
            tracing::warn!(
                node,
                "the node's record cannot be read yet; announcing new notices without it"
            );
        }
        for n in pending {
            self.announce(node, n);
        }
    }

    fn loaded(&mut self, node: &str, record: Option<NodeRecord>) {
        let source = self.cfg.source;
        let booted_at = self.cfg.booted_at;
        let resume = self.cfg.resume;
        let ttl = self.cfg.rebalance_ttl;
        let mut rebooted = Vec::new();
        let mut due = Vec::new();
        {
            let s = self.state(node);
            for c in record.map(|r| r.notices).unwrap_or_default() {
                if c.notice.source != source {
                    continue; // another writer's: kept on the node as found
                }
                if !resume {
                    continue; // replaced by what we write
                }
                let id = c.notice.id.clone();
                if booted_at.is_some_and(|b| c.notice.detected < b) {
                    // A reboot ends whatever fenced the node before it.
                    s.tracker.finish(&id);
                    rebooted.push(c.notice);
                    continue;
                }
                if s.tracker.get(&id).is_none() {
                    tracing::info!(node, notice_id = %id, kind = %c.notice.kind,
                        "resuming the notice recorded on the node");
                    if let Some(ttl) = ttl
                        && c.notice.kind == NoticeKind::RebalanceRecommendation
                    {
                        due.push((c.notice.clone(), ttl));
                    }
                    s.tracker.resume(c.notice);
                }
                s.announced.insert(id.clone());
                s.fenced.insert(id.clone());
                if c.drained {
                    s.drained.insert(id);
                }
            }
            s.loaded = true;
        }
        for n in rebooted {
            let why = format!("the instance rebooted after the {} notice {}", n.kind, n.id);
            self.state(node).withdrawn.push((n, why));
        }
        for (n, ttl) in due {
            self.rebalance_due(node, &n, ttl);
        }
        self.announce_pending(node);
        self.replan(node);
    }

    /// The plan for what the node carries now: the writer gets the new state; the drain is
    /// started, moved or stopped.
    fn replan(&mut self, node: &str) {
        let rules = self.cfg.rules.clone();
        let s = self.state(node);
        let carried = s.carried(|id| s.drained.contains(id));
        s.generation += 1;
        let generation = s.generation;
        for c in &carried {
            s.included.entry(c.notice.id.clone()).or_insert(generation);
            if c.drained {
                s.drained_at
                    .entry(c.notice.id.clone())
                    .or_insert(generation);
            }
        }
        let loaded = s.loaded;
        s.desired.send_replace(Desired {
            generation,
            loaded,
            notices: carried.clone(),
        });
        let plan = evacuation_plan(&carried, &rules);
        let covers: Vec<String> = carried
            .iter()
            .filter(|c| rules.policy.action_for(c.notice.kind) == Action::Drain)
            .map(|c| c.notice.id.clone())
            .collect();
        if let Some(running) = s.drain.as_mut() {
            // One drain per node: it follows the plan (tighter, looser, or none at all).
            running
                .target
                .send_replace(plan.drain.as_ref().map(drainer::target_of));
            running.covers = covers;
            if let Some(t) = &plan.drain {
                self.health
                    .drain_running(node, drainer::target_of(t).ends());
            }
        } else if let (Some(t), true, true, false) =
            (&plan.drain, plan.drain_needed, loaded, s.drain_failed)
        {
            // Not before the record is read: it may say the drain was done already.
            let lead = plan
                .drain_lead
                .as_ref()
                .and_then(|id| carried.iter().find(|c| &c.notice.id == id))
                .map(|c| c.notice.clone());
            if let Some(lead) = lead {
                self.start_drain(node, lead, t, covers, generation);
            }
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
        if !self.nodes.contains_key(node) {
            return;
        }
        let mut node_facts = None;
        let changed = match result {
            WriteResult::Written { changed, facts } => {
                node_facts = facts;
                changed
            }
            WriteResult::WouldWrite { what } => {
                let s = self.state(node);
                let about = s.tracker.active().first().cloned();
                let new = s.would_write.as_deref() != Some(what.as_str());
                s.would_write = Some(what.clone());
                if let Some(n) = about.filter(|_| new) {
                    self.send(Update::WouldDo { notice: n, what });
                }
                true
            }
            WriteResult::Failed { error } => {
                self.write_failed(node, error.to_string(), error.is_retryable(), "api_error");
                return;
            }
            WriteResult::NodeGone => {
                self.write_failed(node, format!("node {node:?} not found"), false, "not_found");
                let s = self.state(node);
                s.gone = true;
                if !s.loaded {
                    // No node, nothing to evacuate: its notices are not announced either.
                    s.pending.clear();
                }
                self.settle_waiters(node);
                return;
            }
        };
        self.health.api_ok();
        let dry_run = self.cfg.dry_run;
        let rules = self.cfg.rules.clone();
        let s = self.state(node);
        s.failing = false;
        s.gone = false;
        s.written = s.written.max(generation);
        s.written_tx.send_replace(s.written);
        if dry_run {
            self.settle_waiters(node);
            return;
        }
        // Who got fenced by this write, and whose fence it took away.
        let carried: Vec<Carried> = s
            .tracker
            .active()
            .iter()
            .map(|n| Carried::new(n.clone()))
            .collect();
        let plan = evacuation_plan(&carried, &rules);
        let mut fenced = Vec::new();
        for n in s.tracker.active() {
            if rules.policy.action_for(n.kind) >= Action::Taint
                && s.included.get(&n.id).is_some_and(|g| *g <= generation)
                && !s.fenced.contains(&n.id)
            {
                fenced.push(n.clone());
            }
        }
        for n in &fenced {
            s.fenced.insert(n.id.clone());
        }
        let withdrawn = std::mem::take(&mut s.withdrawn);
        let now = Timestamp::now();
        for n in fenced {
            let effect = plan
                .taints
                .iter()
                .find(|t| t.kind == n.kind)
                .map(|t| t.effect.clone())
                .unwrap_or_default();
            let latency = Duration::try_from(now.duration_since(n.detected)).unwrap_or_default();
            self.send(Update::Fenced {
                notice: n,
                effect,
                cordoned: plan.cordon,
                changed,
                latency,
                node: node_facts.clone().unwrap_or_default(),
            });
        }
        for (n, why) in withdrawn {
            if rules.policy.action_for(n.kind) >= Action::Taint {
                self.send(Update::Unfenced {
                    notice: n,
                    changed,
                    why,
                });
            } else {
                tracing::info!(notice_id = %n.id, why = %why, "notice withdrawn; nothing to undo");
            }
        }
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
        if s.failing {
            return; // said once; the writer keeps trying
        }
        s.failing = true;
        let about = s
            .tracker
            .active()
            .first()
            .cloned()
            .or_else(|| s.withdrawn.first().map(|(n, _)| n.clone()))
            .or_else(|| s.pending.first().cloned());
        match about {
            Some(notice) => self.send(Update::Failed {
                notice,
                action: "fence",
                error,
                retrying: true,
            }),
            None => tracing::warn!(node, error = %error, "cannot read the node yet; retrying"),
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
        let mut failed = None;
        match ended {
            Ended::Previewed => {
                s.drained.extend(running.covers.iter().cloned());
            }
            Ended::Drain(DrainEnd::Finished(report)) => {
                let ok = report.succeeded();
                if ok {
                    s.drained.extend(running.covers.iter().cloned());
                } else {
                    s.drain_failed = true;
                    failed = Some(format!(
                        "the drain ended with {} pod(s) still on the node",
                        report.remaining.len()
                    ));
                }
                if ok && !report.owners.is_empty() {
                    self.watch_recovery(lead.clone(), report.owners.clone());
                }
                self.send(Update::DrainFinished {
                    notice: lead.clone(),
                    report,
                });
                if ok && self.cfg.out_of_service_taint {
                    self.out_of_service(node, lead);
                }
            }
            Ended::Drain(DrainEnd::Stopped(_)) => {
                self.send(Update::DrainStopped {
                    notice: lead,
                    why: "no notice needs a drain any more".into(),
                });
            }
            Ended::GaveUp(error) => {
                s.drain_failed = true;
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
                failed = Some(error);
            }
        }
        if let Some(why) = failed {
            self.fail_waiters(node, &running.covers, &why);
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
        let policy = self.cfg.rules.policy;
        let dry_run = self.cfg.dry_run;
        let Some(s) = self.nodes.get_mut(node) else {
            return;
        };
        let mut keep = Vec::new();
        for w in std::mem::take(&mut s.waiters) {
            let action = s
                .tracker
                .get(&w.id)
                .map(|n| policy.action_for(n.kind))
                .unwrap_or(Action::None);
            if s.tracker.get(&w.id).is_none() && s.withdrawn_ids.contains(&w.id) {
                let _ = w.done.send(Outcome::Withdrawn);
                continue;
            }
            let announced = s.announced.contains(&w.id) || s.tracker.get(&w.id).is_none();
            let done = announced
                && match action {
                    Action::None | Action::Notify => true,
                    Action::Taint | Action::Cordon => {
                        s.included.get(&w.id).is_some_and(|g| *g <= s.written)
                    }
                    Action::Drain => s.drained_at.get(&w.id).is_some_and(|g| *g <= s.written),
                };
            if done
                || (dry_run
                    && s.included.get(&w.id).is_some_and(|g| *g <= s.written)
                    && action < Action::Drain)
            {
                let _ = w.done.send(Outcome::Done);
            } else if s.gone {
                let _ = w
                    .done
                    .send(Outcome::Failed(format!("node {node:?} not found")));
            } else {
                keep.push(w);
            }
        }
        s.waiters = keep;
        if !s.resumers.is_empty() {
            let verdict = if s.gone {
                Some(Outcome::Failed(format!("node {node:?} not found")))
            } else if !s.loaded || s.drain.is_some() || s.written < s.generation {
                None
            } else {
                // Drained only once that is written (a replica taking over must find it).
                let carried = s.carried(|id| s.drained_at.get(id).is_some_and(|g| *g <= s.written));
                let rules = &self.cfg.rules;
                if !evacuation_plan(&carried, rules).drain_needed {
                    Some(Outcome::Done)
                } else if s.drain_failed {
                    Some(Outcome::Failed("the node's drain did not finish".into()))
                } else {
                    None
                }
            };
            if let Some(v) = verdict {
                for r in std::mem::take(&mut s.resumers) {
                    let _ = r.send(v.clone());
                }
            }
        }
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
        for w in std::mem::take(&mut s.waiters) {
            let _ = w.done.send(Outcome::Failed(why.to_owned()));
        }
        for r in std::mem::take(&mut s.resumers) {
            let _ = r.send(Outcome::Failed(why.to_owned()));
        }
        self.remember_announced(node, &s);
    }

    fn fail_waiters(&mut self, node: &str, ids: &[String], why: &str) {
        let Some(s) = self.nodes.get_mut(node) else {
            return;
        };
        let (failed, keep): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut s.waiters)
            .into_iter()
            .partition(|w| ids.contains(&w.id));
        s.waiters = keep;
        for w in failed {
            let _ = w.done.send(Outcome::Failed(why.to_owned()));
        }
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
            .insert(node.to_owned(), s.announced.clone());
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
