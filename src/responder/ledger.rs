//! One node's bookkeeping, pure: which notices the node carries, which of them were announced,
//! fenced, drained or withdrawn, which generation of the node's record first carried each, and
//! who waits on what. The ledger computes; the actor (`mod.rs`) applies what it returns — the
//! updates to send, the write to make, the drain to start or move, the answers to give — and
//! owns everything that runs (the writer, the drain task, timers).
//!
//! The rules it keeps, each named by a test below:
//! - a notice is announced once: not again after a restart (the node's record carries it) or
//!   after the node's state was dropped and made again (queue mode);
//! - a notice seen before the node's record is read waits for the record (or for the patience
//!   to run out), so a restart does not announce again what it announced before;
//! - a fence is done once the generation that first carried the notice is written; a drain is
//!   done once the generation that first recorded it drained is written (a replica taking the
//!   node over must find it drained);
//! - a withdrawn notice's waiter hears `Withdrawn`, never `Done` (no acknowledgement is sent
//!   for a drain that did not finish); its fence's undo is said once the next write lands;
//! - a notice recorded before the instance's last boot ended with that boot: withdrawn;
//! - a notice resumed from the record keeps the earliest deadline, recorded or seen afresh;
//! - a drain that ended with pods left is not started again until something changes;
//! - every waiter is answered once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use sih_core::{
    Action, Carried, Change, DrainTarget, Notice, NoticeKind, Observation, PlanRules, Source,
    Tracker, evacuation_plan,
};
use sih_node::{NodeFacts, NodeRecord};
use sih_report::Update;

/// What a notice added with [`super::Responder::add`] came to.
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

/// The settings every node's ledger follows.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub plan: PlanRules,
    /// Whose notices these are: another source's recorded notices are kept as found.
    pub source: Source,
    /// Notices recorded before this moment ended with a reboot of the instance.
    pub booted_at: Option<Timestamp>,
    /// Resume the notices of our source recorded on the node (a drain by hand does not).
    pub resume: bool,
    /// `--rebalance-ttl`.
    pub rebalance_ttl: Option<Duration>,
    pub dry_run: bool,
}

impl Rules {
    fn action(&self, n: &Notice) -> Action {
        self.plan.policy.action_for(n.kind)
    }
}

/// What the drain of the node should do after a change of plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainStep {
    /// The running drain follows the plan (tighter, looser, or none at all: it stops).
    Follow {
        target: Option<DrainTarget>,
        covers: Vec<String>,
    },
    /// Start one, planned against `lead`'s deadline, draining for `covers`.
    Start {
        lead: Notice,
        target: DrainTarget,
        covers: Vec<String>,
    },
    Nothing,
}

/// A new generation of what the node should carry.
#[derive(Debug, Clone)]
pub struct Replanned {
    pub generation: u64,
    /// The node's record has been merged: writing may start.
    pub loaded: bool,
    pub carried: Vec<Carried>,
    pub drain: DrainStep,
}

/// How a drain ended, as far as the ledger cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainResult {
    /// Every pod left (or a dry run listed them): its notices count as drained.
    Drained,
    /// Pods were left, or it gave up: no new drain until something changes.
    Failed,
    /// Stopped because no notice needs it any more.
    Stopped,
}

/// A write that failed: said once until a write works again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteFailure {
    /// Said already; the writer keeps trying.
    Said,
    /// The first failure, about this notice.
    About(Notice),
    /// The first failure, before any notice (the record cannot be read yet).
    NoNotice,
}

/// The reason given when a notice is withdrawn.
pub fn withdrawal_reason(n: &Notice) -> String {
    match n.kind {
        NoticeKind::RebalanceRecommendation => "the rebalance recommendation disappeared".into(),
        NoticeKind::ScheduledMaintenance => {
            format!("scheduled event {} is no longer active", n.id)
        }
        _ => format!("the {} notice was withdrawn", n.kind),
    }
}

/// One node's ledger; `W` is how a waiter is answered (a oneshot sender in the actor, a
/// label in the tests).
#[derive(Debug)]
pub struct Ledger<W> {
    node: String,
    rules: Arc<Rules>,
    tracker: Tracker,
    /// Announced (here, or before a restart: recorded on the node).
    announced: HashSet<String>,
    /// Reported fenced (the Fenced update goes out once per notice).
    fenced: HashSet<String>,
    drained: HashSet<String>,
    /// The generation that first carried each notice (its fence is done once written).
    included: HashMap<String, u64>,
    /// The generation that first recorded each notice as drained.
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
    /// The last write failed (its failure was reported; the next success says so).
    failing: bool,
    /// A dry run's last "would write": said once, not again for each recomputed plan that
    /// would write the same (the drained flag's record, say).
    would_write: Option<String>,
    gone: bool,
    /// The last drain ended with pods still there (its deadline passed): no new drain until
    /// something changes (a notice, a deadline, a message about it again), never in a loop.
    drain_failed: bool,
    waiters: Vec<(String, W)>,
    /// Takeovers waiting for the whole node to be done (`Resume`).
    resumers: Vec<W>,
}

