//! The IMDS-mode agent: one poll loop over the instance's interruption items. Each poll's
//! notices go through the tracker (new / withdrawn), each step is carried out at once on the
//! node (fence in the loop, drain in a task), and everything that happens is sent down the one
//! update stream to the reporters. A write that fails is tried again on the next poll, so a
//! notice is never lost to an API outage.

pub mod admin;
pub mod health;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use sih_core::tracker::{parse_uptime, rebooted_since};
use sih_core::{Action, Notice, NoticeKind, Step, Tracker, plan_drain};
use sih_imds::{ImdsClient, InstanceIdentity};
use sih_node::{DrainConfig, NodeError};
use sih_report::{Metrics, Update};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use crate::actions::{DrainJob, Fence, Fencer, drain_deadline, drain_until_done};
use health::Health;

pub struct AgentConfig {
    pub node: String,
    pub poll_interval: Duration,
    pub policy: sih_core::ActionPolicy,
    /// Drain settings; `hard_deadline` is set per notice from its kind.
    pub drain: DrainConfig,
    pub taint_effect: Option<String>,
    /// Deadline for a drain whose notice has none.
    pub drain_budget: Duration,
    pub out_of_service_taint: bool,
    pub dry_run: bool,
    pub uptime_file: PathBuf,
}

struct RunningDrain {
    notice: Notice,
    deadline: Timestamp,
    task: JoinHandle<()>,
}

pub struct Agent {
    cfg: AgentConfig,
    imds: Arc<ImdsClient>,
    client: kube::Client,
    nodes: Api<Node>,
    fencer: Fencer,
    identity: InstanceIdentity,
    tracker: Tracker,
    updates: UnboundedSender<Update>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    drain: Option<RunningDrain>,
    /// Steps whose write failed: carried out again on the next poll.
    pending: Vec<Step>,
    /// The last poll's read errors, so an outage is logged when it starts and ends, not on
    /// every poll.
    last_errors: String,
}

