//! Which notices a node carries, from one observation to the next: new ones, withdrawn ones,
//! and restated deadlines. Pure: the responder feeds it what each poll (or message) saw and
//! acts on the changes it returns.
//!
//! Only a kind whose item was read successfully can be withdrawn: a read error says nothing
//! about whether the notice is still there, so it never undoes a fence. A notice whose item
//! was listed but could not be read (a malformed scheduled event with a readable `EventId`)
//! is not withdrawn either.

use std::collections::HashSet;
use std::time::Duration;

use jiff::Timestamp;

use crate::{Notice, NoticeKind};

/// What changed about the notices a node carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Seen for the first time.
    Added(Notice),
    /// No longer there (a rebalance recommendation that disappeared, a scheduled event now
    /// canceled or completed).
    Withdrawn(Notice),
    /// A rebalance recommendation no interruption followed within its time to live: undone,
    /// and not taken up again while it stays visible.
    Expired(Notice),
    /// Seen again with an earlier deadline than any seen before: the earliest stands.
    DeadlineMoved {
        id: String,
        from: Option<Timestamp>,
        to: Timestamp,
    },
}

/// What one look at a source saw about one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub notices: Vec<Notice>,
    /// Kinds read without error: only these can be withdrawn.
    pub readable: Vec<NoticeKind>,
    /// Ids listed but unreadable (never withdrawn on this look).
    pub unreadable_ids: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Tracker {
    active: Vec<Notice>,
    /// Ids never to act on again in this process (ended by a reboot).
    finished: HashSet<String>,
}

/// Kinds whose notice can go away again; a spot interruption or an ASG termination never
/// comes back from the dead.
pub fn withdrawable(kind: NoticeKind) -> bool {
    matches!(
        kind,
        NoticeKind::RebalanceRecommendation
            | NoticeKind::ScheduledMaintenance
            | NoticeKind::LiveMigration
    )
}

/// Whether a complete look says `notice` is gone: its kind could go away again, was read
/// without error, and the look lists no such id (not even unreadably).
pub fn gone_from(seen: &Observation, notice: &Notice) -> bool {
    let ids: HashSet<&str> = seen.notices.iter().map(|n| n.id.as_str()).collect();
    withdrawable(notice.kind) && unlisted_in(seen, &ids, notice)
}

fn unlisted_in(seen: &Observation, ids: &HashSet<&str>, notice: &Notice) -> bool {
    seen.readable.contains(&notice.kind)
        && !ids.contains(notice.id.as_str())
        && !seen.unreadable_ids.contains(&notice.id)
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The notices carried now, in the order they came.
    pub fn active(&self) -> &[Notice] {
        &self.active
    }

    pub fn get(&self, id: &str) -> Option<&Notice> {
        self.active.iter().find(|n| n.id == id)
    }

    /// A notice recorded on the node by an earlier run: carried again, not new. False when
    /// it is already carried or ended.
    pub fn resume(&mut self, notice: Notice) -> bool {
        if self.finished.contains(&notice.id) || self.get(&notice.id).is_some() {
            return false;
        }
        self.active.push(notice);
        true
    }

    /// Never carry `id` again in this process.
    pub fn finish(&mut self, id: &str) -> Option<Notice> {
        self.finished.insert(id.to_owned());
        self.remove(id)
    }

    pub fn remove(&mut self, id: &str) -> Option<Notice> {
        let i = self.active.iter().position(|n| n.id == id)?;
        Some(self.active.remove(i))
    }

    /// One notice (a queue message): new, known (nothing), or known with an earlier deadline.
    pub fn add(&mut self, notice: Notice) -> Option<Change> {
        if self.finished.contains(&notice.id) {
            return None;
        }
        match self.active.iter_mut().find(|n| n.id == notice.id) {
            None => {
                self.active.push(notice.clone());
                Some(Change::Added(notice))
            }
            Some(known) => match notice.deadline {
                Some(to) if known.deadline.is_none_or(|d| to < d) => {
                    let from = known.deadline.replace(to);
                    Some(Change::DeadlineMoved {
                        id: notice.id,
                        from,
                        to,
                    })
                }
                _ => None,
            },
        }
    }

    /// One complete look at a source: new notices come back as `Added`, vanished withdrawable
    /// ones as `Withdrawn`, earlier deadlines as `DeadlineMoved`.
    pub fn observe(&mut self, seen: Observation) -> Vec<Change> {
        let mut changes = Vec::new();
        let seen_ids: HashSet<&str> = seen.notices.iter().map(|n| n.id.as_str()).collect();
        let mut kept = Vec::with_capacity(self.active.len());
        for notice in self.active.drain(..) {
            let gone = withdrawable(notice.kind) && unlisted_in(&seen, &seen_ids, &notice);
            if gone {
                changes.push(Change::Withdrawn(notice));
            } else {
                kept.push(notice);
            }
        }
        self.active = kept;
        for notice in seen.notices {
            changes.extend(self.add(notice));
        }
        changes
    }
}

