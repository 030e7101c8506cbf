//! `AWS Health Event`: only EC2 scheduled changes are acted on, and every affected instance is
//! its own notice (NTH drained only the first). The deadline is `startTime`, written like
//! `Fri, 15 May 2026 10:00:00 GMT`; the id is the communication id with the instance, so the
//! same announcement re-sent is the same notice.

use jiff::Timestamp;
use serde_json::Value;
use sih_core::{Notice, Source};

use super::{Malformed, Parsed, QueueNotice, rfc3339, text};

const KIND: &str = "AWS Health event";

fn health_time(s: &str) -> Result<Timestamp, Malformed> {
    jiff::fmt::rfc2822::parse(s)
        .map(|z| z.timestamp())
        .or_else(|_| s.parse::<Timestamp>())
        .map_err(|_| Malformed::Invalid {
            kind: KIND,
            field: "detail.startTime",
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
    let start = health_time(text(event, "detail.startTime", KIND)?)?;
    let communication = event
        .pointer("/detail/communicationId")
        .and_then(Value::as_str)
        .or_else(|| event.get("id").and_then(Value::as_str))
        .ok_or(Malformed::Missing {
            kind: KIND,
            field: "detail.communicationId",
        })?;
    let instances: Vec<&str> = event
        .pointer("/detail/affectedEntities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
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
                let notice =
                    Notice::scheduled_maintenance(&event, i, "", time, Some(start), Source::Queue);
                QueueNotice::of(notice, time, None)
            })
            .collect(),
    ))
}
