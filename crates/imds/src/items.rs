//! Typed interruption and identity items of the instance metadata service, and their parsers.
//!
//! Pure functions from a response body to a value: no IO here, so every format quirk in
//! `shared/spec/imds.md` is pinned by a unit test. The client decides what a 404 means; these
//! parsers only ever see a body that EC2 actually served.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

/// A body that does not have the shape EC2 documents. Carries enough to log it usefully.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct MalformedItem {
    pub what: &'static str,
    pub reason: String,
}

impl MalformedItem {
    fn new(what: &'static str, reason: impl fmt::Display) -> Self {
        Self {
            what,
            reason: reason.to_string(),
        }
    }
}

/// What EC2 will do to a spot instance when its notice runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpotAction {
    Terminate,
    Stop,
    Hibernate,
}

impl SpotAction {
    pub const ALL: [SpotAction; 3] = [Self::Terminate, Self::Stop, Self::Hibernate];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Terminate => "terminate",
            Self::Stop => "stop",
            Self::Hibernate => "hibernate",
        }
    }
}

impl fmt::Display for SpotAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SpotAction {
    type Err = MalformedItem;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| MalformedItem::new("spot action", format!("unknown action {s:?}")))
    }
}

/// `spot/instance-action`: the two-minute warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpotInstanceAction {
    pub action: SpotAction,
    /// When EC2 acts (UTC); `None` when the item names no readable time. The interruption is
    /// certain all the same: it is acted on with the shortest notice EC2 gives
    /// ([`SPOT_NOTICE`]) from detection, never ignored.
    pub time: Option<Timestamp>,
    /// The time as served, when it could not be read.
    pub unreadable_time: Option<String>,
    /// An action EC2 does not document, read as `terminate` (EC2 takes the instance either
    /// way; doing nothing would be the worst reading).
    pub unknown_action: Option<String>,
}

/// `events/recommendations/rebalance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebalanceRecommendation {
    pub notice_time: Timestamp,
}

/// Codes of `events/maintenance/scheduled`. Unknown codes are kept rather than rejected: a new
/// kind of maintenance is still maintenance, and dropping it would hide a real event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ScheduledEventCode {
    InstanceReboot,
    SystemReboot,
    SystemMaintenance,
    InstanceRetirement,
    InstanceStop,
    Other(String),
}

impl ScheduledEventCode {
    pub const KNOWN: [&'static str; 5] = [
        "instance-reboot",
        "system-reboot",
        "system-maintenance",
        "instance-retirement",
        "instance-stop",
    ];

    pub fn as_str(&self) -> &str {
        match self {
            Self::InstanceReboot => "instance-reboot",
            Self::SystemReboot => "system-reboot",
            Self::SystemMaintenance => "system-maintenance",
            Self::InstanceRetirement => "instance-retirement",
            Self::InstanceStop => "instance-stop",
            Self::Other(s) => s,
        }
    }

    /// Reboots return the instance; the others take it away or stop it.
    pub fn is_reboot(&self) -> bool {
        matches!(self, Self::InstanceReboot | Self::SystemReboot)
    }
}

impl From<&str> for ScheduledEventCode {
    fn from(s: &str) -> Self {
        match s {
            "instance-reboot" => Self::InstanceReboot,
            "system-reboot" => Self::SystemReboot,
            "system-maintenance" => Self::SystemMaintenance,
            "instance-retirement" => Self::InstanceRetirement,
            "instance-stop" => Self::InstanceStop,
            other => Self::Other(other.to_owned()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScheduledEventState {
    Active,
    Completed,
    Canceled,
}

impl FromStr for ScheduledEventState {
    type Err = MalformedItem;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "completed" => Ok(Self::Completed),
            "canceled" => Ok(Self::Canceled),
            other => Err(MalformedItem::new(
                "scheduled event state",
                format!("unknown state {other:?}"),
            )),
        }
    }
}

/// One entry of `events/maintenance/scheduled` (or `history`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledEvent {
    pub event_id: String,
    pub code: ScheduledEventCode,
    pub state: ScheduledEventState,
    pub description: String,
    pub not_before: Timestamp,
    pub not_after: Option<Timestamp>,
}

/// `events/maintenance/scheduled` as read: the valid events, and the entries that could not be
/// read (with their `EventId` when that much was there). One bad entry never hides the others.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScheduledEvents {
    pub events: Vec<ScheduledEvent>,
    pub malformed: Vec<(Option<String>, MalformedItem)>,
}

/// `autoscaling/target-lifecycle-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetLifecycleState {
    InService,
    Terminated,
    Detached,
    Standby,
    WarmedHibernated,
    WarmedRunning,
    WarmedStopped,
    WarmedTerminated,
}