impl<W> Ledger<W> {
    /// A node's ledger; `announced` is what was said about it before its state was dropped.
    pub fn new(node: &str, rules: Arc<Rules>, announced: HashSet<String>) -> Self {
        Self {
            node: node.to_owned(),
            rules,
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
            failing: false,
            would_write: None,
            gone: false,
            drain_failed: false,
            waiters: Vec::new(),
            resumers: Vec::new(),
        }
    }

    pub fn announced(&self) -> &HashSet<String> {
        &self.announced
    }

    /// The highest generation written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    #[cfg(test)]
    pub fn notice(&self, id: &str) -> Option<&Notice> {
        self.tracker.get(id)
    }

    /// What a source saw (a complete look: withdrawn notices are gone).
    pub fn observe(&mut self, seen: Observation) -> Vec<Change> {
        self.tracker.observe(seen)
    }

    /// One notice with its waiter (a queue message, a drain by hand).
    pub fn add(&mut self, notice: Notice, waiter: W) -> Vec<Change> {
        let id = notice.id.clone();
        let change = self.tracker.add(notice);
        self.waiters.push((id, waiter));
        // A message about it again: worth another try of a drain that failed.
        self.drain_failed = false;
        change.into_iter().collect()
    }

    /// A waiter for a notice already observed.
    pub fn wait(&mut self, id: &str, waiter: W) {
        self.waiters.push((id.to_owned(), waiter));
    }

    /// A waiter for the whole node (a takeover). A drain that failed stays failed: its
    /// messages bring it back.
    pub fn wait_whole(&mut self, waiter: W) {
        self.resumers.push(waiter);
    }

    /// Rebalance recommendations past `--rebalance-ttl` at `now`, withdrawn.
    pub fn expire_rebalances(&mut self, now: Timestamp) -> Vec<Change> {
        match self.rules.rebalance_ttl {
            Some(ttl) => self.tracker.expire_rebalances(ttl, now),
            None => Vec::new(),
        }
    }

    /// Takes in what changed (none: nothing to do) and says what to tell. A plan follows
    /// with [`Self::replan`].
    pub fn apply(&mut self, changes: Vec<Change>) -> Vec<Update> {
        let mut say = Vec::new();
        if changes.is_empty() {
            return say;
        }
        self.drain_failed = false;
        for c in changes {
            match c {
                Change::Added(n) => {
                    self.withdrawn_ids.remove(&n.id);
                    if self.loaded || self.impatient {
                        say.extend(self.announce(n));
                    } else {
                        self.pending.push(n);
                    }
                }
                Change::Withdrawn(n) => {
                    let why = withdrawal_reason(&n);
                    self.withdraw(n, why);
                }
                Change::Expired(n) => {
                    let why = format!(
                        "no interruption followed the rebalance recommendation within --rebalance-ttl {}s",
                        self.rules.rebalance_ttl.unwrap_or_default().as_secs()
                    );
                    self.withdraw(n, why);
                }
                Change::DeadlineMoved { id, from, .. } => {
                    if let Some(n) = self.tracker.get(&id).cloned() {
                        say.push(Update::DeadlineMoved { notice: n, from });
                    }
                }
            }
        }
        say
    }

    /// Tells about a notice, once.
    fn announce(&mut self, n: Notice) -> Option<Update> {
        let action = self.rules.action(&n);
        self.announced
            .insert(n.id.clone())
            .then_some(Update::Detected { notice: n, action })
    }

    /// A notice gone: its fence is undone on the next write (`Unfenced` says why).
    fn withdraw(&mut self, n: Notice, why: String) {
        self.withdrawn_ids.insert(n.id.clone());
        self.drained.remove(&n.id);
        self.drained_at.remove(&n.id);
        self.announced.remove(&n.id);
        self.included.remove(&n.id);
        let was_fenced = self.fenced.remove(&n.id);
        if was_fenced || self.rules.action(&n) < Action::Taint {
            self.withdrawn.push((n, why));
        }
    }

    /// The patience for the node's record is over (or the record was read): what waited is
    /// announced, and from now on every new notice at once. `true` with the announcements:
    /// they go out without the record.
    pub fn patience_over(&mut self) -> (Vec<Update>, bool) {
        if self.gone && !self.loaded {
            self.pending.clear();
            return (Vec::new(), false);
        }
        self.impatient = true;
        let pending = std::mem::take(&mut self.pending);
        let unread = !pending.is_empty() && !self.loaded;
        let say = pending
            .into_iter()
            .filter_map(|n| self.announce(n))
            .collect();
        (say, unread)
    }

