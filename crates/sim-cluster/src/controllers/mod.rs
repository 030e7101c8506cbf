//! The simulated control plane: node lifecycle, scheduler, kubelet, ReplicaSet, Deployment and
//! DaemonSet controllers, EndpointSlices, garbage collection, PodDisruptionBudget status and
//! an optional cluster-autoscaler.
//!
//! One loop runs the controllers after changes (batched briefly) and at the next moment a timer
//! is due (a pod finishing its start, a grace period ending), never on a fixed tick. It follows
//! the store's change feed: a controller runs only when something it reads changed, and the
//! scheduler and kubelets visit only the pods that need them, so a change costs little even
//! with 30 000 pods. Each controller is one write transaction that reads the current objects and
//! writes only what differs, so the loop settles when the world is as the specs ask.

pub mod autoscaler;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod kubelet;
pub mod nodes;
pub mod pdb;
pub mod replicaset;
pub mod scheduler;

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::resources::{DAEMONSETS, DEPLOYMENTS, NODES, PDBS, PODS, REPLICASETS, SERVICES};
pub use crate::store::controller_uid;
use crate::store::{ChangeType, Key, Store, Subscription};

#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Pods allowed per node (the kubelet's `maxPods`).
    pub max_pods: usize,
    /// How long a bound pod takes to become Running and Ready.
    pub pod_start_delay: Duration,
    /// A simulated cluster-autoscaler for one node group (`--autoscaler`).
    pub autoscaler: Option<autoscaler::AutoscalerConfig>,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            max_pods: 110,
            pod_start_delay: Duration::from_millis(300),
            autoscaler: None,
        }
    }
}

/// Changes arriving together are handled in one pass.
const BATCH: Duration = Duration::from_millis(5);
/// An upper bound on sleeping, so a missed wake-up costs at most this much.
const IDLE: Duration = Duration::from_secs(1);
/// PodDisruptionBudget status is recomputed at most this often: counting every selected pod is
/// the most expensive pass, evictions spend the budget in its status themselves (so a status a
/// moment old is conservative, never generous), and the real disruption controller lags too.
const BUDGET_INTERVAL: Duration = Duration::from_millis(100);

/// The controllers, in the order a pass runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Nodes,
    Gc,
    Deployments,
    ReplicaSets,
    DaemonSets,
    Scheduler,
    Autoscaler,
    Kubelet,
    Endpoints,
    Budgets,
}

const PASSES: [Pass; 10] = [
    Pass::Nodes,
    Pass::Gc,
    Pass::Deployments,
    Pass::ReplicaSets,
    Pass::DaemonSets,
    Pass::Scheduler,
    Pass::Autoscaler,
    Pass::Kubelet,
    Pass::Endpoints,
    Pass::Budgets,
];

impl Pass {
    /// Whether anything this controller reads changed since it last ran.
    fn needed(self, d: &Dirty) -> bool {
        let any = |kinds: &[usize]| d.everything || kinds.iter().any(|k| d.kinds.contains(k));
        match self {
            Pass::Nodes => any(&[NODES]),
            Pass::Gc => d.everything || d.owner_deleted,
            Pass::Deployments => any(&[DEPLOYMENTS, REPLICASETS]),
            Pass::ReplicaSets => any(&[REPLICASETS, PODS]),
            Pass::DaemonSets => any(&[DAEMONSETS, NODES, PODS]),
            Pass::Scheduler => any(&[PODS, NODES]),
            Pass::Autoscaler => any(&[PODS, NODES]),
            // Timers (pod starts, grace periods) are due whether or not anything changed.
            Pass::Kubelet => true,
            Pass::Endpoints => any(&[SERVICES, PODS]),
            Pass::Budgets => any(&[PODS, PDBS, REPLICASETS, DAEMONSETS]),
        }
    }
}

/// What changed since a controller last ran, from the store's change feed.
#[derive(Debug, Default, Clone)]
struct Dirty {
    everything: bool,
    kinds: HashSet<usize>,
    owner_deleted: bool,
}

/// Pods that need the scheduler or a kubelet, kept up to date from the change feed so neither
/// scans every pod after every change.
#[derive(Debug, Default)]
pub struct PodWork {
    pub unscheduled: BTreeSet<Key>,
    pub kubelet: BTreeSet<Key>,
}

impl PodWork {
    fn note(&mut self, key: &Key, pod: Option<&Value>) {
        self.unscheduled.remove(key);
        self.kubelet.remove(key);
        let Some(pod) = pod else { return };
        let bound = pod["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        let deleting = pod["metadata"]["deletionTimestamp"].is_string();
        let pending = matches!(pod["status"]["phase"].as_str(), None | Some("Pending"));
        if !bound && !deleting {
            self.unscheduled.insert(key.clone());
        } else if bound && (deleting || pending) {
            self.kubelet.insert(key.clone());
        }
    }

    fn rebuild(&mut self, store: &Store) {
        *self = PodWork::default();
        store.read(|inner| {
            for pod in inner.list(PODS, None) {
                self.note(&(ns_of(pod), name_of(pod)), Some(pod));
            }
        });
    }
}

/// The loop's memory between passes.
struct Loop {
    feed: Subscription,
    dirty: Vec<Dirty>,
    work: PodWork,
    kubelet: kubelet::Kubelet,
    budgets_ran: Option<Instant>,
    /// When a node is next due to end or to be deleted (a timer, as a pod's grace is).
    node_timer_due: Option<Instant>,
    autoscaler: autoscaler::Autoscaler,
    /// When the autoscaler next has something to do (a node booted, an idle node's time).
    autoscaler_due: Option<Instant>,
}

impl Loop {
    fn new(store: &Store) -> Self {
        let ((), feed) = store.read_and_subscribe(|_| ());
        let mut work = PodWork::default();
        work.rebuild(store);
        let everything = Dirty {
            everything: true,
            ..Dirty::default()
        };
        Self {
            feed,
            dirty: vec![everything; PASSES.len()],
            work,
            kubelet: kubelet::Kubelet::default(),
            budgets_ran: None,
            node_timer_due: None,
            autoscaler: autoscaler::Autoscaler::default(),
            autoscaler_due: None,
        }
    }

