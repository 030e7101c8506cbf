//! The simulator's mutable world: tokens, the interruption scenario, faults, overrides and the
//! request log. Everything here is synchronous and short, called under one lock; time comes in
//! as arguments so the rules are testable without a server.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::tree::Leaves;
use crate::{NoticeAction, Scenario, TokenMode};

/// How long a canceled or completed event stays in `scheduled` (with its new state) before only
/// `history` shows it. EC2 moves it to history; agents written against AEMM look for the state
/// in `scheduled`. Keeping it there briefly serves both.
pub const ENDED_EVENT_LINGER: Duration = Duration::from_secs(60);
/// `NotAfter` − `NotBefore` when none is given.
pub const DEFAULT_EVENT_WINDOW: Duration = Duration::from_secs(2 * 3600);

pub const SCHEDULED_EVENT_CODES: [&str; 5] = [
    "instance-reboot",
    "system-reboot",
    "system-maintenance",
    "instance-retirement",
    "instance-stop",
];

pub const TARGET_LIFECYCLE_STATES: [&str; 8] = [
    "InService",
    "Terminated",
    "Detached",
    "Standby",
    "Warmed:Hibernated",
    "Warmed:Running",
    "Warmed:Stopped",
    "Warmed:Terminated",
];

/// Upper bound on tokens remembered; past it, expired ones are forgotten.
const MAX_TOKENS: usize = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct SpotNotice {
    pub action: NoticeAction,
    #[serde(skip)]
    pub visible_at: Instant,
    /// Fixed when the notice is created, as on EC2: every read shows the same time.
    pub time: Timestamp,
    /// Restated on every read as now + this lead, as amazon-ec2-metadata-mock does (a test
    /// option: EC2 never moves a notice's time).
    #[serde(skip)]
    pub restated_lead: Option<Duration>,
}

impl SpotNotice {
    /// The time a read at `wall` shows.
    pub fn time_at(&self, wall: Timestamp) -> Timestamp {
        match self.restated_lead {
            Some(lead) => whole_seconds(wall + lead),
            None => self.time,
        }
    }
}

#[derive(Debug, Clone)]
struct Rebalance {
    visible_at: Instant,
    notice_time: Timestamp,
    /// `noticeTime` is now on every read (amazon-ec2-metadata-mock's way).
    restated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventState {
    Active,
    Completed,
    Canceled,
}

impl EventState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Canceled => "canceled",
        }
    }
}

#[derive(Debug, Clone)]
struct SimEvent {
    id: String,
    code: String,
    description: String,
    not_before: Timestamp,
    not_after: Option<Timestamp>,
    state: EventState,
    ended_at: Option<Instant>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Faults {
    pub latency: Duration,
    pub status: Option<u16>,
    pub rate: f64,
    /// How many more requests to affect; `None` is unlimited.
    pub remaining: Option<u32>,
    /// Only paths starting with this are affected.
    pub path_prefix: Option<String>,
}

/// The fault chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub latency: Duration,
    pub status: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct Override {
    pub status: u16,
    pub body: String,
}

/// How a request's token looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenUse {
    None,
    Valid,
    Invalid,
    Expired,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub time: Timestamp,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub token: TokenUse,
}

pub struct World {
    pub mode: TokenMode,
    tokens: HashMap<String, Instant>,
    spot: Option<SpotNotice>,
    rebalance: Option<Rebalance>,
    events: Vec<SimEvent>,
    /// Target lifecycle state timeline: the last entry whose instant has passed is current.
    asg: Vec<(Instant, String)>,
    faults: Option<Faults>,
    overrides: HashMap<String, Override>,
    log: VecDeque<LogEntry>,
    log_capacity: usize,
}

impl World {
    pub fn new(mode: TokenMode, log_capacity: usize) -> Self {
        Self {
            mode,
            tokens: HashMap::new(),
            spot: None,
            rebalance: None,
            events: Vec::new(),
            asg: Vec::new(),
            faults: None,
            overrides: HashMap::new(),
            log: VecDeque::new(),
            log_capacity,
        }
    }

