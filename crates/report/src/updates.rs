//! The one progress stream: what the agent (or the queue controller) did about each notice, as
//! typed updates. One consumer turns each update into a log line, Kubernetes Events, metrics
//! and webhooks, so the acting code never formats a message or counts anything itself.
//!
//! No reporter holds up another: log lines and metrics are written at once, in order; Events
//! go to a bounded queue with a writer of its own (`event_queue`); webhooks are delivered by
//! tasks of their own, in order for each notice (its "drained" message never overtakes its
//! "detected" one) and in parallel across notices.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sih_core::{Action, Notice};
use sih_node::{DrainReport, Progress};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::event_queue::{EVENT_QUEUE, EventQueue};

use crate::webhook::{InstanceFacts, NodeFields, TemplateData, Webhook};
use crate::{EventReporter, Metrics};

/// What webhook messages say beyond the notice, learned as it becomes known: the cluster's
/// name, and each instance's facts (the agent's own from the metadata service; in queue mode
/// each instance EC2 described).
#[derive(Debug, Default)]
pub struct Known {
    pub cluster_name: String,
    instances: HashMap<String, InstanceFacts>,
}

/// Instances remembered at most (queue mode describes every instance it is told of).
const KNOWN_INSTANCES: usize = 4096;

impl Known {
    pub fn remember(&mut self, instance_id: &str, facts: InstanceFacts) {
        if self.instances.len() >= KNOWN_INSTANCES && !self.instances.contains_key(instance_id) {
            self.instances.clear();
        }
        self.instances.insert(instance_id.to_owned(), facts);
    }

    pub fn instance(&self, instance_id: &str) -> Option<&InstanceFacts> {
        self.instances.get(instance_id)
    }
}

/// Settable after start, read for every message.
pub type SharedFacts = Arc<std::sync::RwLock<Known>>;

/// NTH's rendering of a node's labels: `key=value`, comma-separated, sorted.
fn node_fields(facts: &sih_node::NodeFacts) -> NodeFields {
    NodeFields {
        provider_id: facts.provider_id.clone().unwrap_or_default(),
        node_labels: facts
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}

#[derive(Debug, Clone)]
pub enum Update {
    /// A new notice and what the policy says to do about it.
    Detected {
        notice: Notice,
        action: Action,
    },
    /// The fence write (`changed` is false when the node already was fenced so).
    Fenced {
        notice: Notice,
        effect: String,
        cordoned: bool,
        changed: bool,
        latency: Duration,
        /// What the node said of itself when it was written.
        node: sih_node::NodeFacts,
    },
    DrainStarted {
        notice: Notice,
        time_left: Duration,
    },
    Drain {
        notice: Notice,
        progress: Progress,
    },
    DrainFinished {
        notice: Notice,
        report: DrainReport,
    },
    /// A drain stopped before its end: the notice was withdrawn, a nearer deadline replaced
    /// it, or the agent is shutting down (a restarted agent resumes it).
    DrainStopped {
        notice: Notice,
        why: String,
    },
    /// The notice was withdrawn (or the instance rebooted) and our fence removed.
    Unfenced {
        notice: Notice,
        changed: bool,
        why: String,
    },
    /// A write that failed; `retrying` says whether the agent tries again.
    Failed {
        notice: Notice,
        action: &'static str,
        error: String,
        retrying: bool,
    },
    /// `--dry-run`: what would have been written.
    WouldDo {
        notice: Notice,
        what: String,
    },
    /// Extra post-drain step (`--out-of-service-taint`).
    OutOfService {
        notice: Notice,
    },
    /// Every workload the drain evicted from has its replicas Ready again, this long after
    /// the notice ("time to recover").
    Recovered {
        notice: Notice,
        after: Duration,
    },
    /// The source restated the notice with an earlier deadline: the earliest stands.
    DeadlineMoved {
        notice: Notice,
        from: Option<jiff::Timestamp>,
    },
}

impl Update {
    pub fn notice(&self) -> &Notice {
        match self {
            Update::Detected { notice, .. }
            | Update::Fenced { notice, .. }
            | Update::DrainStarted { notice, .. }
            | Update::Drain { notice, .. }
            | Update::DrainFinished { notice, .. }
            | Update::DrainStopped { notice, .. }
            | Update::Unfenced { notice, .. }
            | Update::Failed { notice, .. }
            | Update::WouldDo { notice, .. }
            | Update::OutOfService { notice }
            | Update::Recovered { notice, .. }
            | Update::DeadlineMoved { notice, .. } => notice,
        }
    }

    /// Whether a Kubernetes Event is written for it.
    fn makes_event(&self) -> bool {
        match self {
            Update::Detected { .. }
            | Update::DrainStarted { .. }
            | Update::DrainFinished { .. } => true,
            Update::Fenced { changed, .. } | Update::Unfenced { changed, .. } => *changed,
            Update::Drain { progress, .. } => matches!(
                progress,
                Progress::Evicted { .. }
                    | Progress::Warning { .. }
                    | Progress::InvalidChoice { .. }
                    | Progress::DeletedAtDeadline { .. }
                    | Progress::LoadBalancers { .. }
            ),
            _ => false,
        }
    }
}

/// Where the updates go. Events and webhooks are optional (off in dry-run, or not configured).
pub struct Reporters {
    pub source: &'static str,
    pub metrics: Arc<Metrics>,
    pub events: Option<EventReporter>,
    pub webhook: Option<Arc<Webhook>>,
    /// `--dry-run`: webhook messages are logged, not sent.
    pub webhook_dry_run: bool,
    /// What messages say beyond the notice: cluster name, instance facts (filled in when
    /// known, which may be after the reporters start).
    pub facts: SharedFacts,
    /// How long a webhook may keep retrying when the notice has no deadline.
    pub webhook_patience: Duration,
    /// Also receives every update (a live timeline, tests).
    pub tap: Option<mpsc::UnboundedSender<Update>>,
}

fn kind_str(n: &Notice) -> &'static str {
    n.kind.as_str()
}

