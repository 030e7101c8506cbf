//! `EC2 Spot Instance Interruption Warning` and `EC2 Instance Rebalance Recommendation`.
//! The instance comes from `detail.instance-id`, never from the resource ARN (which may carry
//! an availability zone and no account).

use jiff::SignedDuration;
use serde_json::Value;
use sih_core::{Notice, Source};

use super::{Malformed, Parsed, QueueNotice, rfc3339, text};

/// The action happens about two minutes after the warning is emitted.
const SPOT_LEAD: SignedDuration = SignedDuration::from_secs(120);

pub fn interruption(event: &Value) -> Result<Parsed, Malformed> {
    const KIND: &str = "spot interruption warning";
    let instance = text(event, "detail.instance-id", KIND)?;
    let action = text(event, "detail.instance-action", KIND)?;
    if !matches!(action, "terminate" | "stop" | "hibernate") {
        return Err(Malformed::Invalid {
            kind: KIND,
            field: "detail.instance-action",
            value: action.to_owned(),
        });
    }
    let time = rfc3339(text(event, "time", KIND)?, KIND, "time")?;
    let deadline = time + SPOT_LEAD;
    let notice = Notice::spot_interruption(instance, "", time, deadline, Source::Queue);
    Ok(Parsed::Act(vec![QueueNotice::of(notice, time, None)]))
}

pub fn rebalance(event: &Value) -> Result<Parsed, Malformed> {
    const KIND: &str = "rebalance recommendation";
    let instance = text(event, "detail.instance-id", KIND)?;
    let time = rfc3339(text(event, "time", KIND)?, KIND, "time")?;
    let notice = Notice::rebalance(instance, "", time, Source::Queue);
    Ok(Parsed::Act(vec![QueueNotice::of(notice, time, None)]))
}