    /// Merges the node's record (before the first write); returns the notices resumed from it.
    /// The announcements that waited for it follow with [`Self::patience_over`].
    pub fn load(&mut self, record: Option<NodeRecord>) -> Vec<Notice> {
        let rules = Arc::clone(&self.rules);
        let mut resumed = Vec::new();
        let mut rebooted = Vec::new();
        for c in record.map(|r| r.notices).unwrap_or_default() {
            if c.notice.source != rules.source {
                continue; // another writer's: kept on the node as found
            }
            if !rules.resume {
                continue; // replaced by what we write
            }
            let id = c.notice.id.clone();
            if rules.booted_at.is_some_and(|b| c.notice.detected < b) {
                // A reboot ends whatever fenced the node before it.
                self.tracker.finish(&id);
                rebooted.push(c.notice);
                continue;
            }
            if self.tracker.get(&id).is_none() {
                resumed.push(c.notice.clone());
                self.tracker.resume(c.notice);
            } else {
                // Seen afresh before the record was read: the earliest deadline stands. A
                // cloud that states no time (GCE) has its deadline counted from detection, so
                // a restart's fresh look would otherwise move the end later than the instance's.
                self.tracker.add(c.notice);
            }
            self.announced.insert(id.clone());
            self.fenced.insert(id.clone());
            if c.drained {
                self.drained.insert(id);
            }
        }
        self.loaded = true;
        for n in rebooted {
            let why = format!("the instance rebooted after the {} notice {}", n.kind, n.id);
            self.withdrawn.push((n, why));
        }
        resumed
    }

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

    /// The plan for what the node carries now: a new generation for the writer, and what the
    /// drain should do (`drain_running`: one runs).
    pub fn replan(&mut self, drain_running: bool) -> Replanned {
        let carried = self.carried(|id| self.drained.contains(id));
        self.generation += 1;
        let generation = self.generation;
        for c in &carried {
            self.included
                .entry(c.notice.id.clone())
                .or_insert(generation);
            if c.drained {
                self.drained_at
                    .entry(c.notice.id.clone())
                    .or_insert(generation);
            }
        }
        let plan = evacuation_plan(&carried, &self.rules.plan);
        let covers: Vec<String> = carried
            .iter()
            .filter(|c| self.rules.action(&c.notice) == Action::Drain)
            .map(|c| c.notice.id.clone())
            .collect();
        let drain = if drain_running {
            DrainStep::Follow {
                target: plan.drain,
                covers,
            }
        } else if let (Some(target), true, true, false) = (
            plan.drain,
            plan.drain_needed,
            self.loaded,
            self.drain_failed,
        ) {
            // Not before the record is read: it may say the drain was done already.
            plan.drain_lead
                .as_ref()
                .and_then(|id| carried.iter().find(|c| &c.notice.id == id))
                .map_or(DrainStep::Nothing, |c| DrainStep::Start {
                    lead: c.notice.clone(),
                    target,
                    covers,
                })
        } else {
            DrainStep::Nothing
        };
        Replanned {
            generation,
            loaded: self.loaded,
            carried,
            drain,
        }
    }

    /// A dry run's write of `what`: the notice to tell it about, once per distinct `what`.
    pub fn would_write(&mut self, what: &str) -> Option<Notice> {
        let about = self.tracker.active().first().cloned();
        let new = self.would_write.as_deref() != Some(what);
        self.would_write = Some(what.to_owned());
        about.filter(|_| new)
    }

    /// `generation` is written (`changed`: the node changed; `facts`: what it said of itself,
    /// `now`: the moment, for the fence's latency). Says who got fenced by this write, and
    /// whose fence it took away.
    pub fn wrote(
        &mut self,
        generation: u64,
        changed: bool,
        facts: Option<NodeFacts>,
        now: Timestamp,
    ) -> Vec<Update> {
        self.failing = false;
        self.gone = false;
        self.written = self.written.max(generation);
        if self.rules.dry_run {
            return Vec::new();
        }
        let rules = Arc::clone(&self.rules);
        let carried: Vec<Carried> = self
            .tracker
            .active()
            .iter()
            .map(|n| Carried::new(n.clone()))
            .collect();
        let plan = evacuation_plan(&carried, &rules.plan);
        let fenced: Vec<Notice> = self
            .tracker
            .active()
            .iter()
            .filter(|n| {
                rules.action(n) >= Action::Taint
                    && self.included.get(&n.id).is_some_and(|g| *g <= generation)
                    && !self.fenced.contains(&n.id)
            })
            .cloned()
            .collect();
        let mut say = Vec::new();
        for n in fenced {
            self.fenced.insert(n.id.clone());
            let effect = plan
                .taints
                .iter()
                .find(|t| t.kind == n.kind)
                .map(|t| t.effect.clone())
                .unwrap_or_default();
            let latency = Duration::try_from(now.duration_since(n.detected)).unwrap_or_default();
            say.push(Update::Fenced {
                notice: n,
                effect,
                cordoned: plan.cordon,
                changed,
                latency,
                node: facts.clone().unwrap_or_default(),
            });
        }
        for (n, why) in std::mem::take(&mut self.withdrawn) {
            if rules.action(&n) >= Action::Taint {
                say.push(Update::Unfenced {
                    notice: n,
                    changed,
                    why,
                });
            } else {
                tracing::info!(notice_id = %n.id, why = %why, "notice withdrawn; nothing to undo");
            }
        }
        say
    }