impl Reporters {
    /// Consumes the stream until every sender is gone; Events still queued and webhook
    /// deliveries still running are then waited for (the caller bounds how long: `finish`).
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Update>) {
        let events = self
            .events
            .take()
            .map(|e| EventQueue::spawn(e, EVENT_QUEUE, self.metrics.clone()));
        // The last delivery of each notice: the next one for it waits for it.
        let mut chains: HashMap<String, JoinHandle<()>> = HashMap::new();
        let mut learned = Learned::default();
        while let Some(update) = rx.recv().await {
            self.log(&update);
            self.count(&update);
            learned.learn(&update);
            if let Some(tap) = &self.tap {
                let _ = tap.send(update.clone());
            }
            if let Some((queue, _)) = &events
                && update.makes_event()
            {
                queue.push(update.clone());
            }
            let message = self
                .webhook
                .as_ref()
                .and_then(|_| self.message(&update, &learned));
            if let Some(hook) = &self.webhook
                && let Some((data, _)) = &message
                && self.webhook_dry_run
            {
                match webhook_body(hook, data) {
                    Ok(body) => {
                        tracing::info!(url = %hook.redacted_url(), body = %body, "dry run: webhook message not sent")
                    }
                    Err(e) => tracing::warn!(error = %e, "dry run: webhook message not rendered"),
                }
            } else if let (Some(hook), Some((data, give_up))) = (&self.webhook, message) {
                let id = update.notice().id.clone();
                let before = chains.remove(&id);
                let (hook, metrics) = (hook.clone(), self.metrics.clone());
                let delivery = tokio::spawn(async move {
                    if let Some(before) = before {
                        let _ = before.await;
                    }
                    let d = hook.send(&data, give_up).await;
                    match &d.result {
                        Ok(status) => {
                            metrics.webhook("ok");
                            tracing::info!(url = %hook.redacted_url(), status, attempts = d.attempts, event_id = %data.event_id, "webhook delivered");
                        }
                        Err(e) => {
                            metrics.webhook("error");
                            tracing::warn!(url = %hook.redacted_url(), error = %e, attempts = d.attempts, "webhook not delivered");
                        }
                    }
                });
                chains.insert(id, delivery);
                chains.retain(|_, d| !d.is_finished());
            }
            learned.forget(&update);
        }
        if let Some((queue, writer)) = events {
            queue.close();
            let _ = writer.await;
        }
        for (_, d) in chains {
            let _ = d.await;
        }
    }

    fn log(&self, u: &Update) {
        match u {
            Update::Detected { notice, action } => tracing::info!(
                notice_id = %notice.id, kind = %notice.kind, node = %notice.node,
                deadline = %notice.deadline.map(|d| d.to_string()).unwrap_or_else(|| "none".into()),
                action = %action,
                "notice detected"
            ),
            Update::Fenced {
                notice,
                effect,
                cordoned,
                changed,
                latency,
                ..
            } => tracing::info!(
                notice_id = %notice.id, node = %notice.node, effect = %effect, cordoned, changed,
                latency_ms = latency.as_millis() as u64, "node fenced"
            ),
            Update::DrainStarted { notice, time_left } => tracing::info!(
                notice_id = %notice.id, node = %notice.node,
                time_left_s = time_left.as_secs_f64(), "drain started"
            ),
            Update::Drain { notice, progress } => log_progress(notice, progress),
            Update::DrainFinished { notice, report } => {
                let remaining: Vec<String> =
                    report.remaining.iter().map(ToString::to_string).collect();
                if report.succeeded() {
                    tracing::info!(
                        notice_id = %notice.id, node = %notice.node, evicted = report.evicted,
                        already_leaving = report.already_leaving,
                        deleted_at_deadline = report.deleted_at_deadline,
                        budget_refusals = report.budget_refusals,
                        took_s = report.took.as_secs_f64(), slack_s = report.slack_ms as f64 / 1000.0,
                        slowest_pod = %report.slowest.as_ref().map(|(p, _)| p.to_string()).unwrap_or_default(),
                        slowest_s = report.slowest.as_ref().map_or(0.0, |(_, t)| t.as_secs_f64()),
                        "drain succeeded"
                    );
                } else {
                    tracing::warn!(
                        notice_id = %notice.id, node = %notice.node, evicted = report.evicted,
                        failed = report.failed.len(), remaining = ?remaining,
                        slack_s = report.slack_ms as f64 / 1000.0, "drain failed"
                    );
                }
            }
            Update::DrainStopped { notice, why } => {
                tracing::info!(notice_id = %notice.id, node = %notice.node, why = %why, "drain stopped")
            }
            Update::Unfenced {
                notice,
                changed,
                why,
            } => {
                tracing::info!(notice_id = %notice.id, node = %notice.node, changed, why = %why, "node unfenced")
            }
            Update::Failed {
                notice,
                action,
                error,
                retrying,
            } => {
                tracing::warn!(notice_id = %notice.id, node = %notice.node, action = %action, error = %error, retrying, "action failed")
            }
            Update::WouldDo { notice, what } => {
                tracing::info!(notice_id = %notice.id, node = %notice.node, "dry run: would {what}")
            }
            Update::OutOfService { notice } => tracing::info!(
                notice_id = %notice.id, node = %notice.node, "out-of-service taint added"
            ),
            Update::Recovered { notice, after } => tracing::info!(
                notice_id = %notice.id, node = %notice.node, after_s = after.as_secs_f64(),
                "every evicted workload has its replicas Ready again"
            ),
            Update::DeadlineMoved { notice, from } => tracing::info!(
                notice_id = %notice.id, node = %notice.node,
                from = %from.map(|d| d.to_string()).unwrap_or_else(|| "none".into()),
                to = %notice.deadline.map(|d| d.to_string()).unwrap_or_default(),
                "the notice was restated with an earlier deadline; the earliest stands"
            ),
        }
    }

    fn count(&self, u: &Update) {
        let m = &self.metrics;
        match u {
            Update::Detected { notice, .. } => {
                m.notice(kind_str(notice), self.source);
                let known = self.facts.read().unwrap_or_else(|e| e.into_inner());
                let facts = notice
                    .instance_id
                    .as_deref()
                    .and_then(|i| known.instance(i));
                let or_unknown = |v: Option<&String>| {
                    v.filter(|v| !v.is_empty())
                        .cloned()
                        .unwrap_or_else(|| "unknown".into())
                };
                m.interruptions
                    .get_or_create(&crate::metrics::PlaceLabels {
                        kind: kind_str(notice),
                        instance_type: or_unknown(facts.map(|f| &f.instance_type)),
                        zone: or_unknown(facts.map(|f| &f.availability_zone)),
                    })
                    .inc();
            }
            Update::Fenced {
                notice, latency, ..
            } => {
                m.action("fence", true);
                m.fenced_after(*latency);
                m.notice_to_fenced
                    .get_or_create(&crate::metrics::KindLabels {
                        kind: kind_str(notice),
                    })
                    .observe(latency.as_secs_f64());
            }
            Update::DrainStarted { .. } => {
                m.drains_in_progress.inc();
            }
            Update::Drain { progress, .. } => match progress {
                Progress::Evicted { .. } => m.eviction("evicted"),
                Progress::BlockedByBudget { .. } => m.eviction("blocked_by_budget"),
                Progress::DeletedAtDeadline { .. } => m.eviction("deleted_at_deadline"),
                Progress::Failed { .. } => m.eviction("failed"),
                _ => {}
            },
            Update::DrainFinished { notice, report } => {
                m.drains_in_progress.dec();
                m.action("drain", report.succeeded());
                if report.succeeded() {
                    let since = jiff::Timestamp::now().duration_since(notice.detected);
                    m.notice_to_empty
                        .get_or_create(&crate::metrics::KindLabels {
                            kind: kind_str(notice),
                        })
                        .observe(since.as_secs_f64().max(0.0));
                }
                for exit in &report.exits {
                    m.pod_exit.observe(exit.as_secs_f64());
                }
                m.drain_duration.observe(report.took.as_secs_f64());
                m.deadline_slack.observe(report.slack_ms as f64 / 1000.0);
            }
            Update::DrainStopped { .. } => {
                m.drains_in_progress.dec();
            }
            Update::Unfenced { .. } => m.action("unfence", true),
            Update::Failed { action, .. } => m.action(action, false),
            Update::WouldDo { .. } => m.action("dry_run", true),
            Update::OutOfService { .. } => m.action("out_of_service_taint", true),
            Update::Recovered { notice, after } => m
                .notice_to_recovered
                .get_or_create(&crate::metrics::KindLabels {
                    kind: kind_str(notice),
                })
                .observe(after.as_secs_f64()),
            Update::DeadlineMoved { .. } => {}
        }
    }

    /// The webhook message for an update, if it is one people are told about: on detection and
    /// at the drain's end.
    fn message(&self, u: &Update, learned: &Learned) -> Option<(TemplateData, Instant)> {
        let (notice, phase, description) = match u {
            Update::Detected { notice, action } => (
                notice,
                "detected",
                format!(
                    "{} notice on node {}{}; action: {}",
                    notice.kind,
                    notice.node,
                    notice
                        .deadline
                        .map(|d| format!(", instance goes at {d}"))
                        .unwrap_or_default(),
                    action
                ),
            ),
            Update::DrainFinished { notice, report } => (
                notice,
                "drained",
                format!(
                    "drain of node {} {}: {}",
                    notice.node,
                    if report.succeeded() {
                        "succeeded"
                    } else {
                        "FAILED"
                    },
                    report.summary()
                ),
            ),
            _ => return None,
        };
        let known = self.facts.read().unwrap_or_else(|e| e.into_inner());
        let mut data = TemplateData {
            event_id: notice.id.clone(),
            kind: notice.kind.as_str().to_owned(),
            monitor: self.source.to_owned(),
            phase: phase.to_owned(),
            description,
            node_name: notice.node.clone(),
            instance_id: notice.instance_id.clone().unwrap_or_default(),
            start_time: notice.detected.to_string(),
            cluster_name: known.cluster_name.clone(),
            ..TemplateData::default()
        };
        if let Some(facts) = notice
            .instance_id
            .as_deref()
            .and_then(|i| known.instance(i))
        {
            data.instance = facts.clone();
        }
        drop(known);
        if let Some(node) = learned.nodes.get(&notice.node) {
            data.node = node.clone();
        }
        if let Some(d) = notice.deadline {
            data.deadline = d.to_string();
            data.end_time = d.to_string();
        }
        data.state = match u {
            Update::DrainFinished { report, .. } => {
                data.pods = learned
                    .pods
                    .get(&notice.id)
                    .map(|p| p.join(","))
                    .unwrap_or_default();
                if report.succeeded() {
                    "drained"
                } else {
                    "drain-failed"
                }
            }
            _ => "active",
        }
        .to_owned();
        // Retry until the instance is gone (a message after that still helps people, but a
        // bounded wait keeps shutdown prompt).
        let until = notice
            .deadline
            .and_then(|d| {
                let left = d.duration_since(jiff::Timestamp::now());
                Duration::try_from(left).ok()
            })
            .unwrap_or(self.webhook_patience)
            .max(Duration::from_secs(5));
        Some((data, Instant::now() + until))
    }
}