impl TargetLifecycleState {
    pub const ALL: [TargetLifecycleState; 8] = [
        Self::InService,
        Self::Terminated,
        Self::Detached,
        Self::Standby,
        Self::WarmedHibernated,
        Self::WarmedRunning,
        Self::WarmedStopped,
        Self::WarmedTerminated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InService => "InService",
            Self::Terminated => "Terminated",
            Self::Detached => "Detached",
            Self::Standby => "Standby",
            Self::WarmedHibernated => "Warmed:Hibernated",
            Self::WarmedRunning => "Warmed:Running",
            Self::WarmedStopped => "Warmed:Stopped",
            Self::WarmedTerminated => "Warmed:Terminated",
        }
    }
}

impl fmt::Display for TargetLifecycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TargetLifecycleState {
    type Err = MalformedItem;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                MalformedItem::new("target lifecycle state", format!("unknown state {s:?}"))
            })
    }
}

/// `/latest/dynamic/instance-identity/document`. Unset values are `null` on EC2.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityDocument {
    pub account_id: Option<String>,
    pub architecture: Option<String>,
    pub availability_zone: Option<String>,
    pub billing_products: Option<Vec<String>>,
    pub devpay_product_codes: Option<Vec<String>>,
    pub marketplace_product_codes: Option<Vec<String>>,
    pub image_id: Option<String>,
    pub instance_id: Option<String>,
    pub instance_type: Option<String>,
    pub kernel_id: Option<String>,
    pub pending_time: Option<String>,
    pub private_ip: Option<String>,
    pub ramdisk_id: Option<String>,
    pub region: Option<String>,
    pub version: Option<String>,
}

/// Who this instance is: read once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceIdentity {
    pub instance_id: String,
    pub instance_type: String,
    pub availability_zone: String,
    pub region: String,
    /// `spot` or `on-demand`; absent on some very old instances.
    pub life_cycle: Option<String>,
    pub local_hostname: Option<String>,
    pub local_ipv4: Option<String>,
    pub public_ipv4: Option<String>,
    pub public_hostname: Option<String>,
    /// From the instance's tags in the metadata (when the instance allows it).
    pub auto_scaling_group: Option<String>,
    pub document: IdentityDocument,
}

/// The format of scheduled-event times: `21 Jan 2019 09:00:43 GMT`.
const SCHEDULED_TIME_FORMAT: &str = "%d %b %Y %H:%M:%S GMT";

/// Parses an RFC 3339 instant. EC2 writes UTC with `Z` and no fraction; other clients and
/// simulators add fractions or offsets, which are still unambiguous instants, so we take them.
pub fn parse_rfc3339(s: &str) -> Result<Timestamp, MalformedItem> {
    s.trim()
        .parse::<Timestamp>()
        .map_err(|e| MalformedItem::new("time", format!("{s:?} is not an RFC 3339 time: {e}")))
}

/// Parses `21 Jan 2019 09:00:43 GMT` (a one-digit day is accepted too).
pub fn parse_scheduled_time(s: &str) -> Result<Timestamp, MalformedItem> {
    DateTime::strptime(SCHEDULED_TIME_FORMAT, s.trim())
        .and_then(|dt| dt.to_zoned(TimeZone::UTC))
        .map(|z| z.timestamp())
        .map_err(|e| {
            MalformedItem::new(
                "scheduled event time",
                format!("{s:?} is not like \"21 Jan 2019 09:00:43 GMT\": {e}"),
            )
        })
}

/// Formats a time the way `events/maintenance/scheduled` does.
pub fn format_scheduled_time(t: Timestamp) -> String {
    t.strftime("%-d %b %Y %H:%M:%S GMT").to_string()
}

/// The shortest warning EC2 gives before a spot interruption: what a notice whose time cannot
/// be read is given, counted from its detection.
pub const SPOT_NOTICE: jiff::SignedDuration = jiff::SignedDuration::from_secs(120);

