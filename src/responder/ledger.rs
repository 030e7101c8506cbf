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
    Tracker, evacuation_plan, gone_from,
};
use sih_node::{NodeFacts, NodeRecord};
use sih_report::Update;

/// What a notice added with [`super::Responder::add`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
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

/// A notice of ours taken over from the node's record after a restart.
#[derive(Debug, Clone)]
pub struct Resumed {
    pub notice: Notice,
    /// The source had named it again before the record was read; its rebalance timer (if any)
    /// already runs.
    pub seen_again: bool,
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
    /// The source's last complete look, for a record read after it.
    last_look: Option<Observation>,
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
            last_look: None,
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
        if !self.loaded {
            self.last_look = Some(seen.clone());
        }
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

    /// Merges the node's record (before the first write); returns the notices resumed from it,
    /// including those the source named again before the record was read (which of the two
    /// comes first is a race a restart may win either way). The announcements that waited for
    /// it follow with [`Self::patience_over`].
    pub fn load(&mut self, record: Option<NodeRecord>) -> Vec<Resumed> {
        let rules = Arc::clone(&self.rules);
        let mut resumed = Vec::new();
        let mut rebooted = Vec::new();
        let mut unlisted = Vec::new();
        let last_look = self.last_look.take();
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
            if self.tracker.get(&id).is_none()
                && last_look.as_ref().is_some_and(|l| gone_from(l, &c.notice))
            {
                // The source's look before the record was read no longer lists it (a
                // maintenance cancelled while the API could not be read; on GCE a restart also
                // names the same maintenance afresh): its fence is undone, it is not resumed
                // (the soak's seed 62498: a cancelled maintenance left its node fenced).
                unlisted.push(c.notice);
                continue;
            }
            let seen_again = self.tracker.get(&id).is_some();
            resumed.push(Resumed {
                notice: c.notice.clone(),
                seen_again,
            });
            if seen_again {
                // Seen afresh before the record was read: the earliest deadline stands. A
                // cloud that states no time (GCE) has its deadline counted from detection, so
                // a restart's fresh look would otherwise move the end later than the instance's.
                self.tracker.add(c.notice);
            } else {
                self.tracker.resume(c.notice);
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
        for n in unlisted {
            let why = withdrawal_reason(&n);
            self.withdrawn_ids.insert(n.id.clone());
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
    pub fn fail(&mut self, ids: &[String], why: &str) -> Vec<(W, Settled)> {
        let (failed, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(id, _)| ids.contains(id));
        self.waiters = keep;
        failed
            .into_iter()
            .map(|(_, w)| (w, Settled::Failed(why.to_owned())))
            .collect()
    }

    /// Every waiter, answered `Failed(why)` (we stop acting on the node).
    pub fn fail_all(&mut self, why: &str) -> Vec<(W, Settled)> {
        let waiters = std::mem::take(&mut self.waiters)
            .into_iter()
            .map(|(_, w)| w);
        let resumers = std::mem::take(&mut self.resumers);
        waiters
            .chain(resumers)
            .map(|w| (w, Settled::Failed(why.to_owned())))
            .collect()
    }

    /// The waiters whose notices' actions are now done (or withdrawn, or whose node is gone),
    /// each with its answer; the others keep waiting.
    pub fn settle(&mut self, drain_running: bool) -> Vec<(W, Settled)> {
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

    fn verdict(&self, id: &str) -> Option<Settled> {
        let notice = self.tracker.get(id);
        if notice.is_none() && self.withdrawn_ids.contains(id) {
            return Some(Settled::Withdrawn);
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
            Some(Settled::Done)
        } else if self.gone {
            Some(Settled::Failed(format!("node {:?} not found", self.node)))
        } else {
            None
        }
    }

    /// A takeover's answer: once nothing recorded on the node needs a drain any more.
    fn whole_verdict(&self, drain_running: bool) -> Option<Settled> {
        if self.gone {
            return Some(Settled::Failed(format!("node {:?} not found", self.node)));
        }
        if !self.loaded || drain_running || self.written < self.generation {
            return None;
        }
        // Drained only once that is written (a replica taking over must find it).
        let carried =
            self.carried(|id| self.drained_at.get(id).is_some_and(|g| *g <= self.written));
        if !evacuation_plan(&carried, &self.rules.plan).drain_needed {
            Some(Settled::Done)
        } else if self.drain_failed {
            Some(Settled::Failed("the node's drain did not finish".into()))
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
mod tests;
