//! Which notices are new, which are still there and which were withdrawn, from one poll to the
//! next. Pure: the agent feeds it what each poll saw and carries out the steps it returns.
//!
//! Only a kind whose item was read successfully can be withdrawn: a read error says nothing
//! about whether the notice is still there, so it never undoes a fence.

use std::collections::HashSet;
use std::time::Duration;

use jiff::Timestamp;

use crate::{Action, ActionPolicy, Notice, NoticeKind};

/// What the agent should do next about one notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A notice seen for the first time (or resumed after a restart): carry out `action`.
    Act { notice: Notice, action: Action },
    /// A notice we acted on is no longer there (a rebalance recommendation that disappeared, a
    /// scheduled event now canceled or completed): undo what `action` did.
    Withdraw { notice: Notice, action: Action },
}

#[derive(Debug, Clone)]
pub struct Tracker {
    policy: ActionPolicy,
    active: Vec<(Notice, Action)>,
    /// Ids never to act on again in this process (a scheduled reboot that already happened).
    finished: HashSet<String>,
}

/// Kinds whose notice can go away again; a spot interruption or an ASG termination never
/// comes back from the dead.
fn withdrawable(kind: NoticeKind) -> bool {
    matches!(
        kind,
        NoticeKind::RebalanceRecommendation | NoticeKind::ScheduledMaintenance
    )
}

impl Tracker {
    pub fn new(policy: ActionPolicy) -> Self {
        Self {
            policy,
            active: Vec::new(),
            finished: HashSet::new(),
        }
    }

    /// The notices currently acted on, with their actions.
    pub fn active(&self) -> &[(Notice, Action)] {
        &self.active
    }

    /// A notice recorded on the node by an earlier run: act on it again (fence and drain are
    /// idempotent and level-triggered), unless we already track it.
    pub fn resume(&mut self, notice: Notice) -> Option<Step> {
        if self.finished.contains(&notice.id) || self.active.iter().any(|(n, _)| n.id == notice.id)
        {
            return None;
        }
        let action = self.policy.action_for(notice.kind);
        self.active.push((notice.clone(), action));
        Some(Step::Act { notice, action })
    }

    /// Never act on `id` again in this process, and stop tracking it.
    pub fn finish(&mut self, id: &str) {
        self.finished.insert(id.to_owned());
        self.active.retain(|(n, _)| n.id != id);
    }

    /// One poll: `seen` are its notices, `readable` the kinds whose items were read without
    /// error. New notices come back as `Act`, vanished withdrawable ones as `Withdraw`.
    pub fn observe(&mut self, seen: Vec<Notice>, readable: &[NoticeKind]) -> Vec<Step> {
        let mut steps = Vec::new();
        let seen_ids: HashSet<&str> = seen.iter().map(|n| n.id.as_str()).collect();
        let mut kept = Vec::with_capacity(self.active.len());
        for (notice, action) in self.active.drain(..) {
            let gone = withdrawable(notice.kind)
                && readable.contains(&notice.kind)
                && !seen_ids.contains(notice.id.as_str());
            if gone {
                steps.push(Step::Withdraw { notice, action });
            } else {
                kept.push((notice, action));
            }
        }
        self.active = kept;
        for notice in seen {
            let known = self.finished.contains(&notice.id)
                || self.active.iter().any(|(n, _)| n.id == notice.id);
            if known {
                continue;
            }
            let action = self.policy.action_for(notice.kind);
            self.active.push((notice.clone(), action));
            steps.push(Step::Act { notice, action });
        }
        steps
    }
}

/// Whether the instance has booted since `fenced_at`, given its uptime now: after a scheduled
/// reboot the notice that fenced the node is over.
pub fn rebooted_since(fenced_at: Timestamp, uptime: Duration, now: Timestamp) -> bool {
    // An uptime too large to subtract (a garbage file) means no reboot we could know of.
    jiff::SignedDuration::try_from(uptime)
        .ok()
        .and_then(|up| now.checked_sub(up).ok())
        .is_some_and(|booted| booted > fenced_at)
}

