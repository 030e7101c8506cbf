//! What a scheduled-events document means for this VM: its notices, and which events to
//! acknowledge when. Pure: the caller keeps when each event was first seen.

use std::collections::HashMap;

use jiff::Timestamp;
use sih_core::{Action, ActionPolicy, Notice, NoticeKind, Observation, Source};

use super::items::{Document, Event, EventStatus, EventType};

/// Our kind for each Azure event type.
pub fn kind_of(t: EventType) -> NoticeKind {
    match t {
        EventType::Preempt => NoticeKind::SpotInterruption,
        EventType::Reboot | EventType::Redeploy => NoticeKind::ScheduledMaintenance,
        EventType::Freeze => NoticeKind::LiveMigration,
        // A scale set deleting the VM: what an ASG termination is on EC2.
        EventType::Terminate => NoticeKind::AsgTermination,
        // A type not documented yet still names this VM: an unknown maintenance, as EC2's
        // unknown scheduled-event codes are.
        EventType::Other => NoticeKind::ScheduledMaintenance,
    }
}

/// The furthest ahead a `NotBefore` of each type is believed: Azure lists a Preempt about 30 s
/// ahead, a scale set's Terminate up to 15 minutes, maintenance minutes to hours ahead. A
/// time past this (a year 9999) is no time at all: the event gets its type's shortest notice.
fn furthest_believed(t: EventType) -> jiff::SignedDuration {
    jiff::SignedDuration::from_secs(match t {
        EventType::Preempt => 15 * 60,
        EventType::Terminate => 60 * 60,
        _ => 24 * 60 * 60,
    })
}

/// The notice's id: one spot interruption per VM (as on EC2), otherwise Azure's `EventId`.
pub fn notice_id(e: &Event, vm_id: &str) -> String {
    match e.kind {
        EventType::Preempt => format!("{vm_id}-spot-interruption"),
        _ => e.id.clone(),
    }
}

/// Who this VM is, as the document names it.
#[derive(Debug, Clone, Copy)]
pub struct Vm<'a> {
    /// `compute/name`: what `Resources` lists.
    pub name: &'a str,
    /// `compute/vmId`: our instance id.
    pub id: &'a str,
}

/// What the caller remembers of an event between looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// When it was first listed.
    pub first: Timestamp,
    /// Its last `NotBefore` (Azure empties it once the event starts).
    pub not_before: Option<Timestamp>,
}

/// Remembers what `doc` lists, forgetting the events it no longer lists.
pub fn remember(known: &mut HashMap<String, Seen>, doc: &Document, now: Timestamp) {
    known.retain(|id, _| doc.events.iter().any(|e| e.id == *id));
    for e in &doc.events {
        let seen = known.entry(e.id.clone()).or_insert(Seen {
            first: now,
            not_before: None,
        });
        if e.not_before.is_some() {
            seen.not_before = e.not_before;
        }
    }
}

/// What `doc` shows for `vm` on `node`. `known` holds what earlier looks saw of each event: a
/// started event (its `NotBefore` emptied) keeps the deadline it had, and one seen only once
/// started takes the moment it was first seen, so a deadline holds still from look to look.
pub fn observation(
    doc: &Document,
    vm: Vm<'_>,
    node: &str,
    known: &HashMap<String, Seen>,
    now: Timestamp,
) -> Observation {
    let mut notices = Vec::new();
    for e in doc.events.iter().filter(|e| e.names(vm.name)) {
        let remembered = known.get(&e.id);
        let seen = remembered.map_or(now, |k| k.first);
        let believed = |t: &Timestamp| {
            seen.checked_add(furthest_believed(e.kind))
                .is_ok_and(|end| *t <= end)
        };
        let shortest = seen.checked_add(e.kind.shortest_notice()).unwrap_or(seen);
        let deadline = match e.not_before.or(remembered.and_then(|k| k.not_before)) {
            Some(t) if believed(&t) => t,
            // Unbelievable, or unreadable: the event is certain, its time is not.
            Some(_) => shortest,
            None if e.unreadable_not_before.is_some() => shortest,
            // Started (Azure empties `NotBefore`): now.
            None => seen,
        };
        let kind = kind_of(e.kind);
        notices.push(match e.kind {
            EventType::Preempt => {
                Notice::spot_interruption(vm.id, node, seen, deadline, Source::Agent)
            }
            _ => Notice::cloud_event(kind, &e.id, vm.id, node, seen, Some(deadline)),
        });
    }
    let mut readable = vec![
        NoticeKind::ScheduledMaintenance,
        NoticeKind::LiveMigration,
        NoticeKind::SpotInterruption,
        NoticeKind::AsgTermination,
    ];
    // A broken entry without a readable id could be any event: none is withdrawn.
    if doc.malformed.iter().any(|(id, _)| id.is_none()) {
        readable.clear();
    }
    Observation {
        notices,
        readable,
        unreadable_ids: doc
            .malformed
            .iter()
            .filter_map(|(id, _)| id.clone())
            .collect(),
    }
}

