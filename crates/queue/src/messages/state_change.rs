//! `EC2 Instance State-change Notification`: act only on an exact `stopping`, `stopped`,
//! `shutting-down` or `terminated` (NTH matched substrings, so an empty state drained nodes).

use serde_json::Value;
use sih_core::{Notice, Source};

use super::{Malformed, Parsed, QueueNotice, rfc3339, text};

const ACTED_ON: [&str; 4] = ["stopping", "stopped", "shutting-down", "terminated"];

pub fn parse(event: &Value) -> Result<Parsed, Malformed> {
    const KIND: &str = "instance state change";
    let instance = text(event, "detail.instance-id", KIND)?;
    let state = event
        .pointer("/detail/state")
        .and_then(Value::as_str)
        .ok_or(Malformed::Missing {
            kind: KIND,
            field: "detail.state",
        })?;
    if !ACTED_ON.contains(&state) {
        return Ok(Parsed::Ignore(format!(
            "instance {instance} state {state:?} is not one we act on"
        )));
    }
    let time = rfc3339(text(event, "time", KIND)?, KIND, "time")?;
    // One notice per instance whatever the state (`stopping`, then `shutting-down`): the
    // instance is already going, and every message about it joins the same evacuation.
    let notice = Notice::instance_state_change(instance, "", time, time, Source::Queue);
    Ok(Parsed::Act(vec![QueueNotice::of(notice, time, None)]))
}
