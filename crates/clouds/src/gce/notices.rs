//! What the watched values mean as notices. Pure: the caller keeps the values and when each
//! was first seen, so a notice's deadline does not move from one look to the next.

use std::time::Duration;

use jiff::Timestamp;
use sih_core::{Notice, NoticeKind, Observation, Source};

use super::items::Maintenance;

/// How long GCE gives (both configurable: GCE documents them, it does not serve them).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// From `preempted` turning `TRUE` to the instance's stop: 30 s for Spot and preemptible
    /// VMs, a hard limit.
    pub preemption_notice: Duration,
    /// From `maintenance-event` turning to a termination to the maintenance: 60 s.
    pub maintenance_notice: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            preemption_notice: Duration::from_secs(30),
            maintenance_notice: Duration::from_secs(60),
        }
    }
}

/// The last value of each watched item and since when it holds (`None`: it could not be read
/// on the last try, so nothing about it is withdrawn).
#[derive(Debug, Clone, Default)]
pub struct Watched {
    pub preempted: Option<(bool, Timestamp)>,
    pub maintenance: Option<(Maintenance, Timestamp)>,
}

impl Watched {
    /// Records a read of `preempted`; the time is kept while the value stays.
    pub fn saw_preempted(&mut self, value: bool, now: Timestamp) {
        if self.preempted.as_ref().is_none_or(|(v, _)| *v != value) {
            self.preempted = Some((value, now));
        }
    }

    pub fn saw_maintenance(&mut self, value: Maintenance, now: Timestamp) {
        if self.maintenance.as_ref().is_none_or(|(v, _)| *v != value) {
            self.maintenance = Some((value, now));
        }
    }
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(t)
}

/// What the values show for `instance` on `node`.
pub fn observation(w: &Watched, instance: &str, node: &str, timing: &Timing) -> Observation {
    let mut notices = Vec::new();
    let mut readable = Vec::new();
    if let Some((preempted, since)) = &w.preempted {
        readable.push(NoticeKind::SpotInterruption);
        if *preempted {
            notices.push(Notice::spot_interruption(
                instance,
                node,
                *since,
                after(*since, timing.preemption_notice),
                Source::Agent,
            ));
        }
    }
    if let Some((maintenance, since)) = &w.maintenance {
        readable.extend([NoticeKind::ScheduledMaintenance, NoticeKind::LiveMigration]);
        let kind = match maintenance {
            Maintenance::None => None,
            Maintenance::Migrate => Some(NoticeKind::LiveMigration),
            Maintenance::Terminate | Maintenance::Unknown(_) => {
                Some(NoticeKind::ScheduledMaintenance)
            }
        };
        if let Some(kind) = kind {
            // One notice per maintenance: the id carries the value and when it appeared.
            let id = format!(
                "{instance}-{}-{}",
                maintenance.as_str().to_ascii_lowercase().replace('_', "-"),
                since.as_second()
            );
            notices.push(Notice::cloud_event(
                kind,
                &id,
                instance,
                node,
                *since,
                Some(after(*since, timing.maintenance_notice)),
            ));
        }
    }
    Observation {
        notices,
        readable,
        unreadable_ids: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn preemption_is_a_spot_interruption_thirty_seconds_after_it_was_first_seen() {
        let mut w = Watched::default();
        let t0 = ts("2026-12-04T10:00:00Z");
        w.saw_preempted(false, t0);
        w.saw_maintenance(Maintenance::None, t0);
        let quiet = observation(&w, "123", "n1", &Timing::default());
        assert!(quiet.notices.is_empty());
        assert_eq!(quiet.readable.len(), 3);
        w.saw_preempted(true, ts("2026-12-04T10:00:05Z"));
        // Seen again later: the deadline does not move.
        w.saw_preempted(true, ts("2026-12-04T10:00:09Z"));
        let o = observation(&w, "123", "n1", &Timing::default());
        assert_eq!(o.notices.len(), 1);
        let n = &o.notices[0];
        assert_eq!(n.kind, NoticeKind::SpotInterruption);
        assert_eq!(n.id, "123-spot-interruption");
        assert_eq!(n.detected, ts("2026-12-04T10:00:05Z"));
        assert_eq!(n.deadline, Some(ts("2026-12-04T10:00:35Z")));
        assert!(n.kind.deadline_is_hard());
    }

    #[test]
    fn maintenance_values_map_to_kinds_and_an_unread_item_withdraws_nothing() {
        let mut w = Watched::default();
        let t0 = ts("2026-12-04T10:00:00Z");
        w.saw_maintenance(Maintenance::Migrate, t0);
        let o = observation(&w, "123", "n1", &Timing::default());
        assert_eq!(o.notices[0].kind, NoticeKind::LiveMigration);
        assert!(
            !o.readable.contains(&NoticeKind::SpotInterruption),
            "preempted was never read: a spot notice is never withdrawn by this look"
        );
        w.saw_maintenance(Maintenance::Terminate, ts("2026-12-04T10:01:00Z"));
        let o = observation(&w, "123", "n1", &Timing::default());
        assert_eq!(o.notices.len(), 1);
        let n = &o.notices[0];
        assert_eq!(n.kind, NoticeKind::ScheduledMaintenance);
        assert_eq!(n.deadline, Some(ts("2026-12-04T10:02:00Z")));
        assert!(n.id.starts_with("123-terminate-on-host-maintenance-"));
        // Over: NONE again, the notice is gone and may be withdrawn.
        w.saw_maintenance(Maintenance::None, ts("2026-12-04T10:03:00Z"));
        let o = observation(&w, "123", "n1", &Timing::default());
        assert!(o.notices.is_empty());
        assert!(o.readable.contains(&NoticeKind::ScheduledMaintenance));
        w.saw_maintenance(Maintenance::Unknown("NEW".into()), t0);
        let o = observation(&w, "123", "n1", &Timing::default());
        assert_eq!(o.notices[0].kind, NoticeKind::ScheduledMaintenance);
    }
}
