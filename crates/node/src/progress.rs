//! What a drain tells as it goes ([`Progress`], one typed event per step, for reporters to
//! turn into logs, Events, metrics and webhooks) and how it ended ([`DrainEnd`] with its
//! [`DrainReport`]). A home of their own: the load balancers' wait (`lb.rs`) and the surge
//! (`surge.rs`) speak them too, without importing the drain.

use std::time::Duration;

use sih_core::SkipReason;

/// How a drain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainEnd {
    /// It ran to its end: every pod left, or the deadline passed.
    Finished(DrainReport),
    /// No notice needs it any more (its target went away).
    Stopped(DrainReport),
}

impl DrainEnd {
    pub fn report(&self) -> &DrainReport {
        match self {
            Self::Finished(r) | Self::Stopped(r) => r,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    /// The pod's uid: an Event about the pod names it, or `kubectl describe pod` never shows it.
    pub uid: String,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What happened during a drain, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Planned {
        evict: usize,
        terminating: usize,
        skipped: usize,
    },
    Skipped {
        pod: PodRef,
        reason: SkipReason,
    },
    /// The pod is evicted although nobody recreates it, or its emptyDir data is lost.
    Warning {
        pod: PodRef,
        reason: String,
    },
    /// A surge before eviction (`spot-interrupt-handler/surge` on a Deployment): raised,
    /// ready, restored, or not done and why (`warning`).
    Surge {
        workload: String,
        what: String,
        warning: bool,
    },
    /// Capacity first (`--reserve-capacity`): the placeholders made for the pods leaving, or
    /// why not (`warning`).
    Reserved {
        what: String,
        warning: bool,
    },
    /// The pod's `spot-interrupt-handler/eviction` annotation is not a choice: the default
    /// applies.
    InvalidChoice {
        pod: PodRef,
        value: String,
    },
    Evicted {
        pod: PodRef,
        grace: i64,
    },
    BlockedByBudget {
        pod: PodRef,
        attempt: u32,
        message: String,
    },
    DeletedAtDeadline {
        pod: PodRef,
        grace: i64,
    },
    /// A nearer deadline: a pod still stopping was asked again with a shorter grace.
    Hastened {
        pod: PodRef,
        grace: i64,
    },
    Gone {
        pod: PodRef,
    },
    /// The wait on the load balancers' target health (`--lb-target-health`): what it sees,
    /// and when it cannot ask (`warning`).
    LoadBalancers {
        what: String,
        warning: bool,
    },
    Failed {
        pod: PodRef,
        reason: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub evicted: usize,
    /// Pods found already leaving when this drain began: evicted by an earlier drain (a
    /// replica or process that stopped mid-way) and waited for here.
    pub already_leaving: usize,
    pub budget_refusals: u32,
    pub deleted_at_deadline: usize,
    pub failed: Vec<(PodRef, String)>,
    /// Pods still on the node when the drain ended.
    pub remaining: Vec<PodRef>,
    pub took: Duration,
    /// Time left before the deadline when the drain ended (negative: past it).
    pub slack_ms: i64,
    /// Each pod this drain asked to leave and saw gone: how long from the ask to gone.
    pub exits: Vec<Duration>,
    /// The pod that took longest to go, and how long: where a slow drain's time went.
    pub slowest: Option<(PodRef, Duration)>,
    /// The ReplicaSets (`namespace`, `name`) whose pods this drain asked to leave: recovered
    /// when each has its replicas Ready again ([`crate::drain::recovered`]).
    pub owners: Vec<(String, String)>,
}

impl DrainReport {
    /// Every pod left, none failed. A drain never reports success while pods remain.
    pub fn succeeded(&self) -> bool {
        self.remaining.is_empty() && self.failed.is_empty()
    }

    /// One line for people (Events, webhooks): what left and how, and the time to spare.
    pub fn summary(&self) -> String {
        let earlier = match self.already_leaving {
            0 => String::new(),
            n => format!(" (and {n} evicted before this drain began)"),
        };
        let slowest = match &self.slowest {
            Some((pod, took)) => format!(
                "; slowest {pod}, gone {:.1}s after it was asked",
                took.as_secs_f64()
            ),
            None => String::new(),
        };
        format!(
            "{} evicted{earlier}, {} deleted at the deadline, {} remaining, {:.1}s left before the deadline{slowest}",
            self.evicted,
            self.deleted_at_deadline,
            self.remaining.len(),
            self.slack_ms as f64 / 1000.0
        )
    }
}