    /// A write failed: what to say, once until a write works again.
    pub fn write_failed(&mut self) -> WriteFailure {
        if self.failing {
            return WriteFailure::Said;
        }
        self.failing = true;
        self.tracker
            .active()
            .first()
            .or_else(|| self.withdrawn.first().map(|(n, _)| n))
            .or_else(|| self.pending.first())
            .cloned()
            .map_or(WriteFailure::NoNotice, WriteFailure::About)
    }

    /// The node does not exist (after its write failed so).
    pub fn node_gone(&mut self) {
        self.gone = true;
        if !self.loaded {
            // No node, nothing to evacuate: its notices are not announced either.
            self.pending.clear();
        }
    }

    /// The node's drain for `covers` ended so.
    pub fn drain_ended(&mut self, covers: &[String], result: DrainResult) {
        match result {
            DrainResult::Drained => self.drained.extend(covers.iter().cloned()),
            DrainResult::Failed => self.drain_failed = true,
            DrainResult::Stopped => {}
        }
    }

    /// The waiters on `ids`, answered `Failed(why)`.
    pub fn fail(&mut self, ids: &[String], why: &str) -> Vec<(W, Outcome)> {
        let (failed, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(id, _)| ids.contains(id));
        self.waiters = keep;
        failed
            .into_iter()
            .map(|(_, w)| (w, Outcome::Failed(why.to_owned())))
            .collect()
    }

    /// Every waiter, answered `Failed(why)` (we stop acting on the node).
    pub fn fail_all(&mut self, why: &str) -> Vec<(W, Outcome)> {
        let waiters = std::mem::take(&mut self.waiters)
            .into_iter()
            .map(|(_, w)| w);
        let resumers = std::mem::take(&mut self.resumers);
        waiters
            .chain(resumers)
            .map(|w| (w, Outcome::Failed(why.to_owned())))
            .collect()
    }

    /// The waiters whose notices' actions are now done (or withdrawn, or whose node is gone),
    /// each with its answer; the others keep waiting.
    pub fn settle(&mut self, drain_running: bool) -> Vec<(W, Outcome)> {
        let mut answers = Vec::new();
        for (id, w) in std::mem::take(&mut self.waiters) {
            match self.verdict(&id) {
                Some(o) => answers.push((w, o)),
                None => self.waiters.push((id, w)),
            }
        }
        if !self.resumers.is_empty()
            && let Some(v) = self.whole_verdict(drain_running)
        {
            answers.extend(
                std::mem::take(&mut self.resumers)
                    .into_iter()
                    .map(|w| (w, v.clone())),
            );
        }
        answers
    }

    fn verdict(&self, id: &str) -> Option<Outcome> {
        let notice = self.tracker.get(id);
        if notice.is_none() && self.withdrawn_ids.contains(id) {
            return Some(Outcome::Withdrawn);
        }
        let action = notice.map_or(Action::None, |n| self.rules.action(n));
        let fenced = self.included.get(id).is_some_and(|g| *g <= self.written);
        // A notice no longer carried counts as done: its source withdrew it.
        let announced = self.announced.contains(id) || notice.is_none();
        let done = announced
            && match action {
                Action::None | Action::Notify => true,
                Action::Taint | Action::Cordon => fenced,
                Action::Drain => self.drained_at.get(id).is_some_and(|g| *g <= self.written),
            };
        if done || (self.rules.dry_run && fenced && action < Action::Drain) {
            Some(Outcome::Done)
        } else if self.gone {
            Some(Outcome::Failed(format!("node {:?} not found", self.node)))
        } else {
            None
        }
    }

    /// A takeover's answer: once nothing recorded on the node needs a drain any more.
    fn whole_verdict(&self, drain_running: bool) -> Option<Outcome> {
        if self.gone {
            return Some(Outcome::Failed(format!("node {:?} not found", self.node)));
        }
        if !self.loaded || drain_running || self.written < self.generation {
            return None;
        }
        // Drained only once that is written (a replica taking over must find it).
        let carried =
            self.carried(|id| self.drained_at.get(id).is_some_and(|g| *g <= self.written));
        if !evacuation_plan(&carried, &self.rules.plan).drain_needed {
            Some(Outcome::Done)
        } else if self.drain_failed {
            Some(Outcome::Failed("the node's drain did not finish".into()))
        } else {
            None
        }
    }

    /// Nothing waits or remains to be written (`drain_running`: a drain runs).
    pub fn idle(&self, drain_running: bool) -> bool {
        !drain_running
            && self.waiters.is_empty()
            && self.resumers.is_empty()
            && self.pending.is_empty()
            && self.withdrawn.is_empty()
            && self.written >= self.generation
    }
}

#[cfg(test)]
mod tests {
    //! Each rule of the module's header, as a story told to one ledger: what came in, what the
    //! ledger said, and who heard what. The harness plays the actor's part (a replan after
    //! each change, waiters settled after each step) without any of its tasks.

