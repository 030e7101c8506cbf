//! One node's drain, as a task: waits until the fence it depends on is written (a pod evicted
//! from an uncordoned node could come straight back), then drains against a target that the
//! responder moves as notices come and go, and waits out API outages in between (the drain is
//! level-triggered: running it again continues where it stopped). A dry run lists what it
//! would evict instead.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use sih_core::{DrainTarget, Notice, plan_drain};
use sih_node::drain::{DrainEnd, Target};
use sih_node::{DrainConfig, NodeError};
use sih_report::Update;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Command;

/// The drain's target on the monotonic clock.
pub fn target_of(t: &DrainTarget) -> Target {
    Target {
        deadline: sih_node::drain::instant_of(t.deadline),
        hard: t.hard.map(sih_node::drain::instant_of),
    }
}

pub struct DrainJob {
    pub client: kube::Client,
    pub node: String,
    pub id: u64,
    /// The notice whose deadline it plans against (names the drain in updates).
    pub lead: Notice,
    pub config: DrainConfig,
    pub dry_run: bool,
    pub target: watch::Receiver<Option<Target>>,
    /// The generation of the node's fence written so far, and the one this drain needs.
    pub written: watch::Receiver<u64>,
    pub needs: u64,
    /// Drains allowed at once across nodes (`--workers`): waited for after the fence.
    pub slots: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    pub updates: mpsc::UnboundedSender<Update>,
    pub report: mpsc::UnboundedSender<Command>,
}

/// How a drain task ended, for the responder.
#[derive(Debug)]
// One value per drain, moved once: its size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Ended {
    Drain(DrainEnd),
    /// A dry run listed what it would evict.
    Previewed,
    /// It gave up: an error no retry cures, or its time ran out in an outage.
    GaveUp(String),
}

pub async fn run(job: DrainJob) {
    let ended = drain(&job).await;
    let _ = job.report.send(Command::DrainEnded {
        node: job.node.clone(),
        id: job.id,
        ended,
    });
}

async fn drain(job: &DrainJob) -> Ended {
    let mut target = job.target.clone();
    let mut written = job.written.clone();
    // The fence first: no eviction before the node is cordoned.
    loop {
        if *written.borrow_and_update() >= job.needs {
            break;
        }
        if target.borrow().is_none() {
            return Ended::Drain(DrainEnd::Stopped(Default::default()));
        }
        tokio::select! {
            r = written.changed() => if r.is_err() { return Ended::GaveUp("the responder stopped".into()) },
            r = target.changed() => if r.is_err() { return Ended::GaveUp("the responder stopped".into()) },
        }
    }
    if job.dry_run {
        preview(job).await;
        return Ended::Previewed;
    }
    let _slot = match &job.slots {
        Some(slots) => tokio::select! {
            permit = slots.clone().acquire_owned() => permit.ok(),
            _ = async { while target.changed().await.is_ok() && target.borrow().is_some() {} } => {
                return Ended::Drain(DrainEnd::Stopped(Default::default()));
            }
        },
        None => None,
    };
    let Some(t) = *target.borrow() else {
        return Ended::Drain(DrainEnd::Stopped(Default::default()));
    };
    let mut give_up = sih_node::drain::GiveUp::default();
    give_up.at(&t, Instant::now());
    let _ = job.updates.send(Update::DrainStarted {
        notice: job.lead.clone(),
        time_left: t.ends().saturating_duration_since(Instant::now()),
    });
    loop {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let run = sih_node::drain(
            job.client.clone(),
            &job.node,
            job.target.clone(),
            job.config.clone(),
            tx,
        );
        let mut run = std::pin::pin!(run);
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                Some(p) = rx.recv() => {
                    let _ = job.updates.send(Update::Drain { notice: job.lead.clone(), progress: p });
                }
            }
        };
        while let Ok(p) = rx.try_recv() {
            let _ = job.updates.send(Update::Drain {
                notice: job.lead.clone(),
                progress: p,
            });
        }
        match result {
            Ok(end) => return Ended::Drain(end),
            Err(e) => {
                // A late notice (its deadline passed) still gets its short window.
                let ends = (*target.borrow()).map(|t| give_up.at(&t, Instant::now()));
                let time_left =
                    ends.is_some_and(|end| Instant::now() + Duration::from_secs(1) < end);
                if !(e.is_retryable() && time_left) {
                    return Ended::GaveUp(e.to_string());
                }
                let _ = job.updates.send(Update::Failed {
                    notice: job.lead.clone(),
                    action: "drain",
                    error: e.to_string(),
                    retrying: true,
                });
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    r = target.changed() => if r.is_err() { return Ended::GaveUp(e.to_string()) },
                }
                if target.borrow().is_none() {
                    return Ended::Drain(DrainEnd::Stopped(Default::default()));
                }
            }
        }
    }
}

/// What a drain would evict, read-only.
async fn preview(job: &DrainJob) {
    let pods: Api<Pod> = Api::all(job.client.clone());
    let params = ListParams::default().fields(&format!("spec.nodeName={}", job.node));
    let listed = sih_node::bounded(job.config.api_timeout, "list pods", pods.list(&params))
        .await
        .and_then(|r| r.map_err(NodeError::Api));
    let what = match listed {
        Ok(list) => {
            let own = job.config.own_pod.as_ref();
            let plan = plan_drain(
                list.items.iter().map(sih_node::drain::facts_of).collect(),
                own.map(|(n, p)| (n.as_str(), p.as_str())),
            );
            let left = (*job.target.borrow())
                .map(|t| {
                    t.grace_until(Instant::now())
                        .saturating_duration_since(Instant::now())
                })
                .unwrap_or_default();
            let evict: Vec<String> = plan
                .to_evict()
                .map(|p| {
                    format!(
                        "{}/{} (grace {}s)",
                        p.namespace,
                        p.name,
                        job.config.policy.grace(p.grace_seconds, left)
                    )
                })
                .collect();
            format!(
                "drain: evict {} pod(s) [{}], leave {} in place",
                evict.len(),
                evict.join(", "),
                plan.skipped.len()
            )
        }
        Err(e) => format!("drain (cannot list the node's pods: {e})"),
    };
    let _ = job.updates.send(Update::WouldDo {
        notice: job.lead.clone(),
        what,
    });
}