/// What the stream itself taught the reporters: each node's facts (from its fence write) and
/// the pods each drain moved, for the messages that follow.
#[derive(Default)]
struct Learned {
    nodes: HashMap<String, NodeFields>,
    pods: HashMap<String, Vec<String>>,
}

/// Nodes remembered at most (queue mode fences many).
const LEARNED_NODES: usize = 4096;

impl Learned {
    fn learn(&mut self, u: &Update) {
        match u {
            Update::Fenced { notice, node, .. } => {
                if self.nodes.len() >= LEARNED_NODES && !self.nodes.contains_key(&notice.node) {
                    self.nodes.clear();
                }
                self.nodes.insert(notice.node.clone(), node_fields(node));
            }
            Update::Drain {
                notice,
                progress:
                    Progress::Evicted { pod, .. }
                    | Progress::DeletedAtDeadline { pod, .. }
                    | Progress::Failed { pod, .. },
            } => self
                .pods
                .entry(notice.id.clone())
                .or_default()
                .push(pod.to_string()),
            _ => {}
        }
    }

    /// After the update's message is made: a drain's pods are told once.
    fn forget(&mut self, u: &Update) {
        if let Update::DrainFinished { notice, .. } | Update::DrainStopped { notice, .. } = u {
            self.pods.remove(&notice.id);
        }
    }
}

