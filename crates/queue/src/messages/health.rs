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

/// `Fri, 15 May 2026 10:00:00 GMT` (or RFC 3339). A weekday that disagrees with its date is
/// read by the date, as RFC 2822 readers do (AWS's own documented example says "Sat, 05 Jun
/// 2016", a Sunday): the time is what the event means, the weekday a courtesy.
fn health_time(s: &str, field: &'static str) -> Result<Timestamp, Malformed> {
    let s = s.trim();
    if let Ok(z) = jiff::fmt::rfc2822::parse(s) {
        return Ok(z.timestamp());
    }
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    if let Some((weekday, rest)) = s.split_once(',')
        && weekday.len() == 3
        && let Ok(z) = jiff::fmt::rfc2822::parse(rest.trim())
    {
        tracing::info!(field, value = s, read_as = %z.timestamp(),
            "AWS Health time: its weekday disagrees with its date; read by the date");
        return Ok(z.timestamp());
    }
    Err(Malformed::Invalid {
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
    // Fields needed only to tell that the event is over: one that cannot be read does not
    // drop an event naming our instances (it is taken as open).
    let status = event.pointer("/detail/statusCode").and_then(Value::as_str);
    if status == Some("closed") {
        return Ok(Parsed::Ignore("Health event is closed".into()));
    }
    if let Some(end) = event.pointer("/detail/endTime").and_then(Value::as_str)
        && let Ok(end) = health_time(end, "detail.endTime")
        && end <= time
    {
        return Ok(Parsed::Ignore(format!("Health event ended at {end}")));
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