    /// Lays out the start-up scenario from flags, relative to `now`/`wall`.
    pub fn apply_scenario(&mut self, s: &Scenario, now: Instant, wall: Timestamp) {
        if let Some(plan) = &s.spot {
            self.spot = Some(SpotNotice {
                action: plan.action,
                visible_at: now + plan.after,
                time: whole_seconds(wall + plan.after + plan.lead),
                restated_lead: s.restate_times.then_some(plan.lead),
            });
        }
        if let Some(after) = s.rebalance_after {
            self.rebalance = Some(Rebalance {
                visible_at: now + after,
                notice_time: whole_seconds(wall + after),
                restated: s.restate_times,
            });
        }
        for plan in &s.scheduled {
            self.add_event(&plan.code, wall + plan.not_before_in, None, None);
        }
        if let Some(after) = s.asg_terminate_after {
            self.asg = vec![
                (now, "InService".into()),
                (now + after, "Terminated".into()),
            ];
        }
    }

    pub fn reset(&mut self) {
        self.spot = None;
        self.rebalance = None;
        self.events.clear();
        self.asg.clear();
        self.faults = None;
        self.overrides.clear();
    }

    pub fn trigger_spot(
        &mut self,
        action: NoticeAction,
        lead: Duration,
        restate: bool,
        now: Instant,
        wall: Timestamp,
    ) -> SpotNotice {
        let notice = SpotNotice {
            action,
            visible_at: now,
            time: whole_seconds(wall + lead),
            restated_lead: restate.then_some(lead),
        };
        self.spot = Some(notice.clone());
        notice
    }

    pub fn spot(&self) -> Option<&SpotNotice> {
        self.spot.as_ref()
    }

    pub fn trigger_rebalance(&mut self, restate: bool, now: Instant, wall: Timestamp) -> Timestamp {
        let notice_time = whole_seconds(wall);
        self.rebalance = Some(Rebalance {
            visible_at: now,
            notice_time,
            restated: restate,
        });
        notice_time
    }

    /// Adds an active scheduled event and returns its `EventId`. Without a `NotAfter` the
    /// window is two hours, as EC2 lists one for maintenance.
    pub fn add_event(
        &mut self,
        code: &str,
        not_before: Timestamp,
        not_after: Option<Timestamp>,
        description: Option<String>,
    ) -> String {
        let hex: String = (0..17)
            .map(|_| char::from(b"0123456789abcdef"[fastrand::usize(..16)]))
            .collect();
        let id = format!("instance-event-{hex}");
        let description = description
            .unwrap_or_else(|| format!("The instance is scheduled for {}", code.replace('-', " ")));
        self.events.push(SimEvent {
            id: id.clone(),
            code: code.to_owned(),
            description,
            not_before: whole_seconds(not_before),
            not_after: Some(whole_seconds(
                not_after.unwrap_or(not_before + DEFAULT_EVENT_WINDOW),
            )),
            state: EventState::Active,
            ended_at: None,
        });
        id
    }

    /// Cancels or completes an active event. `false` when no such active event exists.
    pub fn end_event(&mut self, id: &str, state: EventState, now: Instant) -> bool {
        match self
            .events
            .iter_mut()
            .find(|e| e.id == id && e.state == EventState::Active)
        {
            Some(e) => {
                e.state = state;
                e.ended_at = Some(now);
                true
            }
            None => false,
        }
    }

    pub fn set_target_state(&mut self, state: &str, now: Instant) {
        self.asg.retain(|(at, _)| *at <= now);
        self.asg.push((now, state.to_owned()));
    }

    pub fn set_faults(&mut self, faults: Option<Faults>) {
        self.faults = faults;
    }

    pub fn set_override(&mut self, rel_path: String, o: Option<Override>) {
        match o {
            Some(o) => self.overrides.insert(rel_path, o),
            None => self.overrides.remove(&rel_path),
        };
    }

    pub fn override_for(&self, rel_path: &str) -> Option<&Override> {
        self.overrides.get(rel_path)
    }