/// `spot/instance-action`: `{"action": "terminate", "time": "2017-09-18T08:22:00Z"}`. A body
/// that is not that JSON object is malformed; an object with an action is an interruption,
/// whatever its time holds (fail closed: an unreadable time is `None`, never "no notice").
pub fn parse_instance_action(body: &str) -> Result<SpotInstanceAction, MalformedItem> {
    #[derive(Deserialize)]
    struct Raw {
        action: String,
        #[serde(default)]
        time: Option<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_str(body)
        .map_err(|e| MalformedItem::new("spot instance-action", format!("invalid JSON: {e}")))?;
    let (time, unreadable_time) = match &raw.time {
        Some(serde_json::Value::String(t)) => match parse_rfc3339(t) {
            Ok(t) => (Some(t), None),
            Err(_) => (None, Some(t.clone())),
        },
        Some(other) => (None, Some(other.to_string())),
        None => (None, Some("(no time)".to_owned())),
    };
    Ok(match raw.action.parse() {
        Ok(action) => SpotInstanceAction {
            action,
            time,
            unreadable_time,
            unknown_action: None,
        },
        Err(_) => SpotInstanceAction {
            action: SpotAction::Terminate,
            time,
            unreadable_time,
            unknown_action: Some(raw.action),
        },
    })
}

/// Legacy `spot/termination-time`. A body that is not a timestamp means "no notice": EC2 has
/// served placeholder text there, and the shell handler that fired on any 200 drained healthy
/// nodes because of it.
pub fn parse_termination_time(body: &str) -> Option<Timestamp> {
    parse_rfc3339(body).ok()
}

/// `events/recommendations/rebalance`: `{"noticeTime": "2020-10-27T08:22:00Z"}`.
pub fn parse_rebalance(body: &str) -> Result<RebalanceRecommendation, MalformedItem> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        notice_time: String,
    }
    let raw: Raw = serde_json::from_str(body).map_err(|e| {
        MalformedItem::new("rebalance recommendation", format!("invalid JSON: {e}"))
    })?;
    Ok(RebalanceRecommendation {
        notice_time: parse_rfc3339(&raw.notice_time)?,
    })
}

/// `events/maintenance/scheduled` and `.../history`: a JSON array; an empty body is taken as
/// the empty array because some simulators serve nothing rather than `[]`. Each entry is read
/// on its own: a malformed one is reported beside the valid ones, never instead of them.
pub fn parse_scheduled_events(body: &str) -> Result<ScheduledEvents, MalformedItem> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Raw {
        not_before: String,
        #[serde(default)]
        not_after: Option<String>,
        code: String,
        #[serde(default)]
        description: String,
        event_id: String,
        state: String,
    }
    if body.trim().is_empty() {
        return Ok(ScheduledEvents::default());
    }
    let entries: Vec<serde_json::Value> = serde_json::from_str(body)
        .map_err(|e| MalformedItem::new("scheduled events", format!("invalid JSON: {e}")))?;
    let mut out = ScheduledEvents::default();
    for entry in entries {
        let id = entry
            .get("EventId")
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let event = serde_json::from_value::<Raw>(entry)
            .map_err(|e| MalformedItem::new("scheduled event", e))
            .and_then(|r| {
                Ok(ScheduledEvent {
                    code: ScheduledEventCode::from(r.code.as_str()),
                    state: r.state.parse()?,
                    not_before: parse_scheduled_time(&r.not_before)?,
                    not_after: match r.not_after.as_deref() {
                        None | Some("") => None,
                        Some(s) => Some(parse_scheduled_time(s)?),
                    },
                    description: r.description,
                    event_id: r.event_id,
                })
            })
            .and_then(|e| {
                if e.event_id.is_empty() {
                    Err(MalformedItem::new("scheduled event", "an empty EventId"))
                } else {
                    Ok(e)
                }
            });
        match event {
            Ok(e) => out.events.push(e),
            Err(e) => out.malformed.push((id, e)),
        }
    }
    Ok(out)
}

/// `autoscaling/target-lifecycle-state`: plain text.
pub fn parse_target_lifecycle_state(body: &str) -> Result<TargetLifecycleState, MalformedItem> {
    body.trim().parse()
}