    use super::*;
    use sih_core::ActionPolicy;

    const NODE: &str = "node-1";

    fn at(s: u64) -> Timestamp {
        Timestamp::from_second(1_796_000_000 + s as i64).unwrap()
    }

    fn spot() -> Notice {
        Notice::spot_interruption("i-1", NODE, at(0), at(120), Source::Imds)
    }

    fn rebalance() -> Notice {
        Notice::rebalance("i-1", NODE, at(0), Source::Imds)
    }

    fn maintenance(id: &str) -> Notice {
        Notice::scheduled_maintenance(id, "i-1", NODE, at(0), Some(at(600)), Source::Imds)
    }

    fn rules() -> Rules {
        Rules {
            resume: true,
            ..Rules::default()
        }
    }

    /// A complete look at the metadata service that saw `notices` (every kind readable).
    fn look(notices: &[Notice]) -> Observation {
        Observation {
            notices: notices.to_vec(),
            readable: vec![
                NoticeKind::SpotInterruption,
                NoticeKind::RebalanceRecommendation,
                NoticeKind::ScheduledMaintenance,
            ],
            unreadable_ids: Vec::new(),
        }
    }

    fn record(notices: &[(Notice, bool)]) -> NodeRecord {
        NodeRecord {
            notices: notices
                .iter()
                .map(|(n, drained)| Carried {
                    notice: n.clone(),
                    drained: *drained,
                })
                .collect(),
            cordoned: true,
            was_cordoned: false,
        }
    }

    struct Harness {
        ledger: Ledger<&'static str>,
        said: Vec<String>,
        heard: Vec<String>,
        drain: Option<Vec<String>>,
        last: Option<Replanned>,
        /// The clock rebalance recommendations expire by.
        now: Timestamp,
    }

    impl Harness {
        fn new(rules: Rules) -> Self {
            Self::after(rules, HashSet::new())
        }

        fn after(rules: Rules, announced: HashSet<String>) -> Self {
            Self {
                ledger: Ledger::new(NODE, Arc::new(rules), announced),
                said: Vec::new(),
                heard: Vec::new(),
                drain: None,
                last: None,
                now: at(0),
            }
        }

        fn say(&mut self, updates: Vec<Update>) {
            self.said.extend(updates.iter().map(brief));
        }

        fn settle(&mut self) {
            let answers = self.ledger.settle(self.drain.is_some());
            self.answer(answers);
        }

        fn answer(&mut self, answers: Vec<(&'static str, Outcome)>) {
            self.heard
                .extend(answers.into_iter().map(|(w, o)| format!("{w}: {o:?}")));
        }

        fn replan(&mut self) {
            let plan = self.ledger.replan(self.drain.is_some());
            match &plan.drain {
                DrainStep::Start { lead, covers, .. } => {
                    self.said.push(format!("drain for {}", lead.id));
                    self.drain = Some(covers.clone());
                }
                DrainStep::Follow { target: None, .. } => self.said.push("drain stops".into()),
                DrainStep::Follow { covers, .. } => self.drain = Some(covers.clone()),
                DrainStep::Nothing => {}
            }
            self.last = Some(plan);
            self.settle();
        }

        fn changes(&mut self, mut changes: Vec<Change>) {
            changes.extend(self.ledger.expire_rebalances(self.now));
            if changes.is_empty() {
                return self.settle();
            }
            let say = self.ledger.apply(changes);
            self.say(say);
            self.replan();
        }

        fn observe(&mut self, notices: &[Notice]) {
            let changes = self.ledger.observe(look(notices));
            self.changes(changes);
        }

        fn add(&mut self, n: Notice, waiter: &'static str) {
            let changes = self.ledger.add(n, waiter);
            if changes.is_empty() {
                self.replan();
            } else {
                self.changes(changes);
            }
        }

        fn load(&mut self, record: Option<NodeRecord>) {
            self.ledger.load(record);
            self.patience();
            self.replan();
        }

        fn patience(&mut self) {
            let (say, _) = self.ledger.patience_over();
            self.say(say);
        }

        /// The latest generation lands on the node.
        fn write(&mut self) {
            let generation = self.last.as_ref().map_or(0, |p| p.generation);
            self.write_generation(generation);
        }

        fn write_generation(&mut self, generation: u64) {
            let say = self.ledger.wrote(generation, true, None, at(1));
            self.say(say);
            self.settle();
        }

        fn drain_ended(&mut self, result: DrainResult) {
            let covers = self.drain.take().expect("a drain runs");
            self.ledger.drain_ended(&covers, result);
            if result == DrainResult::Failed {
                let answers = self.ledger.fail(&covers, "pods left");
                self.answer(answers);
            }
            self.replan();
        }

        /// What was said and heard since the last look.
        fn take(&mut self) -> (Vec<String>, Vec<String>) {
            (
                std::mem::take(&mut self.said),
                std::mem::take(&mut self.heard),
            )
        }
    }

