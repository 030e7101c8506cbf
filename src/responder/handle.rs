//! The responder's handle and the commands it takes: sources, the queue controller and
//! `drain` talk to the actor (`mod.rs`) only through these; every call returns at once.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use sih_core::{Notice, Observation, PlanRules, Source};
use sih_node::{DrainConfig, NodeRecord};
use sih_report::Update;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::drainer::Ended;
use super::writer::WriteResult;
use super::{Actor, Settled};
use crate::admin::health::Health;

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
        done: oneshot::Sender<Settled>,
    },
    /// Answer once this notice (already observed) has its action done.
    Await {
        node: String,
        id: String,
        done: oneshot::Sender<Settled>,
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
        done: oneshot::Sender<Settled>,
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
        let actor = Actor::new(cfg, client, updates, health, tx.clone());
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
    pub fn add(&self, node: &str, notice: Notice) -> oneshot::Receiver<Settled> {
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
    pub fn done(&self, node: &str, id: &str) -> oneshot::Receiver<Settled> {
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
    pub fn resume(&self, node: &str) -> oneshot::Receiver<Settled> {
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