/// The body a message would have (dry run).
fn webhook_body(
    hook: &Webhook,
    data: &TemplateData,
) -> Result<String, crate::webhook::TemplateError> {
    hook.render(data)
}

fn log_progress(notice: &Notice, p: &Progress) {
    let id = &notice.id;
    match p {
        Progress::Planned {
            evict,
            terminating,
            skipped,
        } => tracing::info!(notice_id = %id, evict, terminating, skipped, "drain planned"),
        Progress::Skipped { pod, reason } => {
            tracing::debug!(notice_id = %id, pod = %pod, reason = %reason.as_str(), "pod stays")
        }
        Progress::Warning { pod, reason } => {
            tracing::warn!(notice_id = %id, pod = %pod, reason = %reason, "evicting anyway")
        }
        Progress::Surge {
            workload,
            what,
            warning,
        } => {
            if *warning {
                tracing::warn!(notice_id = %id, workload = %workload, "surge: {what}")
            } else {
                tracing::info!(notice_id = %id, workload = %workload, "surge: {what}")
            }
        }
        Progress::LoadBalancers { what, warning } => {
            if *warning {
                tracing::warn!(notice_id = %id, "load balancers: {what}")
            } else {
                tracing::info!(notice_id = %id, "load balancers: {what}")
            }
        }
        Progress::InvalidChoice { pod, value } => {
            tracing::warn!(notice_id = %id, pod = %pod, value = %value,
                "the pod's spot-interrupt-handler/eviction annotation is not first, last, at-deadline or never; the default applies")
        }
        Progress::Evicted { pod, grace } => {
            tracing::info!(notice_id = %id, pod = %pod, grace, "pod evicted")
        }
        Progress::BlockedByBudget {
            pod,
            attempt,
            message,
        } => {
            tracing::info!(notice_id = %id, pod = %pod, attempt, message = %message, "eviction blocked by a PodDisruptionBudget")
        }
        Progress::DeletedAtDeadline { pod, grace } => {
            tracing::warn!(notice_id = %id, pod = %pod, grace, "pod deleted at the deadline")
        }
        Progress::Gone { pod } => tracing::debug!(notice_id = %id, pod = %pod, "pod gone"),
        Progress::Hastened { pod, grace } => {
            tracing::info!(notice_id = %id, pod = %pod, grace, "a nearer deadline: the pod's grace shortened")
        }
        Progress::Failed { pod, reason } => {
            tracing::warn!(notice_id = %id, pod = %pod, reason = %reason, "pod did not leave")
        }
    }
}

/// Writes the Events of one update; false when the API did not take one of them.
pub(crate) async fn record_event(events: &EventReporter, u: &Update) -> bool {
    let events = &events.on_node(&u.notice().node);
    match u {
        Update::Detected { notice, .. } => events.notice(notice).await,
        Update::Fenced {
            notice,
            effect,
            cordoned,
            changed: true,
            ..
        } => events.fenced(notice, effect, *cordoned).await,
        Update::DrainStarted { time_left, .. } => {
            events.drain_started(time_left.as_secs_f64()).await
        }
        Update::Drain { progress, .. } => events.progress(progress).await,
        Update::DrainFinished { report, .. } => events.drain_finished(report).await,
        Update::Unfenced {
            why, changed: true, ..
        } => events.unfenced(why).await,
        _ => true,
    }
}
