//! Kubernetes Events on the Node and on evicted Pods, written as events.k8s.io/v1 objects
//! (which `kubectl get events` also lists). Reasons are the product's: the notice kind, then
//! `Fenced`, `DrainStarted`, `PodEvicted`, `PodDeletedAtDeadline`, `DrainSucceeded`,
//! `DrainFailed`, `Unfenced`.
//!
//! Written directly rather than through kube-runtime's `Recorder`, because NTH users expect
//! extra annotations on each Event (`KUBERNETES_EVENTS_EXTRA_ANNOTATIONS`) and the recorder has
//! no place for them; every Event here is distinct, so its series merging is not needed.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use sih_core::Notice;
use sih_node::{DrainReport, PodRef, Progress};

use crate::update::Update;

const CONTROLLER: &str = "spot-interrupt-handler";
/// The longest `note` the API server accepts (bytes).
const NOTE_MAX: usize = 1024;
/// The longest `reportingInstance` it accepts (bytes).
const INSTANCE_MAX: usize = 128;

/// `s` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
fn truncated(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

pub struct EventReporter {
    client: kube::Client,
    instance: String,
    node: ObjectReference,
    annotations: BTreeMap<String, String>,
    /// The bound on one Event write.
    timeout: std::time::Duration,
}

#[derive(Clone, Copy)]
enum EventType {
    Normal,
    Warning,
}

fn pod_ref(p: &PodRef) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(p.namespace.clone()),
        name: Some(p.name.clone()),
        // `kubectl describe pod` selects Events by the pod's uid: without it they are invisible.
        uid: (!p.uid.is_empty()).then(|| p.uid.clone()),
        ..ObjectReference::default()
    }
}

/// A Node as Events name it. `kubectl describe node` selects Events by the node's uid or, by
/// the kubelet's convention, by a uid equal to the node's name; the name is what every mode
/// knows without reading the Node, so that is what we write.
fn node_ref(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.to_owned()),
        uid: Some(node.to_owned()),
        ..ObjectReference::default()
    }
}

impl EventReporter {
    /// `instance` names who reports (the pod the handler runs as, else the node).
    pub fn new(client: kube::Client, node: &str, instance: Option<String>) -> Self {
        Self {
            client,
            instance: instance.unwrap_or_else(|| node.to_owned()),
            node: node_ref(node),
            annotations: BTreeMap::new(),
            timeout: sih_node::API_TIMEOUT,
        }
    }

    /// Bounds each Event write (`--api-timeout`).
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same reporter for another node (queue mode reports on many).
    pub fn on_node(&self, node: &str) -> Self {
        Self {
            client: self.client.clone(),
            instance: self.instance.clone(),
            node: node_ref(node),
            annotations: self.annotations.clone(),
            timeout: self.timeout,
        }
    }

    /// Annotations put on every Event (`k=v` pairs from the command line).
    pub fn with_annotations(mut self, annotations: BTreeMap<String, String>) -> Self {
        self.annotations = annotations;
        self
    }

