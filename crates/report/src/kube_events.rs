//! Kubernetes Events on the Node and on evicted Pods, through kube-runtime's recorder
//! (events.k8s.io/v1, which `kubectl get events` also lists). Reasons are the product's:
//! the notice kind, then `Fenced`, `DrainStarted`, `PodEvicted`, `PodDeletedAtDeadline`,
//! `DrainSucceeded`, `DrainFailed`, `Unfenced`.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use sih_core::Notice;
use sih_node::{DrainReport, PodRef, Progress};

pub struct EventReporter {
    recorder: Recorder,
    node: ObjectReference,
}

fn pod_ref(p: &PodRef) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(p.namespace.clone()),
        name: Some(p.name.clone()),
        ..ObjectReference::default()
    }
}

impl EventReporter {
    /// `instance` names who reports (the node or pod the handler runs as).
    pub fn new(client: kube::Client, node: &str, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: "spot-interrupt-handler".into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client, reporter),
            node: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_owned()),
                ..ObjectReference::default()
            },
        }
    }

    async fn publish(
        &self,
        on: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, on).await {
            // Telling people must never stop the evacuation; the log still has it.
            tracing::warn!(error = %e, reason, "could not record a Kubernetes Event");
        }
    }

    /// The notice itself, then `Fenced`.
    pub async fn fenced(&self, notice: &Notice, effect: &str) {
        let deadline = notice
            .deadline
            .map_or_else(|| "no deadline".to_owned(), |d| format!("deadline {d}"));
        self.publish(
            &self.node,
            EventType::Warning,
            notice.kind.event_reason(),
            "Notice",
            format!("{} notice {} ({deadline})", notice.kind, notice.id),
        )
        .await;
        self.publish(
            &self.node,
            EventType::Normal,
            "Fenced",
            "Fence",
            format!(
                "tainted {}={}:{effect}, cordoned, excluded from external load balancers",
                notice.kind.taint_key(),
                notice.id
            ),
        )
        .await;
    }

    pub async fn drain_started(&self, deadline_in_secs: f64) {
        self.publish(
            &self.node,
            EventType::Normal,
            "DrainStarted",
            "Drain",
            format!("draining with {deadline_in_secs:.0}s before the deadline"),
        )
        .await;
    }

    pub async fn progress(&self, p: &Progress) {
        match p {
            Progress::Evicted { pod, grace } => {
                self.publish(
                    &pod_ref(pod),
                    EventType::Normal,
                    "PodEvicted",
                    "Evict",
                    format!("evicted with a {grace}s grace period before the node's interruption"),
                )
                .await;
            }
            Progress::Warning { pod, reason } => {
                self.publish(
                    &pod_ref(pod),
                    EventType::Warning,
                    "PodEvicted",
                    "Evict",
                    format!("evicted although {reason}"),
                )
                .await;
            }
            Progress::DeletedAtDeadline { pod, grace } => {
                self.publish(&pod_ref(pod), EventType::Warning, "PodDeletedAtDeadline", "Delete",
                    format!("its PodDisruptionBudget still refused; deleted with {grace}s of grace, the time left before the instance goes")).await;
            }
            _ => {}
        }
    }

    pub async fn drain_finished(&self, report: &DrainReport) {
        let summary = format!(
            "{} evicted, {} deleted at the deadline, {} remaining, {:.1}s left before the deadline",
            report.evicted,
            report.deleted_at_deadline,
            report.remaining.len(),
            report.slack_ms as f64 / 1000.0
        );
        let (type_, reason) = if report.succeeded() {
            (EventType::Normal, "DrainSucceeded")
        } else {
            (EventType::Warning, "DrainFailed")
        };
        self.publish(&self.node, type_, reason, "Drain", summary)
            .await;
    }

    pub async fn unfenced(&self) {
        self.publish(
            &self.node,
            EventType::Normal,
            "Unfenced",
            "Unfence",
            "our taints, label and notice removed".into(),
        )
        .await;
    }
}