/// Reads the instance identity, retrying until it works or `stop` completes (`None`).
pub async fn wait_for_identity(
    imds: &ImdsClient,
    health: &Health,
    stop: &mut (impl Future<Output = ()> + Unpin),
) -> Option<InstanceIdentity> {
    let mut wait = Duration::from_millis(200);
    loop {
        match imds.identity().await {
            Ok(id) => return Some(id),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64,
                    "cannot read the instance identity yet");
            }
        }
        health.polled();
        tokio::select! {
            _ = &mut *stop => return None,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

impl Agent {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: AgentConfig,
        imds: Arc<ImdsClient>,
        client: kube::Client,
        identity: InstanceIdentity,
        updates: UnboundedSender<Update>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let nodes: Api<Node> = Api::all(client.clone());
        Self {
            tracker: Tracker::new(cfg.policy),
            fencer: Fencer {
                nodes: nodes.clone(),
                updates: updates.clone(),
                health: health.clone(),
                taint_effect: cfg.taint_effect.clone(),
                dry_run: cfg.dry_run,
            },
            nodes,
            cfg,
            imds,
            client,
            identity,
            updates,
            health,
            metrics,
            drain: None,
            pending: Vec::new(),
            last_errors: String::new(),
        }
    }

    fn send(&self, u: Update) {
        // The reporters outlive the agent; a send can only fail at shutdown.
        let _ = self.updates.send(u);
    }

    /// Polls until `stop` completes, then stops any drain (the node's annotation lets the next
    /// agent resume it).
    pub async fn run(mut self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut stop = std::pin::pin!(stop);
        tokio::select! {
            r = self.resume_from_node() => r?,
            _ = &mut stop => return Ok(()),
        }
        let mut tick = tokio::time::interval(self.cfg.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(node = %self.cfg.node, instance_id = %self.identity.instance_id,
            poll_interval_ms = self.cfg.poll_interval.as_millis() as u64,
            dry_run = self.cfg.dry_run, "watching for interruption notices");
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = tick.tick() => {}
            }
            self.poll_once().await;
            self.health.set_ready();
        }
        if let Some(d) = self.drain.take()
            && !d.task.is_finished()
        {
            d.task.abort();
            self.send(Update::DrainStopped {
                notice: d.notice,
                why: "the agent is stopping; a restarted agent resumes the drain".into(),
            });
        }
        tracing::info!("agent stopped");
        Ok(())
    }

    /// On start: a notice recorded on the node by an earlier run is resumed, unless the
    /// instance rebooted since (a scheduled reboot that happened), which ends it.
    async fn resume_from_node(&mut self) -> anyhow::Result<()> {
        let mut wait = Duration::from_millis(200);
        let node = loop {
            match self.nodes.get(&self.cfg.node).await {
                Ok(n) => {
                    self.health.api_ok();
                    break n;
                }
                Err(e) if sih_node::classify(&e) == sih_node::ApiClass::NotFound => {
                    anyhow::bail!(
                        "node {:?} does not exist (is --node-name / NODE_NAME right?)",
                        self.cfg.node
                    );
                }
                Err(e) => {
                    self.health.api_failed();
                    self.health.polled();
                    tracing::warn!(error = %e, "cannot read our node yet; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        };
        let Some(record) = sih_node::fence::record_of(&node) else {
            return Ok(());
        };
        let notice = Notice {
            kind: record.kind,
            id: record.id.clone(),
            instance_id: Some(self.identity.instance_id.clone()),
            node: self.cfg.node.clone(),
            detected: record.detected,
            deadline: record.deadline,
        };
        let uptime = std::fs::read_to_string(&self.cfg.uptime_file)
            .ok()
            .and_then(|s| parse_uptime(&s));
        if uptime.is_none() {
            tracing::warn!(file = %self.cfg.uptime_file.display(),
                "cannot read the uptime; a reboot since the fence cannot be told");
        }
        if let Some(up) = uptime
            && rebooted_since(record.detected, up, Timestamp::now())
        {
            self.tracker.finish(&record.id);
            let why = format!(
                "the instance rebooted {:.0}s ago, after the {} notice {}",
                up.as_secs_f64(),
                record.kind,
                record.id
            );
            // A reboot ends whatever fenced the node, not only one kind's taint.
            self.withdraw(notice, Action::Drain, why, None).await;
            return Ok(());
        }
        if let Some(step) = self.tracker.resume(notice) {
            tracing::info!(notice_id = %record.id, kind = %record.kind,
                "resuming the notice recorded on the node");
            self.carry_out(step, false).await;
        }
        Ok(())
    }

    async fn poll_once(&mut self) {
        let snapshot = self.imds.poll().await;
        let now = Timestamp::now();
        self.health.polled();
        self.metrics.polls.inc();
        self.metrics
            .last_poll_seconds
            .set(now.as_millisecond() as f64 / 1000.0);
        let mut errors = String::new();
        for (item, e) in snapshot.item_errors() {
            self.metrics.imds_error(item);
            errors.push_str(&format!("{item}: {e}; "));
        }
        if errors != self.last_errors {
            if errors.is_empty() {
                tracing::info!("metadata reads work again");
            } else {
                tracing::warn!(errors = %errors.trim_end_matches("; "),
                    "metadata items could not be read; the notices already seen stand");
            }
            self.last_errors = errors;
        }
        if self.drain.as_ref().is_some_and(|d| d.task.is_finished()) {
            self.drain = None;
        }
        let seen =
            sih_imds::notices::notices(&snapshot, &self.identity.instance_id, &self.cfg.node, now);
        let retries = std::mem::take(&mut self.pending);
        let steps = self.tracker.observe(seen, &snapshot.readable());
        if steps.is_empty() && retries.is_empty() {
            tracing::debug!(active = self.tracker.active().len(), "quiet poll");
        }
        for step in retries {
            self.carry_out(step, false).await;
        }
        for step in steps {
            self.carry_out(step, true).await;
        }
    }

    /// `first` is false for a retry or a resumed notice: people were told already.
    async fn carry_out(&mut self, step: Step, first: bool) {
        match step {
            Step::Act { notice, action } => self.act(notice, action, first).await,
            Step::Withdraw { notice, action } => {
                let why = match notice.kind {
                    NoticeKind::RebalanceRecommendation => {
                        "the rebalance recommendation disappeared".to_owned()
                    }
                    _ => format!("scheduled event {} is no longer active", notice.id),
                };
                let kind = Some(notice.kind);
                self.withdraw(notice, action, why, kind).await;
            }
        }
    }

    async fn act(&mut self, notice: Notice, action: Action, first: bool) {
        if first {
            self.send(Update::Detected {
                notice: notice.clone(),
                action,
            });
        }
        if action < Action::Taint {
            return;
        }
        match self.fencer.fence(&notice, action, first).await {
            Fence::Written if action == Action::Drain => self.start_drain(notice),
            Fence::Written => {}
            Fence::DryRun if action == Action::Drain => self.dry_run_drain(&notice).await,
            Fence::DryRun => {}
            Fence::Failed => self.pending.push(Step::Act { notice, action }),
        }
    }

    fn api_failure(&self, e: &NodeError) {
        if e.is_retryable() {
            self.health.api_failed();
        }
    }

    fn start_drain(&mut self, notice: Notice) {
        let deadline = drain_deadline(&notice, self.cfg.drain_budget);
        if let Some(running) = &self.drain
            && !running.task.is_finished()
        {
            if running.deadline <= deadline {
                // The running drain already finishes in time for this notice too.
                return;
            }
            running.task.abort();
            self.send(Update::DrainStopped {
                notice: running.notice.clone(),
                why: format!("notice {} has an earlier deadline", notice.id),
            });
        }
        let mut config = self.cfg.drain.clone();
        config.hard_deadline = notice.kind.deadline_is_hard();
        let job = drain_until_done(DrainJob {
            client: self.client.clone(),
            nodes: self.nodes.clone(),
            node: self.cfg.node.clone(),
            notice: notice.clone(),
            deadline,
            config,
            out_of_service: self.cfg.out_of_service_taint,
            updates: self.updates.clone(),
            health: self.health.clone(),
        });
        let task = tokio::spawn(async move {
            job.await;
        });
        self.drain = Some(RunningDrain {
            notice,
            deadline,
            task,
        });
    }

    /// Undoes our fence for `kind` (every kind of ours when `None`).
    async fn withdraw(
        &mut self,
        notice: Notice,
        action: Action,
        why: String,
        kind: Option<NoticeKind>,
    ) {
        if let Some(d) = self.drain.take_if(|d| d.notice.id == notice.id)
            && !d.task.is_finished()
        {
            d.task.abort();
            self.send(Update::DrainStopped {
                notice: notice.clone(),
                why: why.clone(),
            });
        }
        if action < Action::Taint {
            tracing::info!(notice_id = %notice.id, why = %why, "notice withdrawn; nothing to undo");
            return;
        }
        if self.cfg.dry_run {
            self.send(Update::WouldDo {
                notice,
                what: format!("unfence the node: {why}"),
            });
            return;
        }
        match sih_node::unfence(&self.nodes, &self.cfg.node, kind).await {
            Ok(out) => {
                self.health.api_ok();
                self.send(Update::Unfenced {
                    notice,
                    changed: out.changed,
                    why,
                });
            }
            Err(e) => {
                self.api_failure(&e);
                self.send(Update::Failed {
                    notice: notice.clone(),
                    action: "unfence",
                    error: e.to_string(),
                    retrying: true,
                });
                self.pending.push(Step::Withdraw { notice, action });
            }
        }
    }

    /// What a drain would evict, read-only.
    async fn dry_run_drain(&self, notice: &Notice) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let params = ListParams::default().fields(&format!("spec.nodeName={}", self.cfg.node));
        let what = match pods.list(&params).await {
            Ok(list) => {
                let own = self.cfg.drain.own_pod.as_ref();
                let plan = plan_drain(
                    list.items.iter().map(sih_node::drain::facts_of).collect(),
                    own.map(|(n, p)| (n.as_str(), p.as_str())),
                );
                let evict: Vec<String> = plan
                    .first
                    .iter()
                    .chain(&plan.last)
                    .map(|p| format!("{}/{}", p.namespace, p.name))
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
        self.send(Update::WouldDo {
            notice: notice.clone(),
            what,
        });
    }
}