    /// Decides whether this request is hit by the injected fault, and uses up one of its count.
    pub fn next_fault(&mut self, path: &str) -> Option<Fault> {
        let f = self.faults.as_mut()?;
        if f.path_prefix
            .as_deref()
            .is_some_and(|p| !path.starts_with(p))
        {
            return None;
        }
        if f.remaining == Some(0) || fastrand::f64() >= f.rate {
            return None;
        }
        if let Some(n) = f.remaining.as_mut() {
            *n -= 1;
        }
        Some(Fault {
            latency: f.latency,
            status: f.status,
        })
    }

    pub fn issue_token(&mut self, ttl: Duration, now: Instant) -> String {
        if self.tokens.len() >= MAX_TOKENS {
            self.tokens.retain(|_, expiry| *expiry > now);
        }
        let token: String = std::iter::repeat_with(fastrand::alphanumeric)
            .take(56)
            .collect();
        self.tokens.insert(token.clone(), now + ttl);
        token
    }

    pub fn check_token(&self, token: Option<&str>, now: Instant) -> TokenUse {
        match token {
            None => TokenUse::None,
            Some(t) => match self.tokens.get(t) {
                Some(expiry) if *expiry > now => TokenUse::Valid,
                Some(_) => TokenUse::Expired,
                None => TokenUse::Invalid,
            },
        }
    }

    /// Ends every token's life now (to rehearse expiry without waiting for it).
    pub fn expire_tokens(&mut self, now: Instant) -> usize {
        let mut n = 0;
        for expiry in self.tokens.values_mut() {
            if *expiry > now {
                *expiry = now;
                n += 1;
            }
        }
        n
    }

    /// The interruption items as they are at `now`, keyed like the static tree.
    pub fn dynamic_leaves(&self, now: Instant) -> Leaves {
        let mut l = Leaves::new();
        let wall = Timestamp::now();
        if let Some(s) = self.spot.as_ref().filter(|s| s.visible_at <= now) {
            let time = rfc3339(s.time_at(wall));
            l.insert(
                "meta-data/spot/instance-action".into(),
                json!({"action": s.action, "time": time}).to_string(),
            );
            l.insert("meta-data/spot/termination-time".into(), time);
        }
        if let Some(r) = self.rebalance.as_ref().filter(|r| r.visible_at <= now) {
            l.insert(
                "meta-data/events/recommendations/rebalance".into(),
                json!({"noticeTime": rfc3339(if r.restated { whole_seconds(wall) } else { r.notice_time })})
                    .to_string(),
            );
        }
        let in_scheduled = |e: &&SimEvent| e.ended_at.is_none_or(|t| now < t + ENDED_EVENT_LINGER);
        let scheduled: Vec<_> = self
            .events
            .iter()
            .filter(in_scheduled)
            .map(event_json)
            .collect();
        let history: Vec<_> = self
            .events
            .iter()
            .filter(|e| e.state != EventState::Active)
            .map(event_json)
            .collect();
        l.insert(
            "meta-data/events/maintenance/scheduled".into(),
            serde_json::Value::Array(scheduled).to_string(),
        );
        l.insert(
            "meta-data/events/maintenance/history".into(),
            serde_json::Value::Array(history).to_string(),
        );
        if let Some((_, state)) = self.asg.iter().rev().find(|(at, _)| *at <= now) {
            l.insert(
                "meta-data/autoscaling/target-lifecycle-state".into(),
                state.clone(),
            );
        }
        l
    }

    pub fn record(&mut self, entry: LogEntry) {
        if self.log.len() >= self.log_capacity {
            self.log.pop_front();
        }
        self.log.push_back(entry);
    }

    pub fn log(&self) -> &VecDeque<LogEntry> {
        &self.log
    }

    pub fn clear_log(&mut self) {
        self.log.clear();
    }
}

fn event_json(e: &SimEvent) -> serde_json::Value {
    let description = match e.state {
        EventState::Active => e.description.clone(),
        EventState::Completed => format!("[Completed] {}", e.description),
        EventState::Canceled => format!("[Canceled] {}", e.description),
    };
    let mut v = json!({
        "NotBefore": scheduled_time(e.not_before),
        "Code": e.code,
        "Description": description,
        "EventId": e.id,
        "State": e.state.as_str(),
    });
    if let Some(after) = e.not_after {
        v["NotAfter"] = scheduled_time(after).into();
    }
    v
}

