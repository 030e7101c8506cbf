//! The core of spot-interrupt-handler, free of IO: what a notice is, which notices a node
//! carries, the evacuation plan they make together, and how a drain is planned against its
//! deadline. Everything here is a pure function of its inputs, so the policy is
//! tested without a cluster, a network or a clock.
#![forbid(unsafe_code)]

pub mod action_policy;
pub mod backoff;
pub mod drain_plan;
pub mod label_value;
pub mod leaving;
pub mod notice;
pub mod plan;
pub mod tracker;

pub use action_policy::{Action, ActionPolicy};
pub use backoff::Backoff;
pub use drain_plan::{
    DrainPolicy, EVICTION_ANNOTATION, EvictionChoice, PodFacts, PodPlan, SkipReason, plan_drain,
    tier_starts,
};
pub use leaving::{LeaveStep, Leaving};
pub use notice::{Notice, NoticeKind, Source};
pub use plan::{Carried, DrainTarget, Plan, PlanRules, PlannedTaint, evacuation_plan};
pub use tracker::{Change, Observation, Tracker, gone_from};