/// Looks in a row an event must be missing before its notice is withdrawn: one document
/// without it may be a stale answer (a load balancer's other replica, a restarted agent on
/// the host), and withdrawing unfences and stops the drain.
pub const VANISH_LOOKS: u32 = 2;

/// Documents whose incarnation goes backwards this many times in a row (the same lower
/// number) are taken as the new truth (the host's agent restarted); fewer are stale answers.
pub const LOWER_INCARNATION_LOOKS: u32 = 3;

/// What the source remembers between documents so that no single answer is trusted alone.
#[derive(Debug, Default)]
pub struct Reading {
    incarnation: Option<u64>,
    lower: Option<(u64, u32)>,
    /// Notice ids of the last look, and how many looks in a row each has been missing.
    last_ids: std::collections::HashSet<String>,
    missing: HashMap<String, u32>,
}

impl Reading {
    /// `Err` (with the reason) for a document older than one already read: ignored whole.
    pub fn fresh(&mut self, doc: &Document) -> Result<(), String> {
        if let Some(had) = self.incarnation
            && doc.incarnation < had
        {
            let looks = match self.lower {
                Some((n, looks)) if n == doc.incarnation => looks + 1,
                _ => 1,
            };
            self.lower = Some((doc.incarnation, looks));
            if looks < LOWER_INCARNATION_LOOKS {
                return Err(format!(
                    "DocumentIncarnation {} after {had}: a stale answer, ignored",
                    doc.incarnation
                ));
            }
        }
        self.lower = None;
        self.incarnation = Some(doc.incarnation);
        Ok(())
    }

    /// Holds the notices of the last look that this one lacks (as unreadable, so not
    /// withdrawn) until they have been missing [`VANISH_LOOKS`] looks in a row.
    pub fn hold_vanished(&mut self, seen: &mut Observation) {
        let present: std::collections::HashSet<String> =
            seen.notices.iter().map(|n| n.id.clone()).collect();
        let mut next = present.clone();
        for id in std::mem::take(&mut self.last_ids) {
            if present.contains(&id) {
                continue;
            }
            let looks = self.missing.entry(id.clone()).or_insert(0);
            *looks += 1;
            if *looks < VANISH_LOOKS {
                seen.unreadable_ids.push(id.clone());
                next.insert(id);
            } else {
                self.missing.remove(&id);
            }
        }
        for id in &present {
            self.missing.remove(id);
        }
        self.last_ids = next;
    }
}

/// When an event is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckWhen {
    /// Now: the policy only tells about its kind, and acknowledging those is configured.
    Now,
    /// Once the notice's action (its drain) is done.
    WhenDone,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct AckRules {
    /// Acknowledge at once the events whose kind the policy only notifies about.
    pub notified: bool,
    /// Acknowledge events that name other VMs too (they start for all of them).
    pub shared: bool,
}

/// One acknowledgement to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub event_id: String,
    pub notice_id: String,
    pub when: AckWhen,
}