    async fn publish(
        &self,
        on: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) -> bool {
        let now = Timestamp::now();
        // Node events live in `default`, as kubectl and the kubelet put them.
        let namespace = on.namespace.clone().unwrap_or_else(|| "default".into());
        let name = format!(
            "{}.{:x}{:04x}",
            on.name.as_deref().unwrap_or("object"),
            now.as_nanosecond(),
            fastrand::u16(..)
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.clone()),
                annotations: (!self.annotations.is_empty()).then(|| self.annotations.clone()),
                ..ObjectMeta::default()
            },
            action: Some(action.into()),
            reason: Some(reason.into()),
            // The API server refuses a note over 1 KiB and an instance over 128 bytes.
            note: Some(truncated(note, NOTE_MAX)),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(on.clone()),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(truncated(self.instance.clone(), INSTANCE_MAX)),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let params = PostParams::default();
        let written = sih_node::bounded(self.timeout, "create event", api.create(&params, &event))
            .await
            .and_then(|r| r.map_err(sih_node::NodeError::Api));
        match written {
            Ok(_) => true,
            Err(e) => {
                // Telling people must never stop the evacuation; the log still has it.
                tracing::warn!(error = %e, reason, "could not record a Kubernetes Event");
                false
            }
        }
    }

    /// The notice itself, under its kind's reason (`SpotInterruption`, ...).
    pub async fn notice(&self, notice: &Notice) -> bool {
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
        .await
    }

    /// `Fenced`: what the one write did.
    pub async fn fenced(&self, notice: &Notice, effect: &str, cordoned: bool) -> bool {
        let what = if cordoned {
            ", cordoned, excluded from external load balancers"
        } else {
            ""
        };
        self.publish(
            &self.node,
            EventType::Normal,
            "Fenced",
            "Fence",
            format!(
                "tainted {}={}:{effect}{what}",
                notice.kind.taint_key(),
                notice.id
            ),
        )
        .await
    }

    pub async fn drain_started(&self, deadline_in_secs: f64) -> bool {
        self.publish(
            &self.node,
            EventType::Normal,
            "DrainStarted",
            "Drain",
            format!("draining with {deadline_in_secs:.0}s before the deadline"),
        )
        .await
    }

    pub async fn progress(&self, p: &Progress) -> bool {
        match p {
            Progress::Evicted { pod, grace } => {
                self.publish(
                    &pod_ref(pod),
                    EventType::Normal,
                    "PodEvicted",
                    "Evict",
                    format!("evicted with a {grace}s grace period before the node's interruption"),
                )
                .await
            }
            Progress::Warning { pod, reason } => {
                self.publish(
                    &pod_ref(pod),
                    EventType::Warning,
                    "PodEvicted",
                    "Evict",
                    format!("evicted although {reason}"),
                )
                .await
            }
            Progress::InvalidChoice { pod, value } => {
                self.publish(
                    &pod_ref(pod),
                    EventType::Warning,
                    "InvalidEvictionChoice",
                    "Evict",
                    format!(
                        "spot-interrupt-handler/eviction: {value:?} is not one of {}; the default applies (evicted in its priority's tier)",
                        sih_core::EvictionChoice::VALUES.join(", ")
                    ),
                )
                .await
            }
            Progress::DeletedAtDeadline { pod, grace } => {
                self.publish(&pod_ref(pod), EventType::Warning, "PodDeletedAtDeadline", "Delete",
                    format!("still not out at its last moment (budget refusing, or evictions failing); deleted with {grace}s of grace, the time left before the instance goes")).await
            }
            // Said on the node, whose drain they concern.
            Progress::Reserved { what, warning } | Progress::LoadBalancers { what, warning } => {
                let reason = if matches!(p, Progress::Reserved { .. }) {
                    "CapacityReserved"
                } else {
                    "LoadBalancers"
                };
                let type_ = if *warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                self.publish(&self.node, type_, reason, "Drain", what.clone())
                    .await
            }
            // A surge not made (a record that does not add up, a value we do not act on, an
            // HPA): said on the node, whose drain it concerns.
            Progress::Surge {
                workload,
                what,
                warning: true,
            } => {
                self.publish(
                    &self.node,
                    EventType::Warning,
                    "SurgeSkipped",
                    "Drain",
                    format!("{workload}: {what}"),
                )
                .await
            }
            _ => true,
        }
    }

    pub async fn drain_finished(&self, report: &DrainReport) -> bool {
        let summary = report.summary();
        let (type_, reason) = if report.succeeded() {
            (EventType::Normal, "DrainSucceeded")
        } else {
            (EventType::Warning, "DrainFailed")
        };
        self.publish(&self.node, type_, reason, "Drain", summary)
            .await
    }

    pub async fn unfenced(&self, why: &str) -> bool {
        self.publish(
            &self.node,
            EventType::Normal,
            "Unfenced",
            "Unfence",
            format!("our taints, label and notice removed: {why}"),
        )
        .await
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

#[cfg(test)]
mod tests {
    #[test]
    fn notes_and_instances_fit_what_the_api_server_accepts() {
        let long = "é".repeat(700);
        let cut = super::truncated(long, super::NOTE_MAX);
        assert!(cut.len() <= super::NOTE_MAX && cut.ends_with('…'));
        assert_eq!(super::truncated("short".into(), 10), "short");
    }
}