/// Parses the first field of `/proc/uptime` (`12345.67 89012.34`).
pub fn parse_uptime(s: &str) -> Option<Duration> {
    let secs: f64 = s.split_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn notice(kind: NoticeKind, id: &str) -> Notice {
        Notice {
            kind,
            id: id.into(),
            instance_id: Some("i-1".into()),
            node: "n1".into(),
            detected: ts("2026-11-23T10:00:00Z"),
            deadline: None,
        }
    }

    const ALL_READ: &[NoticeKind] = &[
        NoticeKind::SpotInterruption,
        NoticeKind::RebalanceRecommendation,
        NoticeKind::ScheduledMaintenance,
        NoticeKind::AsgTermination,
    ];

    fn ids(steps: &[Step]) -> Vec<(&'static str, String)> {
        steps
            .iter()
            .map(|s| match s {
                Step::Act { notice, .. } => ("act", notice.id.clone()),
                Step::Withdraw { notice, .. } => ("withdraw", notice.id.clone()),
            })
            .collect()
    }

    #[test]
    fn a_notice_is_acted_on_once_with_its_kinds_action() {
        let mut t = Tracker::new(ActionPolicy::default());
        let spot = notice(NoticeKind::SpotInterruption, "s1");
        let steps = t.observe(vec![spot.clone()], ALL_READ);
        assert_eq!(
            steps,
            [Step::Act {
                notice: spot.clone(),
                action: Action::Drain
            }]
        );
        assert!(t.observe(vec![spot.clone()], ALL_READ).is_empty());
        // A spot notice that stops being listed is not withdrawn.
        assert!(t.observe(vec![], ALL_READ).is_empty());
        assert_eq!(t.active().len(), 1);
    }

    #[test]
    fn rebalance_and_scheduled_events_are_withdrawn_when_they_disappear() {
        let mut t = Tracker::new(ActionPolicy::default());
        let rebalance = notice(NoticeKind::RebalanceRecommendation, "r1");
        let event = notice(NoticeKind::ScheduledMaintenance, "instance-event-1");
        t.observe(vec![rebalance.clone(), event.clone()], ALL_READ);
        let steps = t.observe(vec![event.clone()], ALL_READ);
        assert_eq!(
            steps,
            [Step::Withdraw {
                notice: rebalance,
                action: Action::Taint
            }]
        );
        assert_eq!(
            ids(&t.observe(vec![], ALL_READ)),
            [("withdraw", "instance-event-1".to_owned())]
        );
        assert!(t.active().is_empty());
    }

    #[test]
    fn a_read_error_never_withdraws_a_notice() {
        let mut t = Tracker::new(ActionPolicy::default());
        let rebalance = notice(NoticeKind::RebalanceRecommendation, "r1");
        t.observe(vec![rebalance.clone()], ALL_READ);
        let only_spot_read = [NoticeKind::SpotInterruption];
        assert!(t.observe(vec![], &only_spot_read).is_empty());
        assert_eq!(t.active().len(), 1);
    }

    #[test]
    fn rebalance_then_spot_acts_on_both() {
        let mut t = Tracker::new(ActionPolicy::default());
        let rebalance = notice(NoticeKind::RebalanceRecommendation, "r1");
        let spot = notice(NoticeKind::SpotInterruption, "s1");
        t.observe(vec![rebalance.clone()], ALL_READ);
        let steps = t.observe(vec![rebalance, spot.clone()], ALL_READ);
        assert_eq!(
            steps,
            [Step::Act {
                notice: spot,
                action: Action::Drain
            }]
        );
    }

    #[test]
    fn resumed_and_finished_notices() {
        let mut t = Tracker::new(ActionPolicy {
            cap: Some(Action::Cordon),
            ..ActionPolicy::default()
        });
        let spot = notice(NoticeKind::SpotInterruption, "s1");
        assert_eq!(
            t.resume(spot.clone()),
            Some(Step::Act {
                notice: spot.clone(),
                action: Action::Cordon
            })
        );
        assert_eq!(t.resume(spot.clone()), None);
        assert!(t.observe(vec![spot.clone()], ALL_READ).is_empty());
        let event = notice(NoticeKind::ScheduledMaintenance, "e1");
        t.finish("e1");
        assert!(
            t.observe(vec![event.clone()], ALL_READ).is_empty(),
            "a finished event is not acted on again"
        );
        assert_eq!(t.resume(event), None);
    }

    #[test]
    fn reboots_are_told_by_uptime() {
        let fenced = ts("2026-11-23T10:00:00Z");
        let now = ts("2026-11-23T10:30:00Z");
        assert!(rebooted_since(fenced, Duration::from_secs(60), now));
        assert!(!rebooted_since(fenced, Duration::from_secs(3600), now));
        assert!(!rebooted_since(fenced, Duration::MAX, now));
        assert_eq!(
            parse_uptime("350735.47 234388.90\n"),
            Some(Duration::from_secs_f64(350_735.47))
        );
        assert_eq!(parse_uptime("garbage"), None);
        assert_eq!(parse_uptime(""), None);
        assert_eq!(parse_uptime("-5 1"), None);
    }
}
