//! Reporters: one stream of updates about notices and node actions becomes log lines,
//! Kubernetes Events, Prometheus metrics and webhook messages. A reporter never fails the action
//! it reports.
#![forbid(unsafe_code)]

pub mod event_queue;
pub mod kube_events;
pub mod metrics;
pub mod updates;
pub mod webhook;

pub use kube_events::EventReporter;
pub use metrics::Metrics;
pub use updates::{Known, Reporters, SharedFacts, Update};
pub use webhook::{Webhook, WebhookConfig};
