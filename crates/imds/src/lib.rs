//! Client for the EC2 instance metadata service (IMDS), as the spot agent needs it.
//!
//! - [`items`]: typed interruption and identity items and their pure parsers;
//! - [`ImdsClient`]: IMDSv2 tokens (cached, refreshed, one retry on 401, IMDSv1 fallback unless
//!   told otherwise), per-request timeouts, bounded retries, capped bodies;
//! - [`ImdsClient::poll`]: every interruption item in one concurrent round.
#![forbid(unsafe_code)]

mod client;
mod error;
pub mod items;
pub mod notices;
mod token;

pub use client::{
    ImdsClient, ImdsConfig, MAX_TOKEN_TTL, TOKEN_HEADER, TOKEN_PATH, TOKEN_TTL_HEADER, paths,
};
pub use error::ImdsError;
pub use items::{
    IdentityDocument, InstanceIdentity, RebalanceRecommendation, ScheduledEvent,
    ScheduledEventCode, ScheduledEventState, ScheduledEvents, SpotAction, SpotInstanceAction,
    TargetLifecycleState,
};

/// One poll's view of every interruption item. Each item keeps its own result, so a
/// malformed rebalance body cannot hide a spot notice served beside it.
#[derive(Debug)]
pub struct InterruptionSnapshot {
    pub spot_instance_action: Result<Option<SpotInstanceAction>, ImdsError>,
    pub spot_termination_time: Result<Option<jiff::Timestamp>, ImdsError>,
    pub rebalance: Result<Option<RebalanceRecommendation>, ImdsError>,
    pub scheduled_events: Result<ScheduledEvents, ImdsError>,
    pub target_lifecycle_state: Result<Option<TargetLifecycleState>, ImdsError>,
}

impl InterruptionSnapshot {
    /// The errors of this poll, item by item.
    pub fn errors(&self) -> impl Iterator<Item = &ImdsError> {
        [
            self.spot_instance_action.as_ref().err(),
            self.spot_termination_time.as_ref().err(),
            self.rebalance.as_ref().err(),
            self.scheduled_events.as_ref().err(),
            self.target_lifecycle_state.as_ref().err(),
        ]
        .into_iter()
        .flatten()
    }

    /// The errors of this poll with the name of the item each belongs to (a bounded label).
    pub fn item_errors(&self) -> impl Iterator<Item = (&'static str, &ImdsError)> {
        [
            (
                "spot-instance-action",
                self.spot_instance_action.as_ref().err(),
            ),
            (
                "spot-termination-time",
                self.spot_termination_time.as_ref().err(),
            ),
            ("rebalance", self.rebalance.as_ref().err()),
            ("scheduled-events", self.scheduled_events.as_ref().err()),
            (
                "target-lifecycle-state",
                self.target_lifecycle_state.as_ref().err(),
            ),
        ]
        .into_iter()
        .filter_map(|(item, e)| e.map(|e| (item, e)))
    }

    /// The notice kinds whose items were read without error this poll: only those can be said
    /// to have disappeared.
    pub fn readable(&self) -> Vec<sih_core::NoticeKind> {
        use sih_core::NoticeKind as K;
        let mut out = Vec::with_capacity(4);
        if self.spot_instance_action.is_ok() && self.spot_termination_time.is_ok() {
            out.push(K::SpotInterruption);
        }
        if self.rebalance.is_ok() {
            out.push(K::RebalanceRecommendation);
        }
        if self.scheduled_events.is_ok() {
            out.push(K::ScheduledMaintenance);
        }
        if self.target_lifecycle_state.is_ok() {
            out.push(K::AsgTermination);
        }
        out
    }
}
