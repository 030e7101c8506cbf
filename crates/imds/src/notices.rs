//! One poll's items as an `Observation`: the notices (made by `sih_core`'s constructors, so
//! their ids are the ones the queue controller gives the same events), the kinds read without
//! error (only those can be withdrawn), and the scheduled events that were listed but could
//! not be read (never withdrawn on this poll). Items that failed to read are not notices; the
//! caller logs and counts their errors.

use jiff::Timestamp;
use sih_core::{Notice, NoticeKind, Observation, Source};

use crate::{InterruptionSnapshot, ScheduledEventState, TargetLifecycleState};

/// What `snapshot` shows for `instance_id` on `node`, detected at `now`.
pub fn observation(
    snapshot: &InterruptionSnapshot,
    instance_id: &str,
    node: &str,
    now: Timestamp,
) -> Observation {
    let mut notices = Vec::new();
    let mut unreadable_ids = Vec::new();
    let source = Source::Agent;
    // Stop and hibernate take the instance away like terminate does. The legacy item is only
    // a fallback: both appear together on EC2.
    let spot_time = match &snapshot.spot_instance_action {
        // An interruption whose time cannot be read is acted on at once, with the shortest
        // notice EC2 gives, from detection (the tracker keeps the first detection's deadline).
        Ok(Some(a)) => Some(
            a.time
                .unwrap_or_else(|| now.checked_add(crate::items::SPOT_NOTICE).unwrap_or(now)),
        ),
        _ => snapshot
            .spot_termination_time
            .as_ref()
            .ok()
            .copied()
            .flatten(),
    };
    if let Some(time) = spot_time {
        notices.push(Notice::spot_interruption(
            instance_id,
            node,
            now,
            time,
            source,
        ));
    }
    if let Ok(Some(_)) = &snapshot.rebalance {
        notices.push(Notice::rebalance(instance_id, node, now, source));
    }
    if let Ok(events) = &snapshot.scheduled_events {
        for e in events
            .events
            .iter()
            .filter(|e| e.state == ScheduledEventState::Active)
        {
            notices.push(Notice::scheduled_maintenance(
                &e.event_id,
                instance_id,
                node,
                now,
                Some(e.not_before),
                source,
            ));
        }
        unreadable_ids.extend(events.malformed.iter().filter_map(|(id, _)| id.clone()));
    }
    if let Ok(Some(TargetLifecycleState::Terminated)) = &snapshot.target_lifecycle_state {
        notices.push(Notice::asg_termination(instance_id, node, now, source));
    }
    let mut readable = snapshot.readable();
    // A malformed entry without a readable id could be any active event: none is withdrawn.
    if let Ok(events) = &snapshot.scheduled_events
        && events.malformed.iter().any(|(id, _)| id.is_none())
    {
        readable.retain(|k| *k != NoticeKind::ScheduledMaintenance);
    }
    Observation {
        notices,
        readable,
        unreadable_ids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::MalformedItem;
    use crate::{
        ImdsError, RebalanceRecommendation, ScheduledEvent, ScheduledEventCode, ScheduledEvents,
        SpotAction, SpotInstanceAction,
    };

    fn quiet() -> InterruptionSnapshot {
        InterruptionSnapshot {
            spot_instance_action: Ok(None),
            spot_termination_time: Ok(None),
            rebalance: Ok(None),
            scheduled_events: Ok(ScheduledEvents::default()),
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

    fn spot_at(time: &str) -> SpotInstanceAction {
        SpotInstanceAction {
            action: SpotAction::Hibernate,
            time: Some(ts(time)),
            unreadable_time: None,
            unknown_action: None,
        }
    }

    #[test]
    fn an_interruption_whose_time_is_unreadable_gets_two_minutes_from_detection() {
        let mut s = quiet();
        s.spot_instance_action = Ok(Some(SpotInstanceAction {
            action: SpotAction::Terminate,
            time: None,
            unreadable_time: Some("2026-12-06 03:20:00".into()),
            unknown_action: None,
        }));
        let now = ts("2026-11-23T10:00:00Z");
        let o = observation(&s, "i-1", "n1", now);
        assert_eq!(o.notices.len(), 1);
        assert_eq!(o.notices[0].kind, NoticeKind::SpotInterruption);
        assert_eq!(o.notices[0].deadline, Some(ts("2026-11-23T10:02:00Z")));
    }

    #[test]
    fn a_quiet_poll_has_no_notice() {
        let o = observation(&quiet(), "i-1", "n1", ts("2026-11-23T10:00:00Z"));
        assert!(o.notices.is_empty());
        assert_eq!(o.readable.len(), 4);
    }

    #[test]
    fn every_item_becomes_a_notice_whose_id_survives_restated_times() {
        let snap = |spot: &str, rebalance: &str| InterruptionSnapshot {
            spot_instance_action: Ok(Some(spot_at(spot))),
            spot_termination_time: Ok(Some(ts(spot))),
            rebalance: Ok(Some(RebalanceRecommendation {
                notice_time: ts(rebalance),
            })),
            scheduled_events: Ok(ScheduledEvents {
                events: vec![
                    event("instance-event-1", ScheduledEventState::Active),
                    event("instance-event-2", ScheduledEventState::Canceled),
                ],
                malformed: Vec::new(),
            }),
            target_lifecycle_state: Ok(Some(TargetLifecycleState::Terminated)),
        };
        let first = observation(
            &snap("2026-11-23T10:02:00Z", "2026-11-23T09:59:00Z"),
            "i-1",
            "n1",
            ts("2026-11-23T10:00:00Z"),
        );
        let kinds: Vec<_> = first
            .notices
            .iter()
            .map(|n| (n.kind, n.id.as_str(), n.deadline))
            .collect();
        assert_eq!(
            kinds,
            [
                (
                    NoticeKind::SpotInterruption,
                    "i-1-spot-interruption",
                    Some(ts("2026-11-23T10:02:00Z"))
                ),
                (NoticeKind::RebalanceRecommendation, "i-1-rebalance", None),
                (
                    NoticeKind::ScheduledMaintenance,
                    "instance-event-1",
                    Some(ts("2026-11-23T10:10:00Z"))
                ),
                (NoticeKind::AsgTermination, "i-1-asg-termination", None),
            ]
        );
        // amazon-ec2-metadata-mock restates both times on every read: same ids.
        let later = observation(
            &snap("2026-11-23T10:02:07Z", "2026-11-23T10:00:07Z"),
            "i-1",
            "n1",
            ts("2026-11-23T10:00:07Z"),
        );
        let ids = |o: &Observation| o.notices.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&first), ids(&later));
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
        let o = observation(&snap, "i-1", "n1", ts("2026-11-23T10:00:00Z"));
        assert_eq!(o.notices.len(), 1);
        assert_eq!(o.notices[0].id, "i-1-spot-interruption");
        assert!(!o.readable.contains(&NoticeKind::SpotInterruption));
    }

    #[test]
    fn a_malformed_event_is_never_withdrawn_and_never_hides_a_valid_one() {
        let bad = || MalformedItem {
            what: "scheduled event",
            reason: "bad".into(),
        };
        let snap = InterruptionSnapshot {
            scheduled_events: Ok(ScheduledEvents {
                events: vec![event("good", ScheduledEventState::Active)],
                malformed: vec![(Some("broken".into()), bad())],
            }),
            ..quiet()
        };
        let o = observation(&snap, "i-1", "n1", ts("2026-11-23T10:00:00Z"));
        assert_eq!(o.notices[0].id, "good");
        assert_eq!(o.unreadable_ids, ["broken"]);
        assert!(o.readable.contains(&NoticeKind::ScheduledMaintenance));
        // Without even an id, no scheduled event can be said to be gone this poll.
        let anonymous = InterruptionSnapshot {
            scheduled_events: Ok(ScheduledEvents {
                events: vec![],
                malformed: vec![(None, bad())],
            }),
            ..quiet()
        };
        let o = observation(&anonymous, "i-1", "n1", ts("2026-11-23T10:00:00Z"));
        assert!(!o.readable.contains(&NoticeKind::ScheduledMaintenance));
    }
}
