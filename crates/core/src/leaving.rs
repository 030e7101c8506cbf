//! How one pod still on a draining node is asked to leave next: by eviction, or by deletion
//! once a hard deadline leaves no more time for its budget. The decision is kept apart from
//! the loop that carries it out (Karpenter's `needsForceDelete`, brupop's `evict_pod` apart
//! from `drain_node`), so each of its rules is a row of the table below.
//!
//! The rules:
//! - the graceful path first: a pod is deleted only after an eviction was tried;
//! - at a hard deadline a pod not yet out is deleted once its own grace (bounded by the
//!   override) and the margin would no longer fit before it — whatever kept it (a budget,
//!   failing or hanging evictions), the instance is going;
//! - until then it is asked by eviction, and the answer is awaited no longer than the moment
//!   to delete it, or the drain's end; a pod whose own grace no longer fits at all is asked by
//!   eviction once, its answer awaited for half the time that still fits a grace;
//! - past the drain's end a pod is given up on, except one whose deletion is due and was not
//!   tried yet (a notice that came late still gets its one deletion).

use std::time::Duration;

use crate::DrainPolicy;

/// The next way to ask a pod to leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveStep {
    /// By eviction (its budget decides); decide again within `decide_within` at the latest:
    /// when it must be deleted instead, or at the drain's end.
    Evict { decide_within: Duration },
    /// Deleted now, with the grace that fits.
    Delete,
}

/// Where one pod's leaving stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leaving {
    pub tried_evict: bool,
    pub tried_delete: bool,
}

impl Leaving {
    /// What to do next for a pod with `pod_grace`, given the time left before the hard
    /// deadline (`None`: the deadline is soft, budgets are respected to the end; zero: it has
    /// passed) and before the drain gives up.
    pub fn next(
        &self,
        policy: &DrainPolicy,
        pod_grace: i64,
        until_hard: Option<Duration>,
        until_end: Duration,
    ) -> LeaveStep {
        match delete_in(policy, pod_grace, until_hard) {
            Some(d) if d.is_zero() && self.tried_evict => LeaveStep::Delete,
            Some(d) if !d.is_zero() => LeaveStep::Evict { decide_within: d },
            // Its own grace no longer fits: the eviction is tried first, and its answer
            // awaited for half the time that still fits a grace, so that a hung eviction
            // leaves the other half to a deletion (the soak's seed 62111: a hung eviction
            // awaited to the deadline, the pods deleted as the instance went).
            Some(_) => LeaveStep::Evict {
                decide_within: (until_hard
                    .unwrap_or_default()
                    .saturating_sub(policy.margin())
                    / 2)
                .min(until_end),
            },
            None => LeaveStep::Evict {
                decide_within: until_end,
            },
        }
    }

    /// Whether, with `until_end` left, the drain gives up on the pod.
    pub fn out_of_time(
        &self,
        policy: &DrainPolicy,
        until_hard: Option<Duration>,
        until_end: Duration,
    ) -> bool {
        let deletion_due = until_hard.is_some() && policy.delete_at_deadline && !self.tried_delete;
        until_end.is_zero() && !deletion_due
    }
}

/// How long until the pod must be deleted (zero: now), when a hard deadline says it must.
fn delete_in(
    policy: &DrainPolicy,
    pod_grace: i64,
    until_hard: Option<Duration>,
) -> Option<Duration> {
    until_hard
        .filter(|_| policy.delete_at_deadline)
        .map(|h| h.saturating_sub(policy.delete_lead(pod_grace)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    /// One row: the pod's grace, the hard deadline and the end from now, whether an eviction
    /// was tried, and what must happen (margin 5 s).
    struct Row {
        rule: &'static str,
        grace: i64,
        until_hard: Option<u64>,
        until_end: u64,
        tried_evict: bool,
        want: LeaveStep,
    }

    const fn evict(within: u64) -> LeaveStep {
        LeaveStep::Evict {
            decide_within: Duration::from_secs(within),
        }
    }

    const ROWS: &[Row] = &[
        Row {
            rule: "soft deadline: eviction until the end, never a deletion",
            grace: 30,
            until_hard: None,
            until_end: 40,
            tried_evict: true,
            want: evict(40),
        },
        Row {
            rule: "hard deadline far off: eviction, decided again when the deletion is due",
            grace: 30,
            until_hard: Some(100),
            until_end: 100,
            tried_evict: true,
            want: evict(65),
        },
        Row {
            rule: "its grace and the margin no longer fit: deleted",
            grace: 30,
            until_hard: Some(35),
            until_end: 35,
            tried_evict: true,
            want: LeaveStep::Delete,
        },
        Row {
            rule: "the graceful path first: never deleted before an eviction was tried, its \
                   answer awaited for half the time that fits a grace (25 s less the margin)",
            grace: 30,
            until_hard: Some(25),
            until_end: 25,
            tried_evict: false,
            want: evict(10),
        },
        Row {
            rule: "a hard deadline inside the margin: the eviction is tried, not awaited",
            grace: 30,
            until_hard: Some(3),
            until_end: 3,
            tried_evict: false,
            want: evict(0),
        },
        Row {
            rule: "a grace longer than the whole notice: tried once by eviction, then deleted",
            grace: 600,
            until_hard: Some(120),
            until_end: 120,
            tried_evict: true,
            want: LeaveStep::Delete,
        },
        Row {
            rule: "the hard deadline has passed (a notice that came late): deleted at once",
            grace: 5,
            until_hard: Some(0),
            until_end: 15,
            tried_evict: true,
            want: LeaveStep::Delete,
        },
    ];

    #[test]
    fn each_rule_of_evict_or_delete() {
        let policy = DrainPolicy::default();
        for r in ROWS {
            let leaving = Leaving {
                tried_evict: r.tried_evict,
                tried_delete: false,
            };
            let got = leaving.next(&policy, r.grace, r.until_hard.map(S), S(r.until_end));
            assert_eq!(got, r.want, "{}", r.rule);
        }
    }

    #[test]
    fn budgets_respected_to_the_end_when_deletion_is_off() {
        let keep = DrainPolicy {
            delete_at_deadline: false,
            ..DrainPolicy::default()
        };
        let leaving = Leaving {
            tried_evict: true,
            tried_delete: false,
        };
        assert_eq!(leaving.next(&keep, 30, Some(S(10)), S(10)), evict(10));
        assert!(leaving.out_of_time(&keep, Some(S(10)), S(0)));
    }

    #[test]
    fn the_override_bounds_the_grace_that_must_fit() {
        let capped = DrainPolicy {
            grace_override: Some(10),
            ..DrainPolicy::default()
        };
        let leaving = Leaving {
            tried_evict: true,
            tried_delete: false,
        };
        // 10 s of grace and 5 s of margin: still 5 s of eviction left at 20 s.
        assert_eq!(leaving.next(&capped, 300, Some(S(20)), S(20)), evict(5));
    }

    #[test]
    fn past_the_end_only_a_due_deletion_not_yet_tried_goes_on() {
        let policy = DrainPolicy::default();
        let fresh = Leaving {
            tried_evict: true,
            tried_delete: false,
        };
        let deleted = Leaving {
            tried_delete: true,
            ..fresh
        };
        assert!(
            !fresh.out_of_time(&policy, Some(S(0)), S(0)),
            "its one deletion"
        );
        assert!(deleted.out_of_time(&policy, Some(S(0)), S(0)));
        assert!(fresh.out_of_time(&policy, None, S(0)), "soft: given up");
        assert!(!fresh.out_of_time(&policy, None, S(3)), "time left");
    }
}
