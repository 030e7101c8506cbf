//! Azure Scheduled Events documents and their pure parser. One malformed event never hides
//! the others: it is set aside with its id (when it has one) and the reason.

use jiff::Timestamp;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The VM is paused for a few seconds (memory-preserving maintenance).
    Freeze,
    Reboot,
    /// The VM moves to another host; its temporary disks are lost.
    Redeploy,
    /// A Spot VM is evicted.
    Preempt,
    /// The VM is deleted (a scale set's terminate notification).
    Terminate,
    /// A type Azure has not documented yet (kept in `Event::type_name`): still an event
    /// naming this VM, kept as an unknown maintenance rather than dropped.
    Other,
}

impl EventType {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Freeze" => Self::Freeze,
            "Reboot" => Self::Reboot,
            "Redeploy" => Self::Redeploy,
            "Preempt" => Self::Preempt,
            "Terminate" => Self::Terminate,
            _ => return None,
        })
    }

    /// The shortest notice Azure documents for the type: what an event whose `NotBefore`
    /// cannot be read is given, from its detection. An unknown type gets the shortest of all.
    pub fn shortest_notice(self) -> jiff::SignedDuration {
        jiff::SignedDuration::from_secs(match self {
            Self::Preempt | Self::Other => 30,
            Self::Terminate => 5 * 60,
            Self::Redeploy => 10 * 60,
            Self::Freeze | Self::Reboot => 15 * 60,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Freeze => "Freeze",
            Self::Reboot => "Reboot",
            Self::Redeploy => "Redeploy",
            Self::Preempt => "Preempt",
            Self::Terminate => "Terminate",
            Self::Other => "Other",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    Scheduled,
    /// Under way (acknowledged, or its `NotBefore` passed).
    Started,
    /// A status Azure has not documented: the event stands, it is never acknowledged.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub kind: EventType,
    /// `EventType` as served (what `Other` stands for).
    pub type_name: String,
    pub resource_type: String,
    /// The VM names it concerns.
    pub resources: Vec<String>,
    pub status: EventStatus,
    /// Not before this time (`None`: empty, as once the event has started, or unreadable).
    pub not_before: Option<Timestamp>,
    /// `NotBefore` as served, when it could not be read: the event stands, with the shortest
    /// notice of its type.
    pub unreadable_not_before: Option<String>,
    pub description: String,
    pub source: String,
    /// How long the event's effect lasts (`-1` or absent: unknown).
    pub duration_seconds: Option<i64>,
}

impl Event {
    /// Whether it names the VM `vm` (Azure's names are case-insensitive).
    pub fn names(&self, vm: &str) -> bool {
        self.resources.iter().any(|r| r.eq_ignore_ascii_case(vm))
    }

    /// Whether it names another VM too: acknowledging it would start it for them as well.
    pub fn names_others(&self, vm: &str) -> bool {
        self.resources.iter().any(|r| !r.eq_ignore_ascii_case(vm))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    pub incarnation: u64,
    pub events: Vec<Event>,
    /// Events that could not be read: `(EventId if readable, why)`.
    pub malformed: Vec<(Option<String>, String)>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Raw {
    document_incarnation: u64,
    #[serde(default)]
    events: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawEvent {
    event_id: String,
    event_type: String,
    #[serde(default)]
    resource_type: String,
    #[serde(default)]
    resources: Vec<String>,
    event_status: String,
    #[serde(default)]
    not_before: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    event_source: String,
    #[serde(default)]
    duration_in_seconds: Option<i64>,
}

/// `Mon, 19 Sep 2016 18:29:47 GMT` (RFC 1123, as Azure writes `NotBefore`); empty: none.
pub fn parse_not_before(s: &str) -> Result<Option<Timestamp>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    jiff::fmt::rfc2822::parse(s)
        .map(|z| Some(z.timestamp()))
        .map_err(|e| format!("NotBefore {s:?} is not an RFC 1123 time: {e}"))
}

/// RFC 1123, as Azure writes it (for the simulator and tests).
pub fn format_not_before(t: Timestamp) -> String {
    t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn event(v: serde_json::Value) -> Result<Event, (Option<String>, String)> {
    let id = v
        .get("EventId")
        .and_then(|i| i.as_str())
        .map(|s| s.chars().take(64).collect::<String>());
    let raw: RawEvent = serde_json::from_value(v).map_err(|e| (id.clone(), e.to_string()))?;
    // A type or status we do not know, or a time we cannot read, still names this VM: the
    // event is kept (fail closed) and what could not be read is said with it.
    let kind = EventType::parse(&raw.event_type).unwrap_or(EventType::Other);
    let status = match raw.event_status.as_str() {
        "Scheduled" => EventStatus::Scheduled,
        "Started" => EventStatus::Started,
        _ => EventStatus::Other,
    };
    let (not_before, unreadable_not_before) = match parse_not_before(&raw.not_before) {
        Ok(t) => (t, None),
        Err(_) => (None, Some(raw.not_before.chars().take(64).collect())),
    };
    Ok(Event {
        id: raw.event_id,
        kind,
        type_name: raw.event_type,
        resource_type: raw.resource_type,
        resources: raw.resources,
        status,
        not_before,
        unreadable_not_before,
        description: raw.description,
        source: raw.event_source,
        duration_seconds: raw.duration_in_seconds.filter(|d| *d >= 0),
    })
}

impl Event {
    /// What could not be read of it, said once with the event (`None`: all of it was read).
    pub fn doubts(&self) -> Option<String> {
        let mut out = Vec::new();
        if self.kind == EventType::Other {
            out.push(format!(
                "unknown EventType {:?}, kept as an unknown maintenance",
                self.type_name
            ));
        }
        if self.status == EventStatus::Other {
            out.push("unknown EventStatus: kept, never acknowledged".to_owned());
        }
        if let Some(t) = &self.unreadable_not_before {
            out.push(format!(
                "NotBefore {t:?} is not an RFC 1123 time: acting now, with the {}s notice Azure gives a {}",
                self.kind.shortest_notice().as_secs(),
                self.type_name
            ));
        }
        (!out.is_empty()).then(|| out.join("; "))
    }
}

/// The document; an error only when it is not a scheduled-events document at all.
pub fn parse_document(body: &str) -> Result<Document, String> {
    let raw: Raw = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let mut doc = Document {
        incarnation: raw.document_incarnation,
        ..Document::default()
    };
    for v in raw.events {
        match event(v) {
            Ok(e) => doc.events.push(e),
            Err(bad) => doc.malformed.push(bad),
        }
    }
    Ok(doc)
}

/// `{"StartRequests":[{"EventId":"..."}]}`.
pub fn start_requests(ids: &[String]) -> String {
    let list: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| serde_json::json!({ "EventId": id }))
        .collect();
    serde_json::json!({ "StartRequests": list }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in Azure's documentation, with a second, broken event beside it.
    const DOC: &str = r#"{
      "DocumentIncarnation": 3,
      "Events": [
        {
          "EventId": "C7061BAC-AFDC-4513-B24B-AA5F13A16123",
          "EventStatus": "Scheduled",
          "EventType": "Freeze",
          "ResourceType": "VirtualMachine",
          "Resources": ["WestNO_0", "WestNO_1"],
          "NotBefore": "Mon, 11 Apr 2022 22:26:58 GMT",
          "Description": "Virtual machine is being paused because of a memory-preserving Live Migration operation.",
          "EventSource": "Platform",
          "DurationInSeconds": 5
        },
        { "EventId": "bad-1", "EventStatus": "Scheduled", "EventType": "Explode", "Resources": [] },
        { "EventStatus": "Scheduled" }
      ]
    }"#;

    #[test]
    fn the_documented_example_parses_and_a_broken_event_hides_nothing() {
        let d = parse_document(DOC).unwrap();
        assert_eq!(d.incarnation, 3);
        assert_eq!(d.events.len(), 2);
        let e = &d.events[0];
        assert_eq!(e.kind, EventType::Freeze);
        assert_eq!(e.status, EventStatus::Scheduled);
        assert_eq!(e.not_before, Some("2022-04-11T22:26:58Z".parse().unwrap()));
        assert_eq!(e.duration_seconds, Some(5));
        assert_eq!(e.doubts(), None);
        assert!(e.names("westno_0"));
        assert!(e.names_others("WestNO_0"));
        assert!(!e.names("WestNO_2"));
        // An unknown type is kept, as an unknown maintenance, and said.
        let unknown = &d.events[1];
        assert_eq!(
            (unknown.kind, unknown.type_name.as_str()),
            (EventType::Other, "Explode")
        );
        assert!(unknown.doubts().unwrap().contains("Explode"));
        // Without an EventId it is not an event at all.
        assert_eq!(d.malformed.len(), 1);
        assert_eq!(d.malformed[0].0, None);
        assert!(parse_document("{}").is_err());
        assert!(parse_document("<html>").is_err());
        assert_eq!(
            parse_document(r#"{"DocumentIncarnation":0,"Events":[]}"#)
                .unwrap()
                .events
                .len(),
            0
        );
    }

    #[test]
    fn a_preempt_whose_time_cannot_be_read_stands_with_the_shortest_notice() {
        for nb in [
            "tomorrow",
            "2026-12-06T03:20:00Z",
            "Fri, 31 Dec 9999 23:59:60 GMT",
        ] {
            let doc = format!(
                r#"{{"DocumentIncarnation":1,"Events":[{{"EventId":"p","EventStatus":"Scheduled","EventType":"Preempt","Resources":["vm"],"NotBefore":"{nb}"}}]}}"#
            );
            let d = parse_document(&doc).unwrap();
            let e = &d.events[0];
            if e.not_before.is_none() {
                assert_eq!(e.unreadable_not_before.as_deref(), Some(nb));
                assert!(
                    e.doubts().unwrap().contains("30s notice"),
                    "{:?}",
                    e.doubts()
                );
            }
        }
        let odd = parse_document(
            r#"{"DocumentIncarnation":1,"Events":[{"EventId":"s","EventStatus":"Pending","EventType":"Reboot","Resources":["vm"],"NotBefore":""}]}"#,
        )
        .unwrap();
        assert_eq!(odd.events[0].status, EventStatus::Other);
    }

    #[test]
    fn not_before_round_trips_and_may_be_empty() {
        let t: Timestamp = "2026-12-04T10:00:30Z".parse().unwrap();
        let s = format_not_before(t);
        assert_eq!(s, "Fri, 04 Dec 2026 10:00:30 GMT");
        assert_eq!(parse_not_before(&s), Ok(Some(t)));
        assert_eq!(parse_not_before(""), Ok(None));
        assert!(parse_not_before("tomorrow").is_err());
        assert_eq!(
            start_requests(&["a".into(), "b".into()]),
            r#"{"StartRequests":[{"EventId":"a"},{"EventId":"b"}]}"#
        );
    }
}
