//! Reporters: one stream of updates about notices and node actions becomes log lines,
//! Kubernetes Events, Prometheus metrics and webhook messages. A reporter never fails the action
//! it reports.
#![forbid(unsafe_code)]

pub mod event_queue;
pub mod known;
pub mod kube_events;
pub mod metrics;
pub mod update;
pub mod updates;
pub mod webhook;

pub use known::{Known, SharedFacts};
pub use kube_events::EventReporter;
pub use metrics::Metrics;
pub use update::Update;
pub use updates::Reporters;
pub use webhook::{Webhook, WebhookConfig};
