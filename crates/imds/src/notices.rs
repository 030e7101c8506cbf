//! One poll's items as `Notice`s, each with an id that stays the same for the same underlying
//! event (so seeing it on every poll changes nothing). Items that failed to read are not notices;
//! the caller logs and counts their errors.

use jiff::Timestamp;
use sih_core::{Notice, NoticeKind};

use crate::{InterruptionSnapshot, ScheduledEventState, TargetLifecycleState};

/// The notices visible in `snapshot` for `instance_id` on `node`, detected at `now`.
pub fn notices(
    snapshot: &InterruptionSnapshot,
    instance_id: &str,
    node: &str,
    now: Timestamp,
) -> Vec<Notice> {
    let notice = |kind, id: String, deadline| Notice {
        kind,
        id,
        instance_id: Some(instance_id.to_owned()),
        node: node.to_owned(),
        detected: now,
        deadline,
    };
    let mut out = Vec::new();
    // Stop and hibernate take the instance away like terminate does. The legacy item is only
    // a fallback: both appear together on EC2.
    let spot_time = match &snapshot.spot_instance_action {
        Ok(Some(a)) => Some(a.time),
        _ => snapshot
            .spot_termination_time
            .as_ref()
            .ok()
            .copied()
            .flatten(),
    };
    if let Some(time) = spot_time {
        out.push(notice(
            NoticeKind::SpotInterruption,
            format!("{instance_id}-spot-{}", time.as_second()),
            Some(time),
        ));
    }
    if let Ok(Some(r)) = &snapshot.rebalance {
        out.push(notice(
            NoticeKind::RebalanceRecommendation,
            format!("{instance_id}-rebalance-{}", r.notice_time.as_second()),
            None,
        ));
    }
    if let Ok(events) = &snapshot.scheduled_events {
        for e in events
            .iter()
            .filter(|e| e.state == ScheduledEventState::Active)
        {
            out.push(notice(
                NoticeKind::ScheduledMaintenance,
                e.event_id.clone(),
                Some(e.not_before),
            ));
        }
    }
    if let Ok(Some(TargetLifecycleState::Terminated)) = &snapshot.target_lifecycle_state {
        out.push(notice(
            NoticeKind::AsgTermination,
            format!("{instance_id}-asg-terminated"),
            None,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ImdsError, RebalanceRecommendation, ScheduledEvent, ScheduledEventCode, SpotAction,
        SpotInstanceAction,
    };

    fn quiet() -> InterruptionSnapshot {
        InterruptionSnapshot {
            spot_instance_action: Ok(None),
            spot_termination_time: Ok(None),
            rebalance: Ok(None),
            scheduled_events: Ok(vec![]),
            target_lifecycle_state: Ok(None),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn event(id: &str, state: ScheduledEventState) -> ScheduledEvent {
        ScheduledEvent {
            event_id: id.into(),
            code: ScheduledEventCode::SystemReboot,
            state,
            description: String::new(),
            not_before: ts("2026-11-23T10:10:00Z"),
            not_after: None,
        }
    }

    #[test]
    fn a_quiet_poll_has_no_notice() {
        assert!(notices(&quiet(), "i-1", "n1", ts("2026-11-23T10:00:00Z")).is_empty());
    }

    #[test]
    fn every_item_becomes_a_notice_with_a_stable_id_and_its_deadline() {
        let snap = InterruptionSnapshot {
            spot_instance_action: Ok(Some(SpotInstanceAction {
                action: SpotAction::Hibernate,
                time: ts("2026-11-23T10:02:00Z"),
            })),
            spot_termination_time: Ok(Some(ts("2026-11-23T10:02:00Z"))),
            rebalance: Ok(Some(RebalanceRecommendation {
                notice_time: ts("2026-11-23T09:59:00Z"),
            })),
            scheduled_events: Ok(vec![
                event("instance-event-1", ScheduledEventState::Active),
                event("instance-event-2", ScheduledEventState::Canceled),
            ]),
            target_lifecycle_state: Ok(Some(TargetLifecycleState::Terminated)),
        };
        let first = notices(&snap, "i-1", "n1", ts("2026-11-23T10:00:00Z"));
        let kinds: Vec<_> = first
            .iter()
            .map(|n| (n.kind, n.id.as_str(), n.deadline))
            .collect();
        assert_eq!(
            kinds,
            [
                (
                    NoticeKind::SpotInterruption,
                    "i-1-spot-1795428120",
                    Some(ts("2026-11-23T10:02:00Z"))
                ),
                (
                    NoticeKind::RebalanceRecommendation,
                    "i-1-rebalance-1795427940",
                    None
                ),
                (
                    NoticeKind::ScheduledMaintenance,
                    "instance-event-1",
                    Some(ts("2026-11-23T10:10:00Z"))
                ),
                (NoticeKind::AsgTermination, "i-1-asg-terminated", None),
            ]
        );
        let later = notices(&snap, "i-1", "n1", ts("2026-11-23T10:00:30Z"));
        let ids = |v: &[Notice]| v.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(&first),
            ids(&later),
            "the same events keep their ids on later polls"
        );
    }

    #[test]
    fn legacy_termination_time_is_a_fallback_and_errors_are_not_notices() {
        let snap = InterruptionSnapshot {
            spot_instance_action: Err(ImdsError::Status {
                path: "x".into(),
                status: 503,
            }),
            spot_termination_time: Ok(Some(ts("2026-11-23T10:02:00Z"))),
            target_lifecycle_state: Ok(Some(TargetLifecycleState::InService)),
            ..quiet()
        };
        let found = notices(&snap, "i-1", "n1", ts("2026-11-23T10:00:00Z"));
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].id, "i-1-spot-1795428120",
            "the same id as from instance-action"
        );
    }
}