/// The events of `doc` to acknowledge: scheduled ones naming this VM (and no other unless
/// `rules.shared`), whose kind the policy acts on (or only notifies about, when
/// `rules.notified`).
pub fn acks(doc: &Document, vm: Vm<'_>, policy: &ActionPolicy, rules: AckRules) -> Vec<Ack> {
    doc.events
        .iter()
        .filter(|e| e.status == EventStatus::Scheduled && e.names(vm.name))
        .filter(|e| rules.shared || !e.names_others(vm.name))
        .filter_map(|e| {
            let when = match policy.action_for(kind_of(e.kind)) {
                Action::None => return None,
                Action::Notify if rules.notified => AckWhen::Now,
                Action::Notify => return None,
                _ => AckWhen::WhenDone,
            };
            Some(Ack {
                event_id: e.id.clone(),
                notice_id: notice_id(e, vm.id),
                when,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ev(id: &str, kind: EventType, resources: &[&str], status: EventStatus) -> Event {
        Event {
            id: id.into(),
            kind,
            type_name: kind.as_str().into(),
            unreadable_not_before: None,
            resource_type: "VirtualMachine".into(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
            status,
            not_before: (status == EventStatus::Scheduled).then(|| ts("2026-12-04T10:00:30Z")),
            description: String::new(),
            source: "Platform".into(),
            duration_seconds: None,
        }
    }

    const VM: Vm<'static> = Vm {
        name: "aks-spot-0",
        id: "0b1c-vm",
    };

    #[test]
    fn events_map_to_kinds_and_only_ours_count() {
        use EventStatus::*;
        let doc = Document {
            incarnation: 2,
            events: vec![
                ev("e-preempt", EventType::Preempt, &["aks-spot-0"], Scheduled),
                ev(
                    "e-reboot",
                    EventType::Reboot,
                    &["AKS-SPOT-0", "aks-spot-1"],
                    Scheduled,
                ),
                ev("e-freeze", EventType::Freeze, &["aks-spot-0"], Scheduled),
                ev("e-other", EventType::Redeploy, &["aks-spot-1"], Scheduled),
                ev("e-term", EventType::Terminate, &["aks-spot-0"], Started),
            ],
            malformed: vec![(Some("e-bad".into()), "x".into())],
        };
        let now = ts("2026-12-04T10:00:00Z");
        let mut first = HashMap::new();
        first.insert(
            "e-term".to_owned(),
            Seen {
                first: ts("2026-12-04T09:59:50Z"),
                not_before: None,
            },
        );
        let o = observation(&doc, VM, "n1", &first, now);
        let got: Vec<_> = o
            .notices
            .iter()
            .map(|n| (n.kind, n.id.as_str(), n.deadline))
            .collect();
        assert_eq!(
            got,
            [
                (
                    NoticeKind::SpotInterruption,
                    "0b1c-vm-spot-interruption",
                    Some(ts("2026-12-04T10:00:30Z"))
                ),
                (
                    NoticeKind::ScheduledMaintenance,
                    "e-reboot",
                    Some(ts("2026-12-04T10:00:30Z"))
                ),
                (
                    NoticeKind::LiveMigration,
                    "e-freeze",
                    Some(ts("2026-12-04T10:00:30Z"))
                ),
                // Started, no NotBefore: due since it was first seen.
                (
                    NoticeKind::AsgTermination,
                    "e-term",
                    Some(ts("2026-12-04T09:59:50Z"))
                ),
            ]
        );
        assert_eq!(o.unreadable_ids, ["e-bad"]);
        assert_eq!(o.readable.len(), 4);

        let policy = ActionPolicy::default();
        let a = acks(&doc, VM, &policy, AckRules::default());
        assert_eq!(
            a,
            [Ack {
                event_id: "e-preempt".into(),
                notice_id: "0b1c-vm-spot-interruption".into(),
                when: AckWhen::WhenDone
            }],
            "the shared reboot, the notify-only freeze and the started termination wait for Azure"
        );
        let all = acks(
            &doc,
            VM,
            &policy,
            AckRules {
                notified: true,
                shared: true,
            },
        );
        let ids: Vec<_> = all.iter().map(|a| (a.event_id.as_str(), a.when)).collect();
        assert_eq!(
            ids,
            [
                ("e-preempt", AckWhen::WhenDone),
                ("e-reboot", AckWhen::WhenDone),
                ("e-freeze", AckWhen::Now)
            ]
        );
    }

    #[test]
    fn a_started_event_keeps_the_deadline_it_had() {
        let mut doc = Document {
            incarnation: 1,
            events: vec![ev(
                "e1",
                EventType::Preempt,
                &["aks-spot-0"],
                EventStatus::Scheduled,
            )],
            malformed: Vec::new(),
        };
        let mut known = HashMap::new();
        remember(&mut known, &doc, ts("2026-12-04T10:00:00Z"));
        // Acknowledged: Azure starts it and empties its NotBefore.
        doc.events[0].status = EventStatus::Started;
        doc.events[0].not_before = None;
        remember(&mut known, &doc, ts("2026-12-04T10:00:10Z"));
        let o = observation(&doc, VM, "n1", &known, ts("2026-12-04T10:00:10Z"));
        assert_eq!(o.notices[0].deadline, Some(ts("2026-12-04T10:00:30Z")));
        assert_eq!(o.notices[0].detected, ts("2026-12-04T10:00:00Z"));
        // Gone from the list: forgotten.
        doc.events.clear();
        remember(&mut known, &doc, ts("2026-12-04T10:00:20Z"));
        assert!(known.is_empty());
    }

    #[test]
    fn an_event_without_a_readable_id_withdraws_nothing() {
        let doc = Document {
            incarnation: 1,
            events: Vec::new(),
            malformed: vec![(None, "missing field `EventId`".into())],
        };
        let o = observation(&doc, VM, "n1", &HashMap::new(), ts("2026-12-04T10:00:00Z"));
        assert!(o.readable.is_empty());
    }

    #[test]
    fn a_preempt_with_an_unreadable_or_unbelievable_time_gets_thirty_seconds() {
        let now = ts("2026-12-04T10:00:00Z");
        let mut e = ev(
            "p",
            EventType::Preempt,
            &["aks-spot-0"],
            EventStatus::Scheduled,
        );
        e.not_before = None;
        e.unreadable_not_before = Some("tomorrow".into());
        let mut far = ev(
            "p2",
            EventType::Reboot,
            &["aks-spot-0"],
            EventStatus::Scheduled,
        );
        far.not_before = Some(ts("9999-12-30T00:00:00Z"));
        let mut other = ev("x", EventType::Other, &["aks-spot-0"], EventStatus::Other);
        other.not_before = None;
        other.type_name = "Explode".into();
        let doc = Document {
            incarnation: 1,
            events: vec![e, far, other],
            malformed: Vec::new(),
        };
        let o = observation(&doc, VM, "n1", &HashMap::new(), now);
        let got: Vec<_> = o.notices.iter().map(|n| (n.kind, n.deadline)).collect();
        assert_eq!(
            got,
            [
                (
                    NoticeKind::SpotInterruption,
                    Some(ts("2026-12-04T10:00:30Z"))
                ),
                (
                    NoticeKind::ScheduledMaintenance,
                    Some(ts("2026-12-04T10:15:00Z"))
                ),
                (NoticeKind::ScheduledMaintenance, Some(now)),
            ]
        );
        // An unknown status is never acknowledged.
        let a = acks(
            &doc,
            VM,
            &ActionPolicy::default(),
            AckRules {
                notified: true,
                shared: true,
            },
        );
        assert!(a.iter().all(|a| a.event_id != "x"), "{a:?}");
    }

    #[test]
    fn a_stale_document_is_ignored_and_a_vanished_event_is_held_one_look() {
        let doc = |incarnation: u64, events: Vec<Event>| Document {
            incarnation,
            events,
            malformed: Vec::new(),
        };
        let reboot = || {
            ev(
                "e-reboot",
                EventType::Reboot,
                &["aks-spot-0"],
                EventStatus::Scheduled,
            )
        };
        let now = ts("2026-12-04T10:00:00Z");
        let mut r = Reading::default();
        assert!(r.fresh(&doc(5, vec![reboot()])).is_ok());
        let mut o = observation(&doc(5, vec![reboot()]), VM, "n1", &HashMap::new(), now);
        r.hold_vanished(&mut o);
        assert!(o.unreadable_ids.is_empty());
        // 5 -> 4: stale, ignored whole.
        let e = r.fresh(&doc(4, Vec::new())).unwrap_err();
        assert!(e.contains("4 after 5"), "{e}");
        // 6 without it: held once (not withdrawn), then gone on the next look.
        assert!(r.fresh(&doc(6, Vec::new())).is_ok());
        let mut o = observation(&doc(6, Vec::new()), VM, "n1", &HashMap::new(), now);
        r.hold_vanished(&mut o);
        assert_eq!(o.unreadable_ids, ["e-reboot"]);
        let mut o = observation(&doc(6, Vec::new()), VM, "n1", &HashMap::new(), now);
        r.hold_vanished(&mut o);
        assert!(o.unreadable_ids.is_empty(), "withdrawn on the second look");
        // A lower incarnation that persists is the new truth (the host's agent restarted).
        for look in 1..LOWER_INCARNATION_LOOKS {
            assert!(r.fresh(&doc(1, Vec::new())).is_err(), "look {look}");
        }
        assert!(r.fresh(&doc(1, Vec::new())).is_ok());
    }
}
