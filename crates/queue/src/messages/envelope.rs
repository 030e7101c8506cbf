//! What kind of message a body is: an EventBridge event (it has `detail-type`), an SNS
//! notification wrapping an Auto Scaling message (`Type: Notification`, the message as a
//! JSON string in `Message`), or an Auto Scaling message sent straight to SQS.

use serde_json::Value;

use super::Malformed;

#[derive(Debug)]
pub enum Envelope {
    EventBridge {
        source: String,
        detail_type: String,
        /// The whole event (`time`, `id`, `detail`, ...).
        event: Value,
    },
    AutoScaling(Value),
}

impl Envelope {
    pub fn of(v: Value) -> Result<Self, Malformed> {
        if !v.is_object() {
            return Err(Malformed::Unrecognized);
        }
        if let Some(dt) = v.get("detail-type") {
            let detail_type = dt.as_str().ok_or(Malformed::Invalid {
                kind: "EventBridge event",
                field: "detail-type",
                value: dt.to_string(),
            })?;
            // Every EventBridge event names its source; one without is not an event we know.
            let source = match v.get("source") {
                Some(Value::String(s)) => s.as_str(),
                other => {
                    return Err(Malformed::Invalid {
                        kind: "EventBridge event",
                        field: "source",
                        value: other.map_or_else(|| "missing".to_owned(), Value::to_string),
                    });
                }
            };
            return Ok(Self::EventBridge {
                source: source.to_owned(),
                detail_type: detail_type.to_owned(),
                event: v.clone(),
            });
        }
        if v.get("Type").and_then(Value::as_str) == Some("Notification") {
            let inner = v
                .get("Message")
                .and_then(Value::as_str)
                .ok_or(Malformed::Missing {
                    kind: "SNS notification",
                    field: "Message",
                })?;
            let inner: Value = serde_json::from_str(inner)
                .map_err(|e| Malformed::NotJson(format!("SNS Message: {e}")))?;
            // Usually Auto Scaling's own message; an EventBridge event routed through SNS is
            // read the same way as one delivered straight.
            return Self::of(inner);
        }
        if v.get("LifecycleTransition").is_some() || v.get("Event").is_some() {
            return Ok(Self::AutoScaling(v));
        }
        Err(Malformed::Unrecognized)
    }
}