/// EC2's notice times have no fraction.
#[cfg(test)]
fn parse_scheduled(s: &str) -> Timestamp {
    jiff::civil::DateTime::strptime("%d %b %Y %H:%M:%S GMT", s)
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC))
        .map(|z| z.timestamp())
        .expect("EC2's scheduled-event time format")
}

fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// `2017-09-18T08:22:00Z`.
pub fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `21 Jan 2019 09:00:43 GMT`.
fn scheduled_time(t: Timestamp) -> String {
    t.strftime("%-d %b %Y %H:%M:%S GMT").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ScheduledPlan, SpotPlan};

    fn wall() -> Timestamp {
        "2026-11-23T10:00:00.250Z".parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn scheduled_spot_notice_appears_after_delay_with_a_fixed_whole_second_time() {
        let mut w = World::new(TokenMode::Optional, 10);
        let start = Instant::now();
        w.apply_scenario(
            &Scenario {
                spot: Some(SpotPlan {
                    action: NoticeAction::Stop,
                    after: Duration::from_secs(5),
                    lead: Duration::from_secs(120),
                }),
                ..Default::default()
            },
            start,
            wall(),
        );
        assert!(
            !w.dynamic_leaves(start)
                .contains_key("meta-data/spot/instance-action")
        );
        let seen = w.dynamic_leaves(start + Duration::from_secs(5));
        assert_eq!(
            seen["meta-data/spot/instance-action"],
            r#"{"action":"stop","time":"2026-11-23T10:02:05Z"}"#
        );
        assert_eq!(
            seen["meta-data/spot/termination-time"],
            "2026-11-23T10:02:05Z"
        );
        // Later reads show the same time.
        let later = w.dynamic_leaves(start + Duration::from_secs(60));
        assert_eq!(
            later["meta-data/spot/instance-action"],
            seen["meta-data/spot/instance-action"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn restated_times_move_on_every_read_as_amazon_ec2_metadata_mock_serves_them() {
        let mut w = World::new(TokenMode::Optional, 10);
        let start = Instant::now();
        w.apply_scenario(
            &Scenario {
                spot: Some(SpotPlan {
                    action: NoticeAction::Terminate,
                    after: Duration::ZERO,
                    lead: Duration::from_secs(120),
                }),
                rebalance_after: Some(Duration::ZERO),
                scheduled: vec![ScheduledPlan {
                    code: "system-reboot".into(),
                    not_before_in: jiff::SignedDuration::from_secs(-300),
                }],
                restate_times: true,
                ..Default::default()
            },
            start,
            Timestamp::now(),
        );
        let spot = |l: &Leaves| -> Timestamp {
            let v: serde_json::Value =
                serde_json::from_str(&l["meta-data/spot/instance-action"]).unwrap();
            v["time"].as_str().unwrap().parse().unwrap()
        };
        let first = w.dynamic_leaves(start);
        let ahead = spot(&first).duration_since(Timestamp::now()).as_secs_f64();
        assert!((118.0..=120.0).contains(&ahead), "now + lead: {ahead}");
        // The wall clock moves (std time is not paused): the restated time moves with it.
        std::thread::sleep(Duration::from_millis(1100));
        let second = w.dynamic_leaves(start);
        assert!(spot(&second) > spot(&first), "restated, not fixed");
        assert_ne!(
            first["meta-data/events/recommendations/rebalance"],
            second["meta-data/events/recommendations/rebalance"]
        );
        // The event's window started five minutes ago and closes two hours after it opened.
        let events: serde_json::Value =
            serde_json::from_str(&second["meta-data/events/maintenance/scheduled"]).unwrap();
        let not_before = crate::state::parse_scheduled(events[0]["NotBefore"].as_str().unwrap());
        let not_after = crate::state::parse_scheduled(events[0]["NotAfter"].as_str().unwrap());
        assert!(not_before < Timestamp::now());
        assert_eq!(
            not_after.duration_since(not_before),
            jiff::SignedDuration::from_secs(7200)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn canceled_event_lingers_in_scheduled_then_only_history_shows_it() {
        let mut w = World::new(TokenMode::Optional, 10);
        let now = Instant::now();
        assert_eq!(
            w.dynamic_leaves(now)["meta-data/events/maintenance/scheduled"],
            "[]"
        );
        let id = w.add_event(
            "system-reboot",
            wall() + Duration::from_secs(600),
            None,
            None,
        );
        let scheduled: serde_json::Value =
            serde_json::from_str(&w.dynamic_leaves(now)["meta-data/events/maintenance/scheduled"])
                .unwrap();
        assert_eq!(scheduled[0]["State"], "active");
        assert_eq!(scheduled[0]["NotBefore"], "23 Nov 2026 10:10:00 GMT");
        assert!(w.end_event(&id, EventState::Canceled, now));
        assert!(
            !w.end_event(&id, EventState::Canceled, now),
            "only active events end"
        );
        let l = w.dynamic_leaves(now);
        assert!(l["meta-data/events/maintenance/scheduled"].contains(r#""State":"canceled""#));
        assert!(l["meta-data/events/maintenance/history"].contains("[Canceled] "));
        let later = w.dynamic_leaves(now + ENDED_EVENT_LINGER);
        assert_eq!(later["meta-data/events/maintenance/scheduled"], "[]");
        assert!(later["meta-data/events/maintenance/history"].contains(&id));
    }

    #[tokio::test(start_paused = true)]
    async fn asg_state_follows_its_timeline() {
        let mut w = World::new(TokenMode::Optional, 10);
        let now = Instant::now();
        assert!(
            !w.dynamic_leaves(now)
                .contains_key("meta-data/autoscaling/target-lifecycle-state")
        );
        w.apply_scenario(
            &Scenario {
                asg_terminate_after: Some(Duration::from_secs(3)),
                scheduled: vec![ScheduledPlan {
                    code: "instance-stop".into(),
                    not_before_in: jiff::SignedDuration::from_secs(60),
                }],
                ..Default::default()
            },
            now,
            wall(),
        );
        let key = "meta-data/autoscaling/target-lifecycle-state";
        assert_eq!(w.dynamic_leaves(now)[key], "InService");
        assert_eq!(
            w.dynamic_leaves(now + Duration::from_secs(3))[key],
            "Terminated"
        );
        w.set_target_state("Standby", now + Duration::from_secs(4));
        assert_eq!(
            w.dynamic_leaves(now + Duration::from_secs(4))[key],
            "Standby"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_valid_until_ttl_then_expired() {
        let mut w = World::new(TokenMode::Required, 10);
        let now = Instant::now();
        let t = w.issue_token(Duration::from_secs(2), now);
        assert_eq!(t.len(), 56);
        assert_eq!(w.check_token(Some(&t), now), TokenUse::Valid);
        assert_eq!(
            w.check_token(Some(&t), now + Duration::from_secs(2)),
            TokenUse::Expired
        );
        assert_eq!(w.check_token(Some("forged"), now), TokenUse::Invalid);
        assert_eq!(w.check_token(None, now), TokenUse::None);
        assert_eq!(w.expire_tokens(now), 1);
        assert_eq!(w.check_token(Some(&t), now), TokenUse::Expired);
    }

    #[test]
    fn counted_fault_hits_exactly_that_many_matching_requests() {
        let mut w = World::new(TokenMode::Optional, 10);
        w.set_faults(Some(Faults {
            status: Some(503),
            rate: 1.0,
            remaining: Some(2),
            path_prefix: Some("/latest/meta-data/".into()),
            ..Default::default()
        }));
        assert_eq!(w.next_fault("/latest/api/token"), None);
        assert!(w.next_fault("/latest/meta-data/instance-id").is_some());
        assert!(w.next_fault("/latest/meta-data/instance-id").is_some());
        assert_eq!(w.next_fault("/latest/meta-data/instance-id"), None);
    }

    #[test]
    fn request_log_keeps_the_newest_entries() {
        let mut w = World::new(TokenMode::Optional, 2);
        for status in [200, 404, 401] {
            w.record(LogEntry {
                time: wall(),
                method: "GET".into(),
                path: "/".into(),
                status,
                token: TokenUse::None,
            });
        }
        let statuses: Vec<u16> = w.log().iter().map(|e| e.status).collect();
        assert_eq!(statuses, [404, 401]);
    }
}
