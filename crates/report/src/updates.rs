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

use crate::webhook::{TemplateData, Webhook};
use crate::{EventReporter, Metrics};

/// Webhook fields shared by every message, settable after start.
pub type SharedTemplate = Arc<std::sync::RwLock<TemplateData>>;

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
                    | Progress::DeletedAtDeadline { .. }
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
    /// Fields shared by every webhook message: cluster name, instance metadata (filled in
    /// when the instance's identity is known, which may be after the reporters start).
    pub template_base: SharedTemplate,
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
        while let Some(update) = rx.recv().await {
            self.log(&update);
            self.count(&update);
            if let Some(tap) = &self.tap {
                let _ = tap.send(update.clone());
            }
            if let Some((queue, _)) = &events
                && update.makes_event()
            {
                queue.push(update.clone());
            }
            if let (Some(hook), Some((data, give_up))) = (&self.webhook, self.message(&update)) {
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
                            tracing::info!(url = %hook.redacted_url(), status, attempts = d.attempts, event_id = data.get("EventID").map(String::as_str).unwrap_or_default(), "webhook delivered");
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
                notice_id = %notice.id, kind = kind_str(notice), node = %notice.node,
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
                tracing::warn!(notice_id = %notice.id, node = %notice.node, action, error = %error, retrying, "action failed")
            }
            Update::WouldDo { notice, what } => {
                tracing::info!(notice_id = %notice.id, node = %notice.node, "dry run: would {what}")
            }
            Update::OutOfService { notice } => tracing::info!(
                notice_id = %notice.id, node = %notice.node, "out-of-service taint added"
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
            Update::Detected { notice, .. } => m.notice(kind_str(notice), self.source),
            Update::Fenced { latency, .. } => {
                m.action("fence", true);
                m.fenced_after(*latency);
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
            Update::DrainFinished { report, .. } => {
                m.drains_in_progress.dec();
                m.action("drain", report.succeeded());
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
            Update::DeadlineMoved { .. } => {}
        }
    }

    /// The webhook message for an update, if it is one people are told about: on detection and
    /// at the drain's end.
    fn message(&self, u: &Update) -> Option<(TemplateData, Instant)> {
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
        let mut data = self
            .template_base
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        data.insert("EventID", notice.id.clone());
        data.insert("Kind", notice.kind.as_str().to_owned());
        data.insert("Monitor", self.source.to_owned());
        data.insert("Phase", phase.to_owned());
        data.insert("Description", description);
        data.insert("NodeName", notice.node.clone());
        if let Some(i) = &notice.instance_id {
            data.insert("InstanceID", i.clone());
        }
        data.insert("StartTime", notice.detected.to_string());
        if let Some(d) = notice.deadline {
            data.insert("Deadline", d.to_string());
            data.insert("EndTime", d.to_string());
        }
        if let Update::DrainFinished { report, .. } = u {
            data.insert(
                "State",
                if report.succeeded() {
                    "drained"
                } else {
                    "drain-failed"
                }
                .to_owned(),
            );
        } else {
            data.insert("State", "active".to_owned());
        }
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

fn log_progress(notice: &Notice, p: &Progress) {
    let id = &notice.id;
    match p {
        Progress::Planned {
            evict,
            terminating,
            skipped,
        } => tracing::info!(notice_id = %id, evict, terminating, skipped, "drain planned"),
        Progress::Skipped { pod, reason } => {
            tracing::debug!(notice_id = %id, pod = %pod, reason = reason.as_str(), "pod stays")
        }
        Progress::Warning { pod, reason } => {
            tracing::warn!(notice_id = %id, pod = %pod, reason = %reason, "evicting anyway")
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
