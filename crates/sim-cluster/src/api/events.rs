//! core/v1 and events.k8s.io/v1 Events are one set of objects seen through two APIs, as on a
//! real server. They are stored in the core form and converted at the edge.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::resources::EVENTS_V1;

/// (core/v1 field, events.k8s.io/v1 field)
const FIELDS: [(&str, &str); 12] = [
    ("involvedObject", "regarding"),
    ("related", "related"),
    ("message", "note"),
    ("reason", "reason"),
    ("type", "type"),
    ("reportingComponent", "reportingController"),
    ("reportingInstance", "reportingInstance"),
    ("eventTime", "eventTime"),
    ("action", "action"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
];

fn convert(obj: &Value, to_v1: bool, api_version: &str) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::from(api_version));
    out.insert("kind".into(), Value::from("Event"));
    out.insert("metadata".into(), obj["metadata"].clone());
    for (core, v1) in FIELDS {
        let (from, to) = if to_v1 { (core, v1) } else { (v1, core) };
        if let Some(v) = obj.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    }
    let (count_from, count_to) = if to_v1 {
        ("count", "deprecatedCount")
    } else {
        ("deprecatedCount", "count")
    };
    if let Some(v) = obj.get(count_from).filter(|v| !v.is_null()) {
        out.insert(count_to.into(), v.clone());
    }
    // A series is the same shape in both APIs.
    if let Some(v) = obj.get("series").filter(|v| !v.is_null()) {
        out.insert("series".into(), v.clone());
    }
    Value::Object(out)
}

/// The stored object as the API the request came through shows it: borrowed as it is for every
/// resource but events.k8s.io/v1 Events, so lists and watches copy nothing.
pub fn to_api(resource: usize, stored: &Value) -> Cow<'_, Value> {
    if resource == EVENTS_V1 {
        Cow::Owned(convert(stored, true, "events.k8s.io/v1"))
    } else {
        Cow::Borrowed(stored)
    }
}

/// A request body in the stored form.
pub fn from_api(resource: usize, body: Value) -> Value {
    if resource == EVENTS_V1 {
        convert(&body, false, "v1")
    } else {
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_round_trip_between_apis() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Node", "name": "n1"}, "note": "fenced", "reason": "Fenced", "type": "Normal",
            "reportingController": "spot-interrupt-handler", "reportingInstance": "n1", "eventTime": "2026-11-23T00:00:00.000000Z", "action": "Fence"});
        let core = from_api(EVENTS_V1, v1.clone());
        assert_eq!(core["involvedObject"]["name"], "n1");
        assert_eq!(core["message"], "fenced");
        assert_eq!(core["reportingComponent"], "spot-interrupt-handler");
        assert_eq!(*to_api(EVENTS_V1, &core), v1);
    }
}
