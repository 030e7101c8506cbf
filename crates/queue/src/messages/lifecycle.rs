//! Auto Scaling lifecycle actions, through EventBridge (`detail`) or sent by Auto Scaling
//! itself (the same fields at the top level, raw or inside SNS). A test notification is
//! ignored.

use serde_json::Value;
use sih_core::{Notice, Source};

use super::{LifecycleAction, Malformed, Parsed, QueueNotice, Transition, rfc3339, text};

const KIND: &str = "lifecycle action";

fn action(fields: &Value, time: &str) -> Result<Parsed, Malformed> {
    let transition = match text(fields, "LifecycleTransition", KIND)? {
        "autoscaling:EC2_INSTANCE_TERMINATING" => Transition::Terminating,
        "autoscaling:EC2_INSTANCE_LAUNCHING" => Transition::Launching,
        other => {
            return Ok(Parsed::Ignore(format!(
                "lifecycle transition {other:?} is not one we act on"
            )));
        }
    };
    let instance = text(fields, "EC2InstanceId", KIND)?;
    let token = text(fields, "LifecycleActionToken", KIND)?;
    let lifecycle = LifecycleAction {
        group: text(fields, "AutoScalingGroupName", KIND)?.to_owned(),
        hook: text(fields, "LifecycleHookName", KIND)?.to_owned(),
        token: token.to_owned(),
        transition,
    };
    let event_time = rfc3339(time, KIND, "time")?;
    // One per instance and transition, as the IMDS agent names a `Terminated` target state;
    // the token travels with the lifecycle action. The deadline is the hook's heartbeat
    // timeout, which the message does not carry.
    let notice = match transition {
        Transition::Terminating => Notice::asg_termination(instance, "", event_time, Source::Queue),
        Transition::Launching => Notice::asg_launch(instance, "", event_time, Source::Queue),
    };
    Ok(Parsed::Act(vec![QueueNotice::of(
        notice,
        event_time,
        Some(lifecycle),
    )]))
}

pub fn eventbridge(event: &Value) -> Result<Parsed, Malformed> {
    let detail = event.get("detail").ok_or(Malformed::Missing {
        kind: KIND,
        field: "detail",
    })?;
    action(detail, text(event, "time", KIND)?)
}

pub fn direct(msg: &Value) -> Result<Parsed, Malformed> {
    if let Some(event) = msg.get("Event").and_then(Value::as_str) {
        if event == "autoscaling:TEST_NOTIFICATION" {
            return Ok(Parsed::Ignore("Auto Scaling test notification".into()));
        }
        if msg.get("LifecycleTransition").is_none() {
            return Ok(Parsed::Ignore(format!(
                "Auto Scaling notification {event:?} is not a lifecycle action"
            )));
        }
    }
    action(msg, text(msg, "Time", KIND)?)
}
