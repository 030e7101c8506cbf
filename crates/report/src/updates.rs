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

use sih_core::Notice;
use sih_node::Progress;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::event_queue::{EVENT_QUEUE, EventQueue};
pub use crate::update::Update;

use crate::known::SharedFacts;
use crate::webhook::{Learned, TemplateData, Webhook};
use crate::{EventReporter, Metrics};

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
    /// Features turned off for a missing permission: Events among them.
    pub off: sih_node::access::Switches,
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
            self.metrics.count(&update, self.source, &self.facts);
            learned.learn(&update);
            if let Some(tap) = &self.tap {
                let _ = tap.send(update.clone());
            }
            if let Some((queue, _)) = &events
                && update.makes_event()
                && !self.off.is_off(sih_node::access::Feature::Events)
            {
                queue.push(update.clone());
            }
            let message = self.webhook.as_ref().and_then(|_| {
                crate::webhook::message(
                    &update,
                    self.source,
                    &self.facts,
                    &learned,
                    self.webhook_patience,
                )
            });
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
        Progress::Reserved { what, warning } | Progress::LoadBalancers { what, warning } => {
            let about = if matches!(p, Progress::Reserved { .. }) {
                "capacity"
            } else {
                "load balancers"
            };
            if *warning {
                tracing::warn!(notice_id = %id, "{about}: {what}")
            } else {
                tracing::info!(notice_id = %id, "{about}: {what}")
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