impl Tracker {
    /// The rebalance recommendations carried for `ttl` since they were seen with no
    /// interruption (or any other notice) following on this node: ended for this process, so
    /// a recommendation that stays visible for hours (as IMDS keeps it) is not taken up again.
    pub fn expire_rebalances(&mut self, ttl: Duration, now: Timestamp) -> Vec<Change> {
        if self
            .active
            .iter()
            .any(|n| n.kind != NoticeKind::RebalanceRecommendation)
        {
            return Vec::new();
        }
        let expired: Vec<String> = self
            .active
            .iter()
            .filter(|n| {
                jiff::SignedDuration::try_from(ttl)
                    .ok()
                    .and_then(|ttl| n.detected.checked_add(ttl).ok())
                    .is_some_and(|end| end <= now)
            })
            .map(|n| n.id.clone())
            .collect();
        expired
            .iter()
            .filter_map(|id| self.finish(id))
            .map(Change::Expired)
            .collect()
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
    // `try_`: a value past what a Duration holds (`1e300`) is unreadable, not a panic.
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uptime_file_of_any_content_reads_or_is_refused_without_a_panic() {
        assert_eq!(
            parse_uptime("86400.00 1000.00\n"),
            Some(Duration::from_secs(86400))
        );
        for bad in ["1e300 0", "-1 0", "NaN", "inf 0", "", "x"] {
            assert_eq!(parse_uptime(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_rebalance_expires_after_its_time_to_live_unless_an_interruption_followed() {
        let t0: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        let ttl = Duration::from_secs(600);
        let mut t = Tracker::new();
        let rebalance = Notice::rebalance("i-1", "n1", t0, crate::Source::Agent);
        assert_eq!(
            t.add(rebalance.clone()),
            Some(Change::Added(rebalance.clone()))
        );
        assert!(t.expire_rebalances(ttl, at(599)).is_empty());
        assert_eq!(
            t.expire_rebalances(ttl, at(600)),
            vec![Change::Expired(rebalance.clone())]
        );
        assert!(t.active().is_empty());
        // Still visible in IMDS: not taken up again.
        let seen = Observation {
            notices: vec![Notice::rebalance(
                "i-1",
                "n1",
                at(601),
                crate::Source::Agent,
            )],
            readable: vec![NoticeKind::RebalanceRecommendation],
            unreadable_ids: vec![],
        };
        assert!(t.observe(seen).is_empty());
        // An interruption followed: the rebalance stays with it.
        let mut t = Tracker::new();
        t.add(rebalance.clone());
        t.add(Notice::spot_interruption(
            "i-1",
            "n1",
            at(300),
            at(420),
            crate::Source::Agent,
        ));
        assert!(t.expire_rebalances(ttl, at(3600)).is_empty());
        assert_eq!(t.active().len(), 2);
    }
    use crate::Source;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn at(secs: i64) -> Timestamp {
        ts("2026-11-23T10:00:00Z") + jiff::SignedDuration::from_secs(secs)
    }

    fn spot(time: i64) -> Notice {
        Notice::spot_interruption("i-1", "n1", at(0), at(time), Source::Agent)
    }

    fn rebalance() -> Notice {
        Notice::rebalance("i-1", "n1", at(0), Source::Agent)
    }

    fn event(id: &str) -> Notice {
        Notice::scheduled_maintenance(id, "i-1", "n1", at(0), Some(at(600)), Source::Agent)
    }

    const ALL_READ: &[NoticeKind] = &[
        NoticeKind::SpotInterruption,
        NoticeKind::RebalanceRecommendation,
        NoticeKind::ScheduledMaintenance,
        NoticeKind::AsgTermination,
    ];

    fn look(notices: Vec<Notice>) -> Observation {
        Observation {
            notices,
            readable: ALL_READ.to_vec(),
            unreadable_ids: Vec::new(),
        }
    }

    #[test]
    fn a_notice_is_added_once_and_a_spot_notice_is_never_withdrawn() {
        let mut t = Tracker::new();
        assert_eq!(t.observe(look(vec![spot(120)])), [Change::Added(spot(120))]);
        assert!(t.observe(look(vec![spot(120)])).is_empty());
        assert!(
            t.observe(look(vec![])).is_empty(),
            "a spot notice does not come back"
        );
        assert_eq!(t.active().len(), 1);
    }

    #[test]
    fn a_restated_time_is_one_notice_and_only_an_earlier_deadline_moves_it() {
        let mut t = Tracker::new();
        t.observe(look(vec![spot(120)]));
        // amazon-ec2-metadata-mock restates the time on every read: later times change nothing.
        for later in 121..130 {
            assert!(t.observe(look(vec![spot(later)])).is_empty());
        }
        assert_eq!(
            t.observe(look(vec![spot(100)])),
            [Change::DeadlineMoved {
                id: spot(0).id,
                from: Some(at(120)),
                to: at(100)
            }]
        );
        assert_eq!(t.get(&spot(0).id).unwrap().deadline, Some(at(100)));
    }

    #[test]
    fn rebalance_and_scheduled_events_are_withdrawn_when_they_disappear() {
        let mut t = Tracker::new();
        t.observe(look(vec![rebalance(), event("e1"), event("e2")]));
        assert_eq!(
            t.observe(look(vec![event("e1"), event("e2")])),
            [Change::Withdrawn(rebalance())]
        );
        assert_eq!(
            t.observe(look(vec![event("e2")])),
            [Change::Withdrawn(event("e1"))]
        );
        assert_eq!(t.active(), [event("e2")], "the other event stays");
    }

    #[test]
    fn a_read_error_or_an_unreadable_listed_event_never_withdraws() {
        let mut t = Tracker::new();
        t.observe(look(vec![rebalance(), event("e1")]));
        let only_spot_read = Observation {
            readable: vec![NoticeKind::SpotInterruption],
            ..Observation::default()
        };
        assert!(t.observe(only_spot_read).is_empty());
        let e1_malformed = Observation {
            notices: vec![rebalance()],
            readable: ALL_READ.to_vec(),
            unreadable_ids: vec!["e1".into()],
        };
        assert!(t.observe(e1_malformed).is_empty());
        assert_eq!(t.active().len(), 2);
    }

    #[test]
    fn resumed_notices_are_carried_not_new_and_finished_ones_never_return() {
        let mut t = Tracker::new();
        assert!(t.resume(spot(120)));
        assert!(!t.resume(spot(120)));
        assert!(
            t.observe(look(vec![spot(120)])).is_empty(),
            "known, not new"
        );
        assert_eq!(t.finish("e1"), None);
        assert!(t.observe(look(vec![event("e1")])).is_empty());
        assert!(!t.resume(event("e1")));
        assert_eq!(t.add(event("e1")), None);
        assert_eq!(t.add(rebalance()), Some(Change::Added(rebalance())));
        assert_eq!(t.remove(&rebalance().id), Some(rebalance()));
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
