//! Reporters consume the node actions' progress and tell people: Kubernetes Events now; logs,
//! metrics and webhooks arrive with the agent. A reporter never fails the action it reports.
#![forbid(unsafe_code)]

pub mod kube_events;

pub use kube_events::EventReporter;
