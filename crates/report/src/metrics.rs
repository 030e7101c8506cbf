//! Prometheus metrics. Labels are bounded (kinds, sources, actions, results): never node names
//! or notice ids, so a mass reclaim cannot blow up the series count.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sih_node::Progress;

use crate::known::SharedFacts;
use crate::update::Update;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NoticeLabels {
    pub kind: &'static str,
    pub source: &'static str,
}

/// Where interruptions land: the instance's type and zone ("unknown" when the source did not
/// say). Both are bounded sets, which is what keeps the series few.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlaceLabels {
    pub kind: &'static str,
    pub instance_type: String,
    pub zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeatureLabels {
    pub feature: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ItemLabels {
    pub item: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsErrorLabels {
    /// `sqs`, `autoscaling`, `ec2`.
    pub service: &'static str,
    /// The API operation (`ReceiveMessage`, `CompleteLifecycleAction`, ...).
    pub operation: &'static str,
    /// `throttled`, `server`, `network`, `timeout`, `client`.
    pub class: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub notices: Family<NoticeLabels, Counter>,
    pub actions: Family<ActionLabels, Counter>,
    pub evictions: Family<ResultLabels, Counter>,
    pub webhooks: Family<ResultLabels, Counter>,
    /// Acknowledgements to the cloud (Azure's `StartRequests`), by result.
    pub acknowledgements: Family<ResultLabels, Counter>,
    pub imds_errors: Family<ItemLabels, Counter>,
    pub aws_errors: Family<AwsErrorLabels, Counter>,
    pub polls: Counter,
    pub fence_latency: Histogram,
    pub drain_duration: Histogram,
    pub deadline_slack: Histogram,
    pub queue_messages: Family<ResultLabels, Counter>,
    pub queue_message_age: Histogram,
    pub drains_in_progress: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub last_poll_seconds: Gauge<f64, AtomicU64>,
    /// Age of the oldest drain still running (0 when none runs).
    pub oldest_drain_seconds: Gauge<f64, AtomicU64>,
    /// Kubernetes Events not written because their queue was full (the oldest go first).
    pub events_dropped: Counter,
    /// Kubernetes Events that could not be written (API errors, timeouts).
    pub events_failed: Counter,
    /// Every failed write of a node's fence, by reason (`not_found`, `api_error`): the log says
    /// a lasting condition once, this counts each time it happened.
    pub node_write_failures: Family<ResultLabels, Counter>,
    /// Notices by kind, instance type and zone.
    pub interruptions: Family<PlaceLabels, Counter>,
    /// From a notice to its node fenced, by kind.
    pub notice_to_fenced: Family<KindLabels, Histogram>,
    /// From a notice to its node empty (a successful drain), by kind.
    pub notice_to_empty: Family<KindLabels, Histogram>,
    /// From a pod's eviction to its being gone.
    pub pod_exit: Histogram,
    /// From a notice to every evicted workload Ready again elsewhere, by kind.
    pub notice_to_recovered: Family<KindLabels, Histogram>,
    /// 1 for each feature turned off at start because a permission it needs is missing.
    pub features_off: Family<FeatureLabels, Gauge>,
}

/// Fence latency is milliseconds to a few seconds; drains and slack are seconds to minutes.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 5.0, 10.0,
];
const DRAIN_BUCKETS: [f64; 11] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0, 900.0,
];
/// Message age at pickup: EventBridge delivery plus the long poll, seconds to minutes.
const AGE_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 300.0];
const SLACK_BUCKETS: [f64; 11] = [
    -10.0, 0.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 600.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered, in the order `/metrics` lists them. Longer than a function
    /// should be, on purpose: one registration after another reads best as one list.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("spot_interrupt_handler");
        let m = Self {
            notices: Family::default(),
            actions: Family::default(),
            evictions: Family::default(),
            webhooks: Family::default(),
            acknowledgements: Family::default(),
            imds_errors: Family::default(),
            aws_errors: Family::default(),
            polls: Counter::default(),
            fence_latency: Histogram::new(LATENCY_BUCKETS),
            drain_duration: Histogram::new(DRAIN_BUCKETS),
            deadline_slack: Histogram::new(SLACK_BUCKETS),
            queue_messages: Family::default(),
            queue_message_age: Histogram::new(AGE_BUCKETS),
            drains_in_progress: Gauge::default(),
            last_poll_seconds: Gauge::default(),
            oldest_drain_seconds: Gauge::default(),
            events_dropped: Counter::default(),
            events_failed: Counter::default(),
            node_write_failures: Family::default(),
            interruptions: Family::default(),
            notice_to_fenced: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            notice_to_empty: Family::new_with_constructor(|| Histogram::new(DRAIN_BUCKETS)),
            pod_exit: Histogram::new(DRAIN_BUCKETS),
            notice_to_recovered: Family::new_with_constructor(|| Histogram::new(DRAIN_BUCKETS)),
            features_off: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "notices",
            "Notices seen, by kind and source",
            m.notices.clone(),
        );
        registry.register(
            "actions",
            "Actions carried out on nodes, by action and result",
            m.actions.clone(),
        );
        registry.register("evictions", "Pods leaving, by result", m.evictions.clone());
        registry.register(
            "webhooks",
            "Webhook deliveries, by result",
            m.webhooks.clone(),
        );
        registry.register(
            "acknowledgements",
            "Scheduled events acknowledged to the cloud so it may go ahead early, by result",
            m.acknowledgements.clone(),
        );
        registry.register(
            "imds_errors",
            "Metadata items that could not be read, by item",
            m.imds_errors.clone(),
        );
        registry.register("polls", "Metadata polls completed", m.polls.clone());
        registry.register(
            "interruptions",
            "Notices by kind, instance type and availability zone",
            m.interruptions.clone(),
        );
        registry.register(
            "notice_to_fenced_seconds",
            "From a notice to its node fenced, by kind",
            m.notice_to_fenced.clone(),
        );
        registry.register(
            "notice_to_empty_seconds",
            "From a notice to its node empty (successful drains), by kind",
            m.notice_to_empty.clone(),
        );
        registry.register(
            "features_off",
            "Features turned off because a permission they need is missing (1), by feature",
            m.features_off.clone(),
        );
        registry.register(
            "notice_to_recovered_seconds",
            "From a notice to every evicted workload Ready again (time to recover), by kind",
            m.notice_to_recovered.clone(),
        );
        registry.register(
            "pod_exit_seconds",
            "From a pod's eviction to its being gone",
            m.pod_exit.clone(),
        );
        registry.register(
            "node_write_failures",
            "Failed writes of a node's fence (each attempt), by result",
            m.node_write_failures.clone(),
        );
        registry.register(
            "fence_latency_seconds",
            "Notice visible to node fenced",
            m.fence_latency.clone(),
        );
        registry.register(
            "drain_duration_seconds",
            "Drain start to end",
            m.drain_duration.clone(),
        );
        registry.register(
            "deadline_slack_seconds",
            "Time left before the deadline when a drain ended",
            m.deadline_slack.clone(),
        );
        registry.register(
            "queue_messages",
            "Queue messages handled, by result",
            m.queue_messages.clone(),
        );
        registry.register(
            "queue_message_age_seconds",
            "Time from a message entering the queue to its pickup",
            m.queue_message_age.clone(),
        );
        registry.register(
            "drains_in_progress",
            "Drains running now",
            m.drains_in_progress.clone(),
        );
        registry.register(
            "oldest_drain_seconds",
            "Age of the oldest drain still running (0 when none runs)",
            m.oldest_drain_seconds.clone(),
        );
        registry.register(
            "kubernetes_events_dropped",
            "Kubernetes Events dropped because their queue was full (oldest first)",
            m.events_dropped.clone(),
        );
        registry.register(
            "kubernetes_events_failed",
            "Kubernetes Events the API did not take (errors, timeouts)",
            m.events_failed.clone(),
        );
        registry.register(
            "aws_errors",
            "AWS API calls that failed, by service, operation and class",
            m.aws_errors.clone(),
        );
        registry.register(
            "last_poll_timestamp_seconds",
            "Unix time of the last completed poll",
            m.last_poll_seconds.clone(),
        );
        Self { registry, ..m }
    }

    pub fn notice(&self, kind: &'static str, source: &'static str) {
        self.notices
            .get_or_create(&NoticeLabels { kind, source })
            .inc();
    }

    pub fn action(&self, action: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.actions
            .get_or_create(&ActionLabels { action, result })
            .inc();
    }

    pub fn eviction(&self, result: &'static str) {
        self.evictions.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn node_write_failure(&self, result: &'static str) {
        self.node_write_failures
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn webhook(&self, result: &'static str) {
        self.webhooks.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn queue_message(&self, result: &'static str) {
        self.queue_messages
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn acknowledged(&self, result: &'static str) {
        self.acknowledgements
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn imds_error(&self, item: &'static str) {
        self.imds_errors.get_or_create(&ItemLabels { item }).inc();
    }

    pub fn aws_error(&self, service: &'static str, operation: &'static str, class: &'static str) {
        self.aws_errors
            .get_or_create(&AwsErrorLabels {
                service,
                operation,
                class,
            })
            .inc();
    }

    pub fn fenced_after(&self, latency: Duration) {
        self.fence_latency.observe(latency.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Each update counted: the metrics own their mapping from the stream.
impl Metrics {
    /// Counts one update of `source`'s (`imds`, `queue`, `manual`); `known` gives an
    /// interruption's instance type and zone.
    pub fn count(&self, u: &Update, source: &'static str, known: &SharedFacts) {
        let m = self;
        match u {
            Update::Detected { notice, .. } => {
                m.notice(notice.kind.as_str(), source);
                let known = known.read().unwrap_or_else(|e| e.into_inner());
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
                    .get_or_create(&PlaceLabels {
                        kind: notice.kind.as_str(),
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
                    .get_or_create(&KindLabels {
                        kind: notice.kind.as_str(),
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
                        .get_or_create(&KindLabels {
                            kind: notice.kind.as_str(),
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
                .get_or_create(&KindLabels {
                    kind: notice.kind.as_str(),
                })
                .observe(after.as_secs_f64()),
            Update::DeadlineMoved { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_bounded_labels() {
        let m = Metrics::new();
        m.notice("spot-interruption", "imds");
        m.action("fence", true);
        m.eviction("evicted");
        m.fenced_after(Duration::from_millis(30));
        m.aws_error("sqs", "ReceiveMessage", "client");
        let text = m.encode();
        assert!(text.contains(
            "spot_interrupt_handler_aws_errors_total{service=\"sqs\",operation=\"ReceiveMessage\",class=\"client\"} 1"
        ));
        assert!(text.contains(
            "spot_interrupt_handler_notices_total{kind=\"spot-interruption\",source=\"imds\"} 1"
        ));
        assert!(
            text.contains("spot_interrupt_handler_actions_total{action=\"fence\",result=\"ok\"} 1")
        );
        assert!(text.contains("spot_interrupt_handler_evictions_total{result=\"evicted\"} 1"));
        assert!(text.contains("spot_interrupt_handler_fence_latency_seconds_count 1"));
        assert!(text.contains("# TYPE spot_interrupt_handler_deadline_slack_seconds histogram"));
        assert!(text.ends_with("# EOF\n"));
    }
}
