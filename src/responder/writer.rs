//! One node's writer: makes the node look as its latest desired state says (our notices
//! recorded, fenced for every notice it carries), level-triggered and retried. The first read
//! of the node hands its record to the responder, which merges it before the first write, so a
//! restart resumes what was recorded instead of overwriting it.
//!
//! It is the only place that writes a node's fence, so two changes in quick succession become
//! one write of the latest state, never two writers racing.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use sih_core::{Backoff, Carried, PlanRules, Source};
use sih_node::{NodeError, NodeRecord};
use tokio::sync::{mpsc, watch};

use super::Command;

/// What the responder wants the node to carry.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub generation: u64,
    /// The node's record has been merged: writing may start.
    pub loaded: bool,
    /// Our notices (other sources' recorded ones are kept as found).
    pub notices: Vec<Carried>,
}

/// How a write went.
#[derive(Debug)]
pub enum WriteResult {
    Written {
        changed: bool,
        /// What the node said of itself (none in a dry run).
        facts: Option<sih_node::NodeFacts>,
    },
    /// A dry run: what would have been written.
    WouldWrite {
        what: String,
    },
    Failed {
        error: NodeError,
    },
    NodeGone,
}

pub struct WriterConfig {
    pub source: Source,
    pub rules: PlanRules,
    pub timeout: Duration,
    pub dry_run: bool,
}

/// Backoff between failed reads or writes: quick at first, a second at most. The fence is the
/// write a notice waits on: after an API outage it lands within a second of the API's return
/// (5 s here once let a fence land 4.6 s after the API was back: the soak's `fence-late`).
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(1);

pub async fn run(
    api: Api<Node>,
    node: String,
    cfg: WriterConfig,
    mut desired: watch::Receiver<Desired>,
    report: mpsc::UnboundedSender<Command>,
) {
    let mut loaded_sent = false;
    let mut done_generation = 0u64;
    let mut retry = Backoff::new(RETRY_FIRST, RETRY_MAX);
    loop {
        let want = desired.borrow_and_update().clone();
        let needs_work = !loaded_sent || (want.loaded && want.generation > done_generation);
        if !needs_work {
            if desired.changed().await.is_err() {
                return;
            }
            continue;
        }
        let result = if !loaded_sent {
            match read(&api, &node, &cfg).await {
                Ok(record) => {
                    loaded_sent = true;
                    let _ = report.send(Command::Loaded {
                        node: node.clone(),
                        record,
                    });
                    retry.reset();
                    continue;
                }
                Err(r) => r,
            }
        } else {
            write(&api, &node, &cfg, &want.notices).await
        };
        let failed = matches!(result, WriteResult::Failed { .. } | WriteResult::NodeGone);
        if !failed {
            done_generation = want.generation;
            retry.reset();
        }
        let _ = report.send(Command::Written {
            node: node.clone(),
            generation: want.generation,
            result,
        });
        if failed {
            // Retry the latest state after a pause, or at once when it changes.
            tokio::select! {
                _ = tokio::time::sleep(retry.wait()) => {}
                changed = desired.changed() => if changed.is_err() { return },
            }
        }
    }
}

async fn read(
    api: &Api<Node>,
    node: &str,
    cfg: &WriterConfig,
) -> Result<Option<NodeRecord>, WriteResult> {
    match sih_node::bounded(cfg.timeout, "get node", api.get_opt(node)).await {
        Ok(Ok(Some(n))) => Ok(sih_node::record_of(&n, cfg.source)),
        Ok(Ok(None)) => Err(WriteResult::NodeGone),
        Ok(Err(e)) => Err(WriteResult::Failed {
            error: NodeError::Api(e),
        }),
        Err(e) => Err(WriteResult::Failed { error: e }),
    }
}

async fn write(api: &Api<Node>, node: &str, cfg: &WriterConfig, ours: &[Carried]) -> WriteResult {
    if cfg.dry_run {
        return match sih_node::bounded(cfg.timeout, "get node", api.get_opt(node)).await {
            Ok(Ok(Some(n))) => {
                let all = sih_node::fence::carried_after(
                    &n,
                    cfg.source,
                    |c| c.notice.source != cfg.source,
                    ours,
                );
                match sih_node::fence::plan_patch(&n, &all, &cfg.rules, cfg.source) {
                    Some(p) => WriteResult::WouldWrite { what: describe(&p) },
                    None => WriteResult::Written {
                        changed: false,
                        facts: None,
                    },
                }
            }
            Ok(Ok(None)) => WriteResult::NodeGone,
            Ok(Err(e)) => WriteResult::Failed {
                error: NodeError::Api(e),
            },
            Err(e) => WriteResult::Failed { error: e },
        };
    }
    match sih_node::fence(api, node, cfg.source, ours, &cfg.rules, cfg.timeout).await {
        Ok(out) => WriteResult::Written {
            changed: out.changed,
            facts: Some(out.facts),
        },
        Err(NodeError::NodeNotFound(_)) => WriteResult::NodeGone,
        Err(error) => WriteResult::Failed { error },
    }
}

/// A patch in words, for a dry run.
fn describe(patch: &serde_json::Value) -> String {
    let taints: Vec<String> = patch["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| {
            t["key"]
                .as_str()
                .is_some_and(|k| k.starts_with("spot-interrupt-handler/"))
        })
        .map(|t| {
            format!(
                "{}={}:{}",
                t["key"].as_str().unwrap_or_default(),
                t["value"].as_str().unwrap_or_default(),
                t["effect"].as_str().unwrap_or_default()
            )
        })
        .collect();
    let cordon = match &patch["spec"]["unschedulable"] {
        serde_json::Value::Bool(true) => ", cordon and exclude from external load balancers",
        serde_json::Value::Null if patch["spec"].get("unschedulable").is_some() => ", uncordon",
        _ => "",
    };
    if taints.is_empty() {
        format!("remove our taints{cordon}")
    } else {
        format!("taint {}{cordon}", taints.join(", "))
    }
}
