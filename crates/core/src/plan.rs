//! The evacuation plan of one node, derived from the set of notices it carries: a pure
//! function, so two notices at once, a withdrawal, or a restart are each just another set.
//!
//! - the action is the strongest any notice asks for;
//! - the taints are the union of the notices' kinds' taints (one per kind);
//! - the node is cordoned (and out of load balancers) while any notice asks for a cordon;
//! - the drain plans against the earliest deadline among the notices that ask to drain, and
//!   budget-protected pods are deleted against the earliest *hard* deadline among them: a spot
//!   notice keeps its hard deadline whatever else is going on;
//! - a deadline that had already passed when a soft notice was seen (a scheduled event whose
//!   window has started) is no deadline at all: that notice drains within the drain budget and
//!   never stops another drain. A hard deadline stands even when past: the instance is going.
//!
//! Withdrawing a notice is removing it from the set: only what no remaining notice needs is
//! undone.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{Action, ActionPolicy, Notice, NoticeKind};

/// A notice as the node carries it (and records it, so a restart resumes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    #[serde(flatten)]
    pub notice: Notice,
    /// A drain covering it finished: it needs no other.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drained: bool,
}

impl Carried {
    pub fn new(notice: Notice) -> Self {
        Self {
            notice,
            drained: false,
        }
    }
}

/// The settings a plan follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRules {
    pub policy: ActionPolicy,
    /// Time given to a drain whose notice has no deadline (or whose window already started).
    pub drain_budget: Duration,
    /// `--taint-effect`; else each kind's own.
    pub taint_effect: Option<String>,
}

