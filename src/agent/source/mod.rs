//! The seam between the agent and where its notices come from. A source says who this
//! instance is and, on each poll, what it sees: notices, which kinds it could read (only those
//! can be withdrawn) and what went wrong. The agent and the responder never see a source's
//! own types, so a new source (another cloud's metadata service) plugs in here alone.
//!
//! Three sources: EC2's instance metadata service (`aws`), Google Compute Engine's metadata
//! server (`gce`, watched with long polls) and Azure's Scheduled Events (`azure`, whose events
//! are acknowledged once their drain is done).

pub mod aws;
pub mod azure;
pub mod gce;

use jiff::Timestamp;
use sih_core::Observation;
use sih_report::webhook::InstanceFacts;

pub use aws::Imds;
pub use azure::Azure;
pub use gce::Gce;

/// Who this instance is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub instance_id: String,
    /// What every webhook message about this instance says of it (`InstanceType`, ...).
    pub facts: InstanceFacts,
    /// How the node that is this instance is found when the agent is not told: the names it
    /// would have, then its `spec.providerID`.
    pub node_names: Vec<String>,
    pub provider_id: Option<String>,
}

/// One poll.
#[derive(Debug, Default)]
pub struct Poll {
    pub observation: Observation,
    /// Items that could not be read, or read with a doubt: `(item, what)`, bounded item names.
    pub problems: Vec<(&'static str, String)>,
    /// Events to acknowledge to the cloud (Azure's `StartRequests`).
    pub acks: Vec<Ack>,
}

/// One acknowledgement the source asks for: the agent makes it at once (`after_done` false)
/// or once the notice's action is done, through [`NoticeSource::acknowledge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub event_id: String,
    pub notice_id: String,
    pub after_done: bool,
}

/// Why a source could not answer: what failed, and whether trying again may help (the
/// metadata service down or slow) or not (an answer we cannot use).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct SourceError {
    pub what: String,
    pub retryable: bool,
}

impl SourceError {
    pub fn new(what: impl std::fmt::Display, retryable: bool) -> Self {
        Self {
            what: what.to_string(),
            retryable,
        }
    }
}

impl From<sih_imds::ImdsError> for SourceError {
    fn from(e: sih_imds::ImdsError) -> Self {
        Self::new(&e, e.is_retryable())
    }
}

impl From<sih_clouds::CloudError> for SourceError {
    fn from(e: sih_clouds::CloudError) -> Self {
        Self::new(&e, e.is_retryable())
    }
}

pub trait NoticeSource {
    /// Who this instance is (the caller retries until it works).
    fn identity(&self) -> impl std::future::Future<Output = Result<Identity, SourceError>> + Send;

    /// One look at the source for `node`, detected at `now`. Bounded: a source that hangs
    /// answers with errors, never not at all.
    fn poll(
        &self,
        identity: &Identity,
        node: &str,
        now: Timestamp,
    ) -> impl std::future::Future<Output = Poll> + Send;

    /// Whether each poll waits for a change itself (a long poll): the agent then polls again
    /// at once, and waits its poll interval only after a poll with problems.
    fn long_polls(&self) -> bool {
        false
    }

    /// Tells the cloud it may go ahead with these events now: `Ok(true)` when it was told,
    /// `Ok(false)` when none of them was still waiting (cancelled or started meanwhile), so
    /// nothing was sent. Bounded; `'static` so that it runs apart from the poll loop.
    fn acknowledge(
        &self,
        event_ids: Vec<String>,
    ) -> impl std::future::Future<Output = Result<bool, SourceError>> + Send + 'static {
        let _ = event_ids;
        std::future::ready(Ok(false))
    }
}
