//! What a real API server refuses that a drain handler could write: taints and labels outside
//! the label rules, replica counts that are negative or do not fit an int32, Events whose
//! typed fields are wrong. Written from Kubernetes' validation rules, apart from the product's
//! own code, so that the product's tests meet the same refusals a real cluster gives
//! (docs/reliability.md, "What the real control plane taught us").

use serde_json::Value;

use crate::error::ApiError;
use crate::resources::{DEPLOYMENTS, EVENTS_V1, NODES, REPLICASETS, RESOURCES};

/// The API server's label-value rule (`IsValidLabelValue`).
fn label_value_ok(v: &str) -> bool {
    let b = v.as_bytes();
    v.is_empty()
        || (b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric())
}

/// A qualified name (`prefix/name`): the name part as a label value of 1-63 characters, the
/// optional prefix a DNS subdomain of at most 253.
fn qualified_name_ok(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    !name.is_empty()
        && label_value_ok(name)
        && prefix.is_none_or(|p| {
            !p.is_empty()
                && p.len() <= 253
                && p.bytes().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.')
                })
        })
}

/// Checks `obj` (of `RESOURCES[storage]`) as the API server would before storing it.
pub fn validate(storage: usize, obj: &Value) -> Result<(), ApiError> {
    let res = &RESOURCES[storage];
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let refuse = |msg: String| Err(ApiError::invalid(&res.qualified(), name, msg));
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if !qualified_name_ok(k) {
                return refuse(format!(
                    "metadata.labels: Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                ));
            }
            match v.as_str() {
                Some(v) if label_value_ok(v) => {}
                _ => {
                    return refuse(format!(
                        "metadata.labels: Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63)"
                    ));
                }
            }
        }
    }
    match storage {
        NODES => {
            let taints = obj["spec"]["taints"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut seen = Vec::new();
            for (i, t) in taints.iter().enumerate() {
                let key = t["key"].as_str().unwrap_or_default();
                let value = t["value"].as_str().unwrap_or_default();
                let effect = t["effect"].as_str().unwrap_or_default();
                if !qualified_name_ok(key) {
                    return refuse(format!("spec.taints[{i}].key: Invalid value: \"{key}\""));
                }
                if !label_value_ok(value) {
                    return refuse(format!(
                        "spec.taints[{i}].value: Invalid value: \"{value}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?'), must be no more than 63 characters"
                    ));
                }
                if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
                    return refuse(format!(
                        "spec.taints[{i}].effect: Unsupported value: \"{effect}\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""
                    ));
                }
                if seen.contains(&(key, effect)) {
                    return refuse(format!(
                        "spec.taints[{i}]: Duplicate value: \"{key}\": taints must be unique by key and effect pair"
                    ));
                }
                seen.push((key, effect));
            }
        }
        DEPLOYMENTS | REPLICASETS => {
            let r = &obj["spec"]["replicas"];
            if !r.is_null() {
                match r.as_i64() {
                    Some(n) if n > i64::from(i32::MAX) || n < i64::from(i32::MIN) => {
                        return Err(ApiError::bad_request(format!(
                            "json: cannot unmarshal number {n} into Go struct field .spec.replicas of type int32"
                        )));
                    }
                    Some(n) if n < 0 => {
                        return refuse(format!(
                            "spec.replicas: Invalid value: {n}: must be greater than or equal to 0"
                        ));
                    }
                    Some(_) => {}
                    None => {
                        return Err(ApiError::bad_request(format!(
                            "json: cannot unmarshal {r} into Go struct field .spec.replicas of type int32"
                        )));
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// An events.k8s.io/v1 Event as the API server validates it on create.
pub fn validate_event_v1(obj: &Value) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let refuse = |msg: String| {
        Err(ApiError::invalid(
            &RESOURCES[EVENTS_V1].qualified(),
            name,
            msg,
        ))
    };
    let text = |f: &str| obj[f].as_str().unwrap_or_default();
    if !matches!(text("type"), "Normal" | "Warning") {
        return refuse(format!(
            "type: Unsupported value: \"{}\": supported values: \"Normal\", \"Warning\"",
            text("type")
        ));
    }
    if text("note").len() > 1024 {
        return refuse("note: Too long: may not be more than 1024 bytes".to_owned());
    }
    for f in [
        "reason",
        "action",
        "reportingController",
        "reportingInstance",
    ] {
        if text(f).is_empty() {
            return refuse(format!("{f}: Required value"));
        }
        if text(f).len() > 128 {
            return refuse(format!("{f}: Too long: may not be more than 128 bytes"));
        }
    }
    if obj["eventTime"].is_null() {
        return refuse("eventTime: Required value".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn taints_outside_the_label_rules_are_refused() {
        let node = |value: &str, effect: &str| json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "spot-interrupt-handler/spot-interruption", "value": value, "effect": effect}]}});
        assert!(validate(NODES, &node("i-1-spot", "NoSchedule")).is_ok());
        assert!(validate(NODES, &node(&"x".repeat(64), "NoSchedule")).is_err());
        assert!(validate(NODES, &node("a:b", "NoSchedule")).is_err());
        assert!(validate(NODES, &node("ok", "Sometimes")).is_err());
    }

    #[test]
    fn replicas_must_be_a_non_negative_int32() {
        let d = |r: Value| json!({"metadata": {"name": "d"}, "spec": {"replicas": r}});
        assert!(validate(DEPLOYMENTS, &d(json!(3))).is_ok());
        assert_eq!(validate(DEPLOYMENTS, &d(json!(-5))).unwrap_err().code, 422);
        assert_eq!(
            validate(DEPLOYMENTS, &d(json!(2_147_483_648_i64)))
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(validate(DEPLOYMENTS, &d(json!("3"))).unwrap_err().code, 400);
    }

    #[test]
    fn events_need_their_typed_fields() {
        let good = json!({"metadata": {"name": "e"}, "type": "Normal", "reason": "Fenced", "action": "Fence",
            "reportingController": "c", "reportingInstance": "i", "eventTime": "2026-01-01T00:00:00.000000Z", "note": "x"});
        assert!(validate_event_v1(&good).is_ok());
        let mut bad = good.clone();
        bad["type"] = json!("Info");
        assert!(validate_event_v1(&bad).is_err());
        let mut long = good;
        long["note"] = json!("n".repeat(1025));
        assert!(validate_event_v1(&long).is_err());
    }
}