    /// Takes in every change published since the last call.
    fn catch_up(&mut self, store: &Store) {
        loop {
            match self.feed.try_recv() {
                Ok(change) => {
                    let owner_deleted = change.kind == ChangeType::Deleted
                        && matches!(
                            change.storage,
                            NODES | DEPLOYMENTS | REPLICASETS | DAEMONSETS
                        );
                    for d in &mut self.dirty {
                        d.kinds.insert(change.storage);
                        d.owner_deleted |= owner_deleted;
                    }
                    if change.storage == PODS {
                        let key = (ns_of(&change.object), name_of(&change.object));
                        let live = (change.kind != ChangeType::Deleted).then_some(&*change.object);
                        self.work.note(&key, live);
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    for d in &mut self.dirty {
                        d.everything = true;
                    }
                    self.work.rebuild(store);
                }
                Err(_) => return,
            }
        }
    }
}

pub async fn run(store: Arc<Store>, config: LoopConfig, shutdown: impl Future<Output = ()>) {
    let mut state = Loop::new(&store);
    tokio::pin!(shutdown);
    loop {
        let next = reconcile_all(&store, &config, &mut state);
        let wake_at = next
            .unwrap_or_else(|| Instant::now() + IDLE)
            .min(Instant::now() + IDLE);
        tokio::select! {
            _ = store.wake.notified() => tokio::time::sleep(BATCH).await,
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = &mut shutdown => return,
        }
    }
}

/// One pass of every controller whose inputs changed; returns when a timer is next due.
fn reconcile_all(store: &Store, config: &LoopConfig, state: &mut Loop) -> Option<Instant> {
    let mut next = None;
    for (i, pass) in PASSES.into_iter().enumerate() {
        state.catch_up(store);
        if pass == Pass::Autoscaler && config.autoscaler.is_none() {
            continue;
        }
        let timer = match pass {
            Pass::Nodes => state.node_timer_due,
            Pass::Autoscaler => state.autoscaler_due,
            _ => None,
        };
        let timer_due = timer.is_some_and(|t| t <= Instant::now());
        if !pass.needed(&state.dirty[i]) && !timer_due {
            continue;
        }
        if pass == Pass::Budgets {
            let now = Instant::now();
            if let Some(due) = state
                .budgets_ran
                .map(|t| t + BUDGET_INTERVAL)
                .filter(|due| *due > now)
            {
                next = Some(next.map_or(due, |n: Instant| n.min(due)));
                continue;
            }
            state.budgets_ran = Some(now);
        }
        state.dirty[i] = Dirty::default();
        if pass == Pass::Budgets {
            match pdb::reconcile(store) {
                Ok(false) => {}
                Ok(true) | Err(_) => state.dirty[i].everything = true,
            }
            continue;
        }
        let result = store.write(|tx| match pass {
            Pass::Nodes => {
                state.node_timer_due = nodes::run_timers(tx)?;
                if let Some(due) = state.node_timer_due {
                    next = Some(next.map_or(due, |n: Instant| n.min(due)));
                }
                nodes::reconcile(tx, config)
            }
            Pass::Autoscaler => {
                let Some(cfg) = &config.autoscaler else {
                    return Ok(());
                };
                state.autoscaler_due = state.autoscaler.reconcile(
                    tx,
                    cfg,
                    config.max_pods,
                    &state.work.unscheduled,
                )?;
                if let Some(due) = state.autoscaler_due {
                    next = Some(next.map_or(due, |n: Instant| n.min(due)));
                }
                Ok(())
            }
            Pass::Gc => gc::reconcile(tx),
            Pass::Deployments => deployment::reconcile(tx),
            Pass::ReplicaSets => replicaset::reconcile(tx),
            Pass::DaemonSets => daemonset::reconcile(tx),
            Pass::Scheduler => scheduler::reconcile(tx, config, &state.work.unscheduled),
            Pass::Kubelet => {
                if let Some(due) = state.kubelet.reconcile(tx, config, &state.work.kubelet) {
                    next = Some(next.map_or(due, |n: Instant| n.min(due)));
                }
                Ok(())
            }
            Pass::Endpoints => endpoints::reconcile(tx),
            Pass::Budgets => Ok(()),
        });
        if let Err(e) = result {
            tracing::debug!(controller = ?pass, error = %e, "controller pass failed; it runs again on the next change");
            state.dirty[i].everything = true;
        }
    }
    next
}

/// An owner reference naming `owner` as controller.
pub fn controller_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
    })
}

/// Whether a pod or a node has condition `Ready` = `True`.
pub fn is_ready(obj: &Value) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// A pod that counts for its controller: not being deleted and not finished.
pub fn is_active(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
}

pub fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

pub fn ns_of(obj: &Value) -> String {
    obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