    fn brief(u: &Update) -> String {
        match u {
            Update::Detected { notice, action } => format!("detected {} ({action})", notice.id),
            Update::Fenced { notice, .. } => format!("fenced {}", notice.id),
            Update::Unfenced { notice, why, .. } => format!("unfenced {}: {why}", notice.id),
            Update::DeadlineMoved { notice, .. } => format!("deadline moved {}", notice.id),
            other => format!("{other:?}"),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const SPOT: &str = "i-1-spot-interruption";
    const REBALANCE: &str = "i-1-rebalance";

    #[test]
    fn a_notice_is_announced_once_however_often_it_is_seen() {
        let mut h = Harness::new(rules());
        h.load(None);
        h.observe(&[spot()]);
        h.observe(&[spot()]);
        h.write();
        h.observe(&[spot()]);
        let (said, _) = h.take();
        assert_eq!(
            said,
            strings(&[
                &format!("detected {SPOT} (drain)"),
                &format!("drain for {SPOT}"),
                &format!("fenced {SPOT}"),
            ])
        );
    }

    #[test]
    fn a_node_made_again_remembers_what_was_announced_about_it() {
        let mut first = Harness::new(rules());
        first.load(None);
        first.observe(&[spot()]);
        let announced = first.ledger.announced().clone();
        // Its state dropped (queue mode); the node's record cannot be read this time.
        let mut again = Harness::after(rules(), announced);
        again.observe(&[spot()]);
        again.patience();
        let (said, _) = again.take();
        assert!(!said.iter().any(|s| s.starts_with("detected")), "{said:?}");
    }

    #[test]
    fn a_notice_seen_before_the_record_is_read_waits_for_the_record() {
        let mut h = Harness::new(rules());
        h.observe(&[spot()]);
        assert_eq!(
            h.take().0,
            Vec::<String>::new(),
            "nothing before the record"
        );
        h.load(None);
        assert_eq!(
            h.take().0,
            strings(&[
                &format!("detected {SPOT} (drain)"),
                &format!("drain for {SPOT}")
            ])
        );
    }

    #[test]
    fn without_the_record_a_notice_is_announced_when_the_patience_runs_out() {
        let mut h = Harness::new(rules());
        h.observe(&[spot()]);
        let (said, unread) = h.ledger.patience_over();
        assert!(unread, "said to go out without the record");
        assert_eq!(
            said.iter().map(brief).collect::<Vec<_>>(),
            [format!("detected {SPOT} (drain)")]
        );
        // From now on at once, still without the record; no drain before it is read.
        h.observe(&[spot(), rebalance()]);
        assert_eq!(h.take().0, [format!("detected {REBALANCE} (taint)")]);
        assert!(h.drain.is_none());
    }

    #[test]
    fn a_restart_resumes_what_the_record_carries_without_announcing_it_again() {
        let mut h = Harness::new(rules());
        h.observe(&[spot()]);
        h.load(Some(record(&[(spot(), false)])));
        // Resumed: no announcement, no second fence report, its drain goes on.
        h.write();
        assert_eq!(h.take().0, [format!("drain for {SPOT}")]);
    }

    #[test]
    fn a_restart_keeps_the_earlier_deadline_of_the_record() {
        // GCE states no time: the deadline is counted from detection, so the restarted agent's
        // first look says later than the one before the restart did (soak seed 60158).
        let fresh = Notice::spot_interruption("i-1", NODE, at(40), at(150), Source::Imds);
        let mut h = Harness::new(rules());
        h.observe(&[fresh]);
        h.load(Some(record(&[(spot(), false)])));
        let plan = h.last.as_ref().unwrap();
        assert_eq!(plan.carried[0].notice.deadline, Some(at(120)));
        let DrainStep::Start { target, .. } = &plan.drain else {
            panic!("the recorded drain resumes");
        };
        assert!(target.deadline <= at(120));
        // The other way round: the record's later deadline never moves it later.
        let mut h = Harness::new(rules());
        h.observe(&[spot()]);
        let late = Notice::spot_interruption("i-1", NODE, at(0), at(300), Source::Imds);
        h.load(Some(record(&[(late, false)])));
        assert_eq!(
            h.last.as_ref().unwrap().carried[0].notice.deadline,
            Some(at(120))
        );
    }

    #[test]
    fn a_restart_after_the_drain_finished_drains_no_more() {
        let mut h = Harness::new(rules());
        h.load(Some(record(&[(spot(), true)])));
        h.observe(&[spot()]);
        h.write();
        assert_eq!(h.take().0, Vec::<String>::new());
        assert!(h.drain.is_none());
    }

    #[test]
    fn another_sources_record_is_left_alone_and_a_drain_by_hand_replaces_ours() {
        let queue = Notice::asg_termination("i-1", NODE, at(0), Source::Queue);
        let mut h = Harness::new(rules());
        h.load(Some(record(&[(queue, false)])));
        assert!(h.ledger.notice("i-1-asg-termination").is_none());
        let mut by_hand = Harness::new(Rules {
            resume: false,
            ..rules()
        });
        by_hand.load(Some(record(&[(spot(), false)])));
        assert!(by_hand.ledger.notice(SPOT).is_none());
    }

    #[test]
    fn a_notice_recorded_before_the_last_boot_ended_with_it() {
        let mut h = Harness::new(Rules {
            booted_at: Some(at(60)),
            ..rules()
        });
        h.load(Some(record(&[(spot(), false)])));
        assert!(h.drain.is_none(), "no drain for what the reboot ended");
        h.write();
        assert_eq!(
            h.take().0,
            [format!(
                "unfenced {SPOT}: the instance rebooted after the spot-interruption notice {SPOT}"
            )]
        );
        // Seen again in this boot (a stale metadata answer): never acted on again.
        h.observe(&[spot()]);
        assert_eq!(h.take().0, Vec::<String>::new());
    }

    #[test]
    fn a_fence_is_done_once_the_generation_that_carried_it_is_written() {
        let mut h = Harness::new(rules());
        h.load(None);
        let before = h.last.as_ref().unwrap().generation;
        h.add(rebalance(), "w");
        h.write_generation(before);
        assert_eq!(
            h.take(),
            (strings(&[&format!("detected {REBALANCE} (taint)")]), vec![])
        );
        h.write();
        assert_eq!(
            h.take(),
            (
                strings(&[&format!("fenced {REBALANCE}")]),
                strings(&["w: Done"])
            )
        );
        h.write();
        assert_eq!(h.take(), (vec![], vec![]), "fenced once, answered once");
    }

    #[test]
    fn a_drain_is_done_once_its_drained_flag_is_written() {
        let mut h = Harness::new(rules());
        h.load(None);
        h.add(spot(), "w");
        h.write();
        assert_eq!(h.take().1, Vec::<String>::new(), "fenced is not drained");
        h.drain_ended(DrainResult::Drained);
        assert!(h.last.as_ref().unwrap().carried[0].drained);
        assert_eq!(
            h.take().1,
            Vec::<String>::new(),
            "drained, not yet recorded"
        );
        h.write();
        assert_eq!(h.take().1, strings(&["w: Done"]));
    }

    #[test]
    fn overlapping_notices_share_one_drain_that_follows_the_plan() {
        let mut h = Harness::new(rules());
        h.load(None);
        h.observe(&[maintenance("evt-1")]);
        assert_eq!(h.take().0[1], "drain for evt-1");
        // A spot notice while it runs: the same drain, now for both, against the nearer deadline.
        h.observe(&[maintenance("evt-1"), spot()]);
        assert_eq!(h.take().0, [format!("detected {SPOT} (drain)")]);
        assert_eq!(h.drain.as_deref().unwrap(), ["evt-1", SPOT]);
        let DrainStep::Follow {
            target: Some(t), ..
        } = &h.last.as_ref().unwrap().drain
        else {
            panic!("the running drain follows");
        };
        assert!(t.deadline <= at(120), "the spot notice's deadline leads");
        h.drain_ended(DrainResult::Drained);
        h.write();
        assert!(h.last.as_ref().unwrap().carried.iter().all(|c| c.drained));
    }

    #[test]
    fn a_withdrawn_notice_stops_its_drain_and_its_waiter_hears_withdrawn() {
        let mut h = Harness::new(rules());
        h.load(None);
        h.observe(&[maintenance("evt-1")]);
        h.ledger.wait("evt-1", "ack");
        h.write();
        h.take();
        h.observe(&[]);
        let (said, heard) = h.take();
        assert_eq!(said, ["drain stops"]);
        assert_eq!(
            heard,
            ["ack: Withdrawn"],
            "never Done: the drain did not finish"
        );
        h.write();
        assert_eq!(
            h.take().0,
            ["unfenced evt-1: scheduled event evt-1 is no longer active"]
        );
    }

    #[test]
    fn a_withdrawn_notice_seen_again_is_announced_again_and_waited_on_afresh() {
        let mut h = Harness::new(rules());
        h.load(None);
        h.observe(&[rebalance()]);
        h.write();
        h.observe(&[]);
        h.write();
        h.take();
        h.observe(&[rebalance()]);
        h.ledger.wait(REBALANCE, "w");
        h.settle();
        assert_eq!(
            h.take(),
            (strings(&[&format!("detected {REBALANCE} (taint)")]), vec![])
        );
        h.write();
        assert_eq!(h.take().1, strings(&["w: Done"]));
    }

    #[test]
    fn a_rebalance_past_its_ttl_is_undone_once() {
        let mut h = Harness::new(Rules {
            rebalance_ttl: Some(Duration::from_secs(60)),
            ..rules()
        });
        h.load(None);
        h.observe(&[rebalance()]);
        h.write();
        h.take();
        h.now = at(61);
        h.observe(&[rebalance()]);
        h.write();
        assert_eq!(
            h.take().0,
            [format!(
                "unfenced {REBALANCE}: no interruption followed the rebalance recommendation within --rebalance-ttl 60s"
            )]
        );
        // Still visible: not taken up again.
        h.observe(&[rebalance()]);
        h.write();
        assert_eq!(h.take().0, Vec::<String>::new());
    }

    #[test]
    fn a_drain_that_left_pods_is_not_started_again_until_something_changes() {
        let mut h = Harness::new(rules());
        h.load(None);
        h.add(spot(), "w");
        h.write();
        h.take();
        h.drain_ended(DrainResult::Failed);
        assert_eq!(h.take(), (vec![], strings(&["w: Failed(\"pods left\")"])));
        assert!(h.drain.is_none(), "not again in a loop");
        h.observe(&[spot()]);
        assert!(h.drain.is_none(), "the same look again changes nothing");
        // The message about it again: worth another try.
        h.add(spot(), "w2");
        assert_eq!(h.take().0, [format!("drain for {SPOT}")]);
    }

    #[test]
    fn a_node_that_is_gone_fails_its_waiters_and_announces_nothing_unread() {
        let mut h = Harness::new(rules());
        h.add(spot(), "w");
        h.ledger.node_gone();
        h.patience();
        h.settle();
        assert_eq!(
            h.take(),
            (
                vec![],
                strings(&["w: Failed(\"node \\\"node-1\\\" not found\")"])
            )
        );
    }

    #[test]
    fn a_write_failure_is_said_once_until_a_write_works() {
        let mut h = Harness::new(rules());
        assert_eq!(h.ledger.write_failed(), WriteFailure::NoNotice);
        assert_eq!(h.ledger.write_failed(), WriteFailure::Said);
        h.load(None);
        h.write();
        h.observe(&[spot()]);
        assert_eq!(h.ledger.write_failed(), WriteFailure::About(spot()));
        assert_eq!(h.ledger.write_failed(), WriteFailure::Said);
    }

    #[test]
    fn a_dry_run_says_what_it_would_write_once_and_answers_fences_as_written() {
        let mut h = Harness::new(Rules {
            dry_run: true,
            ..rules()
        });
        h.load(None);
        h.add(rebalance(), "w");
        assert_eq!(h.ledger.would_write("taint"), Some(rebalance()));
        assert_eq!(h.ledger.would_write("taint"), None, "the same, said once");
        h.write();
        let (said, heard) = h.take();
        assert!(!said.iter().any(|s| s.starts_with("fenced")), "{said:?}");
        assert_eq!(heard, ["w: Done"]);
    }

    #[test]
    fn a_takeover_is_answered_once_the_drained_record_is_written() {
        let mut h = Harness::new(rules());
        h.ledger.wait_whole("takeover");
        h.settle();
        h.load(Some(record(&[(spot(), false)])));
        assert!(h.drain.is_some(), "the recorded drain resumes");
        h.write();
        assert_eq!(h.take().1, Vec::<String>::new());
        h.drain_ended(DrainResult::Drained);
        assert_eq!(h.take().1, Vec::<String>::new(), "not before it is written");
        h.write();
        assert_eq!(h.take().1, strings(&["takeover: Done"]));
    }

    #[test]
    fn every_waiter_is_answered_exactly_once() {
        let mut h = Harness::new(rules());
        h.load(None);
        h.add(rebalance(), "a");
        h.ledger.wait(REBALANCE, "b");
        h.ledger.wait_whole("c");
        for _ in 0..3 {
            h.write();
        }
        let (_, mut heard) = h.take();
        heard.sort();
        assert_eq!(heard, ["a: Done", "b: Done", "c: Done"]);
        assert!(h.ledger.idle(false));
        // Abandoning answers the ones still waiting, and only those.
        h.add(spot(), "d");
        let answers = h.ledger.fail_all("claim lost");
        assert_eq!(answers.len(), 1);
        assert!(h.ledger.settle(false).is_empty());
    }

    #[test]
    fn a_restated_earlier_deadline_is_said() {
        let mut h = Harness::new(rules());
        h.load(None);
        h.observe(&[spot()]);
        h.take();
        let sooner = Notice::spot_interruption("i-1", NODE, at(5), at(90), Source::Imds);
        h.observe(&[sooner]);
        assert_eq!(h.take().0, [format!("deadline moved {SPOT}")]);
        let DrainStep::Follow {
            target: Some(t), ..
        } = &h.last.as_ref().unwrap().drain
        else {
            panic!("the running drain follows");
        };
        assert!(t.deadline <= at(90));
    }

    #[test]
    fn cordon_only_caps_every_kind_and_needs_no_drain() {
        let mut h = Harness::new(Rules {
            plan: PlanRules {
                policy: ActionPolicy {
                    cap: Some(Action::Cordon),
                    ..ActionPolicy::default()
                },
                ..PlanRules::default()
            },
            ..rules()
        });
        h.load(None);
        h.add(spot(), "w");
        h.write();
        let (said, heard) = h.take();
        assert_eq!(
            said,
            [
                format!("detected {SPOT} (cordon)"),
                format!("fenced {SPOT}")
            ]
        );
        assert_eq!(heard, ["w: Done"]);
        assert!(h.drain.is_none());
    }
}
