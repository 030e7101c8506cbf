//! `AWS Health Event`: only EC2 scheduled changes are acted on, and every affected instance is
//! its own notice (NTH drained only the first). The deadline is `startTime`, written like
//! `Fri, 15 May 2026 10:00:00 GMT`; the id is the communication id with the instance, so the
//! same announcement re-sent is the same notice.
//!
//! Status: an event AWS reports `closed` (or whose `endTime` is not after the message's
//! time) is over and ignored. A `startTime` not after the message's time means the window has
//! already started: the notice has no deadline and the drain gets `--drain-budget`, never
//! "deadline now" with every grace cut to nothing.

use jiff::Timestamp;
use serde_json::Value;
use sih_core::{Notice, Source};

use super::{Malformed, Parsed, QueueNotice, rfc3339, text};

const KIND: &str = "AWS Health event";

fn health_time(s: &str, field: &'static str) -> Result<Timestamp, Malformed> {
    jiff::fmt::rfc2822::parse(s)
        .map(|z| z.timestamp())
        .or_else(|_| s.parse::<Timestamp>())
        .map_err(|_| Malformed::Invalid {
            kind: KIND,
            field,
            value: s.to_owned(),
        })
}

pub fn parse(event: &Value) -> Result<Parsed, Malformed> {
    let service = text(event, "detail.service", KIND)?;
    let category = text(event, "detail.eventTypeCategory", KIND)?;
    if service != "EC2" || category != "scheduledChange" {
        return Ok(Parsed::Ignore(format!(
            "Health event {service} / {category} is not an EC2 scheduled change"
        )));
    }
    let time = rfc3339(text(event, "time", KIND)?, KIND, "time")?;
    let start = health_time(text(event, "detail.startTime", KIND)?, "detail.startTime")?;
    let status = match event.pointer("/detail/statusCode") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(Malformed::Invalid {
                kind: KIND,
                field: "detail.statusCode",
                value: other.to_string(),
            });
        }
    };
    if status == Some("closed") {
        return Ok(Parsed::Ignore("Health event is closed".into()));
    }
    if let Some(end) = event.pointer("/detail/endTime").and_then(Value::as_str) {
        let end = health_time(end, "detail.endTime")?;
        if end <= time {
            return Ok(Parsed::Ignore(format!("Health event ended at {end}")));
        }
    }
    let communication = event
        .pointer("/detail/communicationId")
        .and_then(Value::as_str)
        .or_else(|| event.get("id").and_then(Value::as_str))
        .ok_or(Malformed::Missing {
            kind: KIND,
            field: "detail.communicationId",
        })?;
    let entities = match event.pointer("/detail/affectedEntities") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(a)) => a.as_slice(),
        Some(other) => {
            return Err(Malformed::Invalid {
                kind: KIND,
                field: "detail.affectedEntities",
                value: other.to_string(),
            });
        }
    };
    let instances: Vec<&str> = entities
        .iter()
        .filter_map(|e| e.get("entityValue").and_then(Value::as_str))
        .filter(|v| v.starts_with("i-"))
        .collect();
    if instances.is_empty() {
        return Ok(Parsed::Ignore("Health event names no EC2 instance".into()));
    }
    Ok(Parsed::Act(
        instances
            .into_iter()
            .map(|i| {
                let event = format!("{communication}-{i}");
                // A window already started is no deadline (see the module's rule).
                let deadline = Some(start).filter(|s| *s > time);
                let notice =
                    Notice::scheduled_maintenance(&event, i, "", time, deadline, Source::Queue);
                QueueNotice::of(notice, time, None)
            })
            .collect(),
    ))
}