/// `/latest/dynamic/instance-identity/document`.
pub fn parse_identity_document(body: &str) -> Result<IdentityDocument, MalformedItem> {
    serde_json::from_str(body)
        .map_err(|e| MalformedItem::new("identity document", format!("invalid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn instance_action_reads_every_action() {
        for action in SpotAction::ALL {
            let body = format!(r#"{{"action": "{action}", "time": "2017-09-18T08:22:00Z"}}"#);
            let got = parse_instance_action(&body).unwrap();
            assert_eq!(got.action, action);
            assert_eq!(got.time, Some(ts("2017-09-18T08:22:00Z")));
        }
    }

    #[test]
    fn instance_action_fails_closed_on_an_unknown_action_or_an_unreadable_time() {
        // EC2 takes the instance whatever the word: fail closed, keep the time, say what it was.
        let unknown =
            parse_instance_action(r#"{"action":"explode","time":"2017-09-18T08:22:00Z"}"#).unwrap();
        assert_eq!(unknown.action, SpotAction::Terminate);
        assert_eq!(unknown.time, Some(ts("2017-09-18T08:22:00Z")));
        assert_eq!(unknown.unknown_action.as_deref(), Some("explode"));
        // The interruption is certain, its time is not: kept, with what was served.
        for (body, served) in [
            (r#"{"action":"stop","time":"tomorrow"}"#, "tomorrow"),
            (
                r#"{"action":"terminate","time":"2026-12-06 03:20:00"}"#,
                "2026-12-06 03:20:00",
            ),
            (r#"{"action":"terminate","time":12}"#, "12"),
            (r#"{"action":"stop"}"#, "(no time)"),
        ] {
            let a = parse_instance_action(body).unwrap();
            assert_eq!(a.time, None, "{body}");
            assert_eq!(a.unreadable_time.as_deref(), Some(served));
        }
        let bad_json = parse_instance_action(r#"{"action":"stop""#);
        assert!(bad_json.unwrap_err().reason.contains("invalid JSON"));
    }

    #[test]
    fn rfc3339_accepts_fractions_and_offsets_as_the_same_instant() {
        assert_eq!(
            parse_rfc3339("2017-09-18T08:22:00.123Z").unwrap(),
            ts("2017-09-18T08:22:00.123Z")
        );
        assert_eq!(
            parse_rfc3339("2017-09-18T10:22:00+02:00").unwrap(),
            ts("2017-09-18T08:22:00Z")
        );
        // Boundaries: leap day, end of year, epoch.
        assert_eq!(
            parse_rfc3339("2024-02-29T23:59:59Z").unwrap(),
            ts("2024-02-29T23:59:59Z")
        );
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00Z").unwrap(),
            Timestamp::UNIX_EPOCH
        );
        assert!(parse_rfc3339("2023-02-29T00:00:00Z").is_err());
        assert!(
            parse_rfc3339("2017-09-18T08:22:00").is_err(),
            "no offset is ambiguous"
        );
    }

    #[test]
    fn termination_time_that_is_not_a_time_means_no_notice() {
        assert_eq!(
            parse_termination_time("2015-01-05T18:02:00Z"),
            Some(ts("2015-01-05T18:02:00Z"))
        );
        assert_eq!(
            parse_termination_time("2015-01-05T18:02:00Z\n"),
            Some(ts("2015-01-05T18:02:00Z"))
        );
        assert_eq!(parse_termination_time(""), None);
        assert_eq!(parse_termination_time("<html>not yet</html>"), None);
        assert_eq!(parse_termination_time("{\"action\":\"terminate\"}"), None);
    }

    #[test]
    fn rebalance_reads_notice_time() {
        let r = parse_rebalance(r#"{"noticeTime": "2020-10-27T08:22:00Z"}"#).unwrap();
        assert_eq!(r.notice_time, ts("2020-10-27T08:22:00Z"));
        assert!(parse_rebalance(r#"{"noticetime": "2020-10-27T08:22:00Z"}"#).is_err());
        assert!(parse_rebalance(r#"{"noticeTime": 5}"#).is_err());
    }

    #[test]
    fn scheduled_time_format_round_trips_with_one_and_two_digit_days() {
        assert_eq!(
            parse_scheduled_time("21 Jan 2019 09:00:43 GMT").unwrap(),
            ts("2019-01-21T09:00:43Z")
        );
        assert_eq!(
            parse_scheduled_time("1 Feb 2019 00:00:00 GMT").unwrap(),
            ts("2019-02-01T00:00:00Z")
        );
        assert_eq!(
            parse_scheduled_time("01 Feb 2019 00:00:00 GMT").unwrap(),
            ts("2019-02-01T00:00:00Z")
        );
        assert_eq!(
            format_scheduled_time(ts("2019-02-01T00:00:00Z")),
            "1 Feb 2019 00:00:00 GMT"
        );
        let t = ts("2026-12-31T23:59:59Z");
        assert_eq!(parse_scheduled_time(&format_scheduled_time(t)).unwrap(), t);
        assert!(parse_scheduled_time("2019-01-21T09:00:43Z").is_err());
        assert!(parse_scheduled_time("32 Jan 2019 09:00:43 GMT").is_err());
    }

    #[test]
    fn scheduled_events_read_every_code_and_state() {
        let states = ["active", "completed", "canceled"];
        for (i, code) in ScheduledEventCode::KNOWN.iter().enumerate() {
            let state = states[i % states.len()];
            let body = format!(
                r#"[{{"NotBefore":"21 Jan 2019 09:00:43 GMT","NotAfter":"21 Jan 2019 09:17:23 GMT",
                   "Code":"{code}","Description":"scheduled","EventId":"instance-event-0123456789abcdef0",
                   "State":"{state}"}}]"#
            );
            let events = parse_scheduled_events(&body).unwrap().events;
            assert_eq!(events.len(), 1);
            let e = &events[0];
            assert_eq!(e.code.as_str(), *code);
            assert!(!matches!(e.code, ScheduledEventCode::Other(_)));
            assert_eq!(e.state, state.parse().unwrap());
            assert_eq!(e.not_before, ts("2019-01-21T09:00:43Z"));
            assert_eq!(e.not_after, Some(ts("2019-01-21T09:17:23Z")));
            assert_eq!(e.event_id, "instance-event-0123456789abcdef0");
        }
        assert!(ScheduledEventCode::SystemReboot.is_reboot());
        assert!(!ScheduledEventCode::InstanceStop.is_reboot());
    }

    #[test]
    fn scheduled_events_empty_forms_and_errors() {
        assert!(parse_scheduled_events("[]").unwrap().events.is_empty());
        assert!(parse_scheduled_events("").unwrap().events.is_empty());
        let no_after = parse_scheduled_events(
            r#"[{"NotBefore":"21 Jan 2019 09:00:43 GMT","Code":"future-thing","Description":"","EventId":"e","State":"active"}]"#,
        )
        .unwrap()
        .events;
        assert_eq!(no_after[0].not_after, None);
        assert_eq!(
            no_after[0].code,
            ScheduledEventCode::Other("future-thing".into())
        );
        let bad_state = parse_scheduled_events(
            r#"[{"NotBefore":"21 Jan 2019 09:00:43 GMT","Code":"system-reboot","EventId":"e","State":"pending"}]"#,
        )
        .unwrap();
        assert_eq!(bad_state.malformed[0].1.what, "scheduled event state");
        assert_eq!(bad_state.malformed[0].0.as_deref(), Some("e"));
        let bad_time = parse_scheduled_events(
            r#"[{"NotBefore":"2019-01-21","Code":"system-reboot","EventId":"e","State":"active"}]"#,
        )
        .unwrap();
        assert_eq!(bad_time.malformed[0].1.what, "scheduled event time");
        assert!(parse_scheduled_events("{}").is_err(), "not an array at all");
    }

    #[test]
    fn one_malformed_scheduled_event_never_hides_the_valid_ones() {
        let body = r#"[
            {"NotBefore":"21 Jan 2019 09:00:43 GMT","Code":"system-reboot","EventId":"good-1","State":"active"},
            {"NotBefore":"yesterday","Code":"system-reboot","EventId":"bad-time","State":"active"},
            {"Code":"instance-stop","State":"active"},
            42,
            {"NotBefore":"22 Jan 2019 09:00:43 GMT","Code":"instance-stop","EventId":"good-2","State":"active"}
        ]"#;
        let read = parse_scheduled_events(body).unwrap();
        let ids: Vec<&str> = read.events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["good-1", "good-2"]);
        let bad: Vec<Option<&str>> = read.malformed.iter().map(|(id, _)| id.as_deref()).collect();
        assert_eq!(bad, [Some("bad-time"), None, None]);
    }

    #[test]
    fn target_lifecycle_state_reads_every_value() {
        for state in TargetLifecycleState::ALL {
            assert_eq!(parse_target_lifecycle_state(state.as_str()).unwrap(), state);
            assert_eq!(
                parse_target_lifecycle_state(&format!("{state}\n")).unwrap(),
                state
            );
        }
        assert!(parse_target_lifecycle_state("terminated").is_err());
        assert!(parse_target_lifecycle_state("Warmed:Pending").is_err());
    }

    #[test]
    fn identity_document_reads_camel_case_and_nulls() {
        let doc = parse_identity_document(
            r#"{"accountId":"123456789012","architecture":"x86_64","availabilityZone":"us-east-1a",
                "billingProducts":null,"devpayProductCodes":null,"marketplaceProductCodes":null,
                "imageId":"ami-0123","instanceId":"i-0123456789abcdef0","instanceType":"m5.large",
                "kernelId":null,"pendingTime":"2026-11-23T00:00:00Z","privateIp":"10.0.0.12",
                "ramdiskId":null,"region":"us-east-1","version":"2017-09-30"}"#,
        )
        .unwrap();
        assert_eq!(doc.instance_id.as_deref(), Some("i-0123456789abcdef0"));
        assert_eq!(doc.region.as_deref(), Some("us-east-1"));
        assert_eq!(doc.kernel_id, None);
        assert!(parse_identity_document("not json").is_err());
    }
}
