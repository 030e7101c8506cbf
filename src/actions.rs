//! What the IMDS agent and the queue controller both do about a notice on a node: the fence
//! (one write, or a dry-run line) with its update, and the drain run to its end against the
//! notice's deadline. One home, so the two modes cannot drift apart.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use sih_core::{Action, Notice};
use sih_node::{DrainConfig, FenceSpec};
use sih_report::Update;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use crate::agent::health::Health;

/// The deadline a drain plans against: the notice's, else `budget` after it was detected.
pub(crate) fn drain_deadline(notice: &Notice, budget: Duration) -> Timestamp {
    notice.deadline.unwrap_or_else(|| {
        notice.detected + jiff::SignedDuration::try_from(budget).unwrap_or_default()
    })
}

/// How a fence went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fence {
    Written,
    /// `--dry-run`: said, not written.
    DryRun,
    /// Reported as a failed action; worth trying again.
    Failed,
}

/// Fences nodes for notices and says so on the update stream.
pub(crate) struct Fencer {
    pub(crate) nodes: Api<Node>,
    pub(crate) updates: UnboundedSender<Update>,
    pub(crate) health: Arc<Health>,
    /// `--taint-effect`; else the kind's own.
    pub(crate) taint_effect: Option<String>,
    pub(crate) dry_run: bool,
}

impl Fencer {
    fn send(&self, u: Update) {
        // The reporters outlive the actions; a send can only fail at shutdown.
        let _ = self.updates.send(u);
    }

    /// The fence `action` (at least `taint`) asks for. `measure` reports the latency from
    /// detection (not for a resumed or retried notice, whose detection is long past).
    pub(crate) async fn fence(&self, notice: &Notice, action: Action, measure: bool) -> Fence {
        let effect = self
            .taint_effect
            .clone()
            .unwrap_or_else(|| notice.kind.default_taint_effect().to_owned());
        let cordon = action >= Action::Cordon;
        if self.dry_run {
            self.send(Update::WouldDo {
                notice: notice.clone(),
                what: format!(
                    "taint {}={}:{effect}{}",
                    notice.kind.taint_key(),
                    notice.id,
                    if cordon {
                        ", cordon and exclude from external load balancers"
                    } else {
                        ""
                    }
                ),
            });
            return Fence::DryRun;
        }
        let spec = FenceSpec {
            notice: notice.clone(),
            effect: effect.clone(),
            cordon,
        };
        match sih_node::fence(&self.nodes, &notice.node, &spec).await {
            Ok(out) => {
                self.health.api_ok();
                let latency = Timestamp::now().duration_since(notice.detected);
                self.send(Update::Fenced {
                    notice: notice.clone(),
                    effect,
                    cordoned: cordon,
                    changed: out.changed,
                    latency: if measure {
                        Duration::try_from(latency).unwrap_or_default()
                    } else {
                        Duration::ZERO
                    },
                });
                Fence::Written
            }
            Err(e) => {
                if e.is_retryable() {
                    self.health.api_failed();
                }
                self.send(Update::Failed {
                    notice: notice.clone(),
                    action: "fence",
                    error: e.to_string(),
                    retrying: true,
                });
                Fence::Failed
            }
        }
    }
}

/// One drain, as the agent and the queue controller run it.
pub(crate) struct DrainJob {
    pub(crate) client: kube::Client,
    pub(crate) nodes: Api<Node>,
    pub(crate) node: String,
    pub(crate) notice: Notice,
    pub(crate) deadline: Timestamp,
    pub(crate) config: DrainConfig,
    pub(crate) out_of_service: bool,
    pub(crate) updates: UnboundedSender<Update>,
    pub(crate) health: Arc<Health>,
}

/// Drains until every pod has left or the deadline passes; an API outage in the middle is
/// waited out (the drain is level-triggered, so running it again continues where it stopped).
/// Returns whether every pod left.
pub(crate) async fn drain_until_done(job: DrainJob) -> bool {
    let send = |u| {
        let _ = job.updates.send(u);
    };
    let left =
        Duration::try_from(job.deadline.duration_since(Timestamp::now())).unwrap_or_default();
    let until = Instant::now() + left;
    send(Update::DrainStarted {
        notice: job.notice.clone(),
        time_left: left,
    });
    loop {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let run = sih_node::drain(job.client.clone(), &job.node, until, job.config.clone(), tx);
        let mut run = std::pin::pin!(run);
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                Some(p) = rx.recv() => send(Update::Drain { notice: job.notice.clone(), progress: p }),
            }
        };
        while let Ok(p) = rx.try_recv() {
            send(Update::Drain {
                notice: job.notice.clone(),
                progress: p,
            });
        }
        match result {
            Ok(report) => {
                job.health.api_ok();
                let ok = report.succeeded();
                send(Update::DrainFinished {
                    notice: job.notice.clone(),
                    report,
                });
                if ok && job.out_of_service {
                    match sih_node::mark_out_of_service(&job.nodes, &job.node).await {
                        Ok(_) => send(Update::OutOfService {
                            notice: job.notice.clone(),
                        }),
                        Err(e) => send(Update::Failed {
                            notice: job.notice.clone(),
                            action: "out_of_service_taint",
                            error: e.to_string(),
                            retrying: false,
                        }),
                    }
                }
                return ok;
            }
            Err(e) => {
                let retrying = e.is_retryable() && Instant::now() + Duration::from_secs(1) < until;
                if e.is_retryable() {
                    job.health.api_failed();
                }
                send(Update::Failed {
                    notice: job.notice.clone(),
                    action: "drain",
                    error: e.to_string(),
                    retrying,
                });
                if !retrying {
                    send(Update::DrainStopped {
                        notice: job.notice.clone(),
                        why: format!("gave up: {e}"),
                    });
                    return false;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