impl Default for PlanRules {
    fn default() -> Self {
        Self {
            policy: ActionPolicy::default(),
            drain_budget: Duration::from_secs(120),
            taint_effect: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTaint {
    pub kind: NoticeKind,
    pub key: String,
    /// The notice's id.
    pub value: String,
    pub effect: String,
}

/// What a drain plans against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainTarget {
    /// Grace periods fit before this: the earliest deadline of the notices that drain.
    pub deadline: Timestamp,
    /// The earliest hard deadline among them: a pod its budget still protects is deleted in
    /// time to finish before it. `None`: budgets are respected to the end.
    pub hard: Option<Timestamp>,
}

impl DrainTarget {
    /// When the drain gives up: the hard deadline if later than the soft one, else the soft.
    pub fn ends(&self) -> Timestamp {
        self.hard.map_or(self.deadline, |h| h.max(self.deadline))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub action: Action,
    /// One per kind, sorted by key.
    pub taints: Vec<PlannedTaint>,
    pub cordon: bool,
    /// Present while any carried notice asks to drain.
    pub drain: Option<DrainTarget>,
    /// The notice whose deadline the drain plans against.
    pub drain_lead: Option<String>,
    /// Some notice that asks to drain has not been drained yet.
    pub drain_needed: bool,
}

impl Plan {
    /// Nothing on the node: no taint, no cordon, no drain.
    pub fn is_empty(&self) -> bool {
        self.taints.is_empty() && !self.cordon && self.drain.is_none()
    }
}

/// The deadline a notice's drain plans against (see the module's rules).
pub fn effective_deadline(n: &Notice, budget: Duration) -> Timestamp {
    let by_budget = n
        .detected
        .checked_add(jiff::SignedDuration::try_from(budget).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX);
    match n.deadline {
        Some(d) if n.kind.deadline_is_hard() => d,
        Some(d) if d > n.detected => d,
        _ => by_budget,
    }
}

pub fn evacuation_plan(carried: &[Carried], rules: &PlanRules) -> Plan {
    let action_of = |c: &Carried| rules.policy.action_for(c.notice.kind);
    let deadline_of = |c: &Carried| effective_deadline(&c.notice, rules.drain_budget);
    let action = carried.iter().map(action_of).max().unwrap_or(Action::None);

    let mut taints: Vec<PlannedTaint> = Vec::new();
    // The notice a kind's taint names: the one with the earliest deadline (then the id), so
    // the value does not flip between two notices of one kind.
    let mut tainting: Vec<&Carried> = carried
        .iter()
        .filter(|c| action_of(c) >= Action::Taint)
        .collect();
    tainting.sort_by(|a, b| (deadline_of(a), &a.notice.id).cmp(&(deadline_of(b), &b.notice.id)));
    for c in tainting {
        let kind = c.notice.kind;
        if taints.iter().any(|t| t.kind == kind) {
            continue;
        }
        taints.push(PlannedTaint {
            kind,
            key: kind.taint_key(),
            // The id is the outside world's; the API server takes only a label value.
            value: crate::label_value::label_value(&c.notice.id),
            effect: rules
                .taint_effect
                .clone()
                .unwrap_or_else(|| kind.default_taint_effect().to_owned()),
        });
    }
    taints.sort_by(|a, b| a.key.cmp(&b.key));

    let draining: Vec<&Carried> = carried
        .iter()
        .filter(|c| action_of(c) == Action::Drain)
        .collect();
    let lead = draining
        .iter()
        .min_by(|a, b| (deadline_of(a), &a.notice.id).cmp(&(deadline_of(b), &b.notice.id)));
    let drain = lead.map(|lead| DrainTarget {
        deadline: deadline_of(lead),
        hard: draining
            .iter()
            .filter(|c| c.notice.kind.deadline_is_hard())
            .map(|c| deadline_of(c))
            .min(),
    });
    Plan {
        action,
        taints,
        cordon: action >= Action::Cordon,
        drain,
        drain_lead: lead.map(|c| c.notice.id.clone()),
        drain_needed: draining.iter().any(|c| !c.drained),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Source;

    fn at(secs: i64) -> Timestamp {
        "2026-11-23T10:00:00Z".parse::<Timestamp>().unwrap() + jiff::SignedDuration::from_secs(secs)
    }

    /// A notice of `kind` seen at `seen`, deadline `deadline` (seconds from the epoch above).
    fn notice(kind: NoticeKind, seen: i64, deadline: Option<i64>) -> Carried {
        let (d, t) = (at(seen), deadline.map(at));
        Carried::new(match kind {
            NoticeKind::SpotInterruption => {
                Notice::spot_interruption("i-1", "n1", d, t.unwrap(), Source::Agent)
            }
            NoticeKind::RebalanceRecommendation => Notice::rebalance("i-1", "n1", d, Source::Agent),
            NoticeKind::ScheduledMaintenance => {
                Notice::scheduled_maintenance("instance-event-1", "i-1", "n1", d, t, Source::Agent)
            }
            NoticeKind::AsgTermination => Notice::asg_termination("i-1", "n1", d, Source::Agent),
            NoticeKind::AsgLaunch => Notice::asg_launch("i-1", "n1", d, Source::Queue),
            NoticeKind::LiveMigration => {
                Notice::cloud_event(NoticeKind::LiveMigration, "freeze-1", "i-1", "n1", d, t)
            }
            NoticeKind::InstanceStateChange => {
                Notice::instance_state_change("i-1", "n1", d, t.unwrap(), Source::Queue)
            }
        })
    }

    fn rules() -> PlanRules {
        PlanRules {
            drain_budget: Duration::from_secs(300),
            ..PlanRules::default()
        }
    }

    /// Each kind with a typical deadline, seen at 0.
    fn typical(kind: NoticeKind) -> Carried {
        let deadline = match kind {
            NoticeKind::SpotInterruption => Some(120),
            NoticeKind::ScheduledMaintenance => Some(60),
            NoticeKind::InstanceStateChange => Some(0),
            _ => None,
        };
        notice(kind, 0, deadline)
    }

    #[test]
    fn a_spot_notice_keeps_its_hard_deadline_under_an_earlier_maintenance_drain() {
        let spot = notice(NoticeKind::SpotInterruption, 0, Some(120));
        let maintenance = notice(NoticeKind::ScheduledMaintenance, 10, Some(60));
        let p = evacuation_plan(&[spot.clone(), maintenance.clone()], &rules());
        assert_eq!(
            p.drain,
            Some(DrainTarget {
                deadline: at(60),
                hard: Some(at(120))
            }),
            "graces fit the maintenance window; budgets are overridden only for the spot deadline"
        );
        assert_eq!(
            p.drain.unwrap().ends(),
            at(120),
            "the drain goes on to the spot deadline"
        );
        assert_eq!(
            p.drain_lead.as_deref(),
            Some(maintenance.notice.id.as_str())
        );
        // The maintenance event is cancelled: the spot notice's plan alone, unchanged for it.
        assert_eq!(
            evacuation_plan(std::slice::from_ref(&spot), &rules()).drain,
            Some(DrainTarget {
                deadline: at(120),
                hard: Some(at(120))
            })
        );
    }

    #[test]
    fn an_event_whose_window_already_started_is_no_deadline_and_stops_nothing() {
        // amazon-ec2-metadata-mock's default: a reboot whose window opened before it was seen.
        let started = notice(NoticeKind::ScheduledMaintenance, 30, Some(0));
        let alone = evacuation_plan(std::slice::from_ref(&started), &rules());
        assert_eq!(
            alone.drain,
            Some(DrainTarget {
                deadline: at(330),
                hard: None
            }),
            "the drain budget from when it was seen, not 'deadline now'"
        );
        let spot = notice(NoticeKind::SpotInterruption, 40, Some(160));
        let both = evacuation_plan(&[started, spot], &rules());
        assert_eq!(
            both.drain,
            Some(DrainTarget {
                deadline: at(160),
                hard: Some(at(160))
            }),
            "the spot notice drives the drain"
        );
        // A hard deadline stands even when already past: the instance is going now.
        let late = notice(NoticeKind::SpotInterruption, 200, Some(160));
        assert_eq!(
            evacuation_plan(&[late], &rules()).drain.unwrap().deadline,
            at(160)
        );
    }

    #[test]
    fn two_events_of_one_kind_share_one_taint_and_the_fence_stays_while_either_is_carried() {
        let a = notice(NoticeKind::ScheduledMaintenance, 0, Some(600));
        let mut b = notice(NoticeKind::ScheduledMaintenance, 5, Some(300));
        b.notice.id = "instance-event-2".into();
        let p = evacuation_plan(&[a.clone(), b.clone()], &rules());
        assert_eq!(p.taints.len(), 1);
        assert_eq!(
            p.taints[0].value, "instance-event-2",
            "the nearer event names the taint"
        );
        for left in [a, b] {
            let p = evacuation_plan(std::slice::from_ref(&left), &rules());
            assert!(p.cordon && p.taints.len() == 1 && p.drain.is_some());
        }
    }

    #[test]
    fn every_pair_of_kinds_overlaps_withdraws_and_restarts_as_the_rules_say() {
        let r = rules();
        for a in NoticeKind::ALL {
            for b in NoticeKind::ALL {
                if a == b {
                    continue;
                }
                let (na, nb) = (typical(a), typical(b));
                let both = evacuation_plan(&[na.clone(), nb.clone()], &r);
                let only_a = evacuation_plan(std::slice::from_ref(&na), &r);
                let only_b = evacuation_plan(std::slice::from_ref(&nb), &r);
                let what = format!("{a} + {b}");
                // Overlap: the strongest action, the union of taints and cordons.
                assert_eq!(both.action, only_a.action.max(only_b.action), "{what}");
                assert_eq!(both.cordon, only_a.cordon || only_b.cordon, "{what}");
                let mut union: Vec<_> = only_a
                    .taints
                    .iter()
                    .chain(&only_b.taints)
                    .cloned()
                    .collect();
                union.sort_by(|x, y| x.key.cmp(&y.key));
                assert_eq!(both.taints, union, "{what}");
                // The drain: the earliest deadline, hard if either is hard.
                let targets: Vec<DrainTarget> =
                    [only_a.drain, only_b.drain].into_iter().flatten().collect();
                match both.drain {
                    None => assert!(targets.is_empty(), "{what}"),
                    Some(t) => {
                        assert_eq!(
                            Some(t.deadline),
                            targets.iter().map(|x| x.deadline).min(),
                            "{what}"
                        );
                        assert_eq!(
                            t.hard,
                            targets.iter().filter_map(|x| x.hard).min(),
                            "{what}"
                        );
                        assert!(t.ends() >= t.deadline);
                    }
                }
                // Withdrawal of either leaves exactly the other's plan: nothing it needs is undone.
                let after = evacuation_plan(std::slice::from_ref(&nb), &r);
                assert_eq!(after, only_b, "{what}: {a} withdrawn");
                assert!(
                    after.taints.iter().all(|t| both.taints.contains(t)),
                    "{what}"
                );
                // Restart: the record round-trips to the same plan.
                let json = serde_json::to_string(&[na.clone(), nb.clone()]).unwrap();
                let resumed: Vec<Carried> = serde_json::from_str(&json).unwrap();
                assert_eq!(
                    evacuation_plan(&resumed, &r),
                    both,
                    "{what}: after a restart"
                );
            }
        }
    }

    #[test]
    fn a_drained_notice_needs_no_second_drain_but_still_shapes_the_next_one() {
        let mut spot = notice(NoticeKind::SpotInterruption, 0, Some(120));
        spot.drained = true;
        let p = evacuation_plan(std::slice::from_ref(&spot), &rules());
        assert!(!p.drain_needed && p.drain.is_some() && p.cordon);
        let asg = notice(NoticeKind::AsgTermination, 10, None);
        let p = evacuation_plan(&[spot, asg], &rules());
        assert!(p.drain_needed);
        assert_eq!(
            p.drain.unwrap().hard,
            Some(at(120)),
            "the spot deadline still rules budgets"
        );
    }

    #[test]
    fn policy_taint_effect_and_the_empty_plan() {
        let cordon_only = PlanRules {
            policy: ActionPolicy {
                cap: Some(Action::Cordon),
                ..ActionPolicy::default()
            },
            taint_effect: Some("NoExecute".into()),
            ..rules()
        };
        let p = evacuation_plan(&[typical(NoticeKind::SpotInterruption)], &cordon_only);
        assert_eq!((p.action, p.cordon, p.drain), (Action::Cordon, true, None));
        assert_eq!(p.taints[0].effect, "NoExecute");
        let rebalance = evacuation_plan(&[typical(NoticeKind::RebalanceRecommendation)], &rules());
        assert_eq!(rebalance.taints[0].effect, "PreferNoSchedule");
        assert!(!rebalance.cordon && rebalance.drain.is_none());
        let launch = evacuation_plan(&[typical(NoticeKind::AsgLaunch)], &rules());
        assert!(launch.is_empty());
        assert!(evacuation_plan(&[], &rules()).is_empty());
    }
}
