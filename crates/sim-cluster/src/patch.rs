//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386), strategic merge patch (the
//! fields and directives kubectl and our agent produce), and server-side apply approximated as a
//! strategic merge of the applied configuration (no field ownership).

use serde_json::{Map, Value};

use crate::error::ApiError;

pub const JSON_PATCH: &str = "application/json-patch+json";
pub const MERGE_PATCH: &str = "application/merge-patch+json";
pub const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// Applies a patch body of the given content type to `target`.
pub fn apply(target: &Value, content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let mut out = target.clone();
    match media {
        JSON_PATCH => {
            let ops: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut out, &ops).map_err(|e| ApiError::patch_rejected(&e))?;
        }
        MERGE_PATCH => json_patch::merge(&mut out, &parse_json(body)?),
        STRATEGIC_MERGE_PATCH => strategic_merge(&mut out, &parse_json(body)?),
        APPLY_PATCH => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("apply patch is not UTF-8"))?;
            let applied: Value = serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("invalid apply patch YAML: {e}")))?;
            strategic_merge(&mut out, &applied);
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    }
    Ok(out)
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid patch body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "a merge patch body must be a JSON object",
        ));
    }
    Ok(v)
}

enum ListStrategy {
    /// Elements are matched by this key and merged.
    MergeKey(&'static str),
    /// A set of scalars: union.
    PrimitiveSet,
    Replace,
}

/// The patch strategy of a list field, by its name (Kubernetes' `patchStrategy`/`patchMergeKey`
/// for the types we serve). Unlisted lists are replaced, as `taints` and `tolerations` are.
fn list_strategy(field: &str) -> ListStrategy {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => ListStrategy::MergeKey("name"),
        "ports" => ListStrategy::MergeKey("containerPort"),
        "volumeMounts" => ListStrategy::MergeKey("mountPath"),
        "volumeDevices" => ListStrategy::MergeKey("devicePath"),
        "conditions" => ListStrategy::MergeKey("type"),
        "ownerReferences" => ListStrategy::MergeKey("uid"),
        "hostAliases" => ListStrategy::MergeKey("ip"),
        "topologySpreadConstraints" => ListStrategy::MergeKey("topologyKey"),
        "finalizers" => ListStrategy::PrimitiveSet,
        _ => ListStrategy::Replace,
    }
}

/// Strategic merge of `patch` into `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(pm) = patch else {
        *target = patch.clone();
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(tm) = target else { return };
    if let Some(keep) = pm.get("$retainKeys").and_then(Value::as_array) {
        tm.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k)));
    }
    for (k, v) in pm {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(drop)) = (tm.get_mut(field), v.as_array()) {
                list.retain(|x| !drop.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue; // $setElementOrder/..., $patch, $retainKeys: ordering hints or handled above
        }
        match v {
            Value::Null => {
                tm.remove(k);
            }
            Value::Array(items) => {
                let current = tm.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                merge_list(current, items, list_strategy(k));
            }
            Value::Object(obj) if obj.get("$patch").and_then(Value::as_str) == Some("delete") => {
                tm.remove(k);
            }
            Value::Object(_) => strategic_merge(tm.entry(k.clone()).or_insert(Value::Null), v),
            scalar => {
                tm.insert(k.clone(), scalar.clone());
            }
        }
    }
}

fn merge_list(current: &mut Value, items: &[Value], strategy: ListStrategy) {
    let replace_all = items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    if !current.is_array() || replace_all {
        *current = Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        );
        return;
    }
    let Value::Array(list) = current else { return };
    match strategy {
        ListStrategy::Replace => *list = items.iter().map(strip_directives).collect(),
        ListStrategy::PrimitiveSet => {
            for i in items {
                if !list.contains(i) {
                    list.push(i.clone());
                }
            }
        }
        ListStrategy::MergeKey(key) => {
            for item in items {
                let id = &item[key];
                let pos = list.iter().position(|e| &e[key] == id && !id.is_null());
                if item.get("$patch").and_then(Value::as_str) == Some("delete") {
                    list.retain(|e| &e[key] != id);
                    continue;
                }
                match pos {
                    Some(p) => strategic_merge(&mut list[p], item),
                    None => list.push(strip_directives(item)),
                }
            }
        }
    }
}

/// The value without `$`-directives anywhere in it.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(target: Value, patch: Value) -> Value {
        apply(&target, STRATEGIC_MERGE_PATCH, patch.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn strategic_merge_of_cordon_labels_and_taints_as_kubectl_sends_them() {
        let node = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}});
        let cordoned = smp(node.clone(), json!({"spec": {"unschedulable": true}}));
        assert_eq!(cordoned["spec"]["unschedulable"], true);
        assert_eq!(cordoned["spec"]["taints"].as_array().unwrap().len(), 1);
        let labelled = smp(
            node.clone(),
            json!({"metadata": {"labels": {"b": "2", "a": null}}}),
        );
        assert_eq!(labelled["metadata"]["labels"], json!({"b": "2"}));
        // Taints have no merge strategy: kubectl sends the whole new list.
        let tainted = smp(
            node,
            json!({"spec": {"taints": [{"key": "x", "effect": "NoSchedule"}, {"key": "y", "value": "v", "effect": "NoExecute"}]}}),
        );
        assert_eq!(tainted["spec"]["taints"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_and_honours_directives() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}, "metadata": {"finalizers": ["f1"]}});
        let out = smp(
            pod.clone(),
            json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b", "image": "b:2"}]}, "metadata": {"finalizers": ["f2"]}}),
        );
        assert_eq!(out["spec"]["containers"][0]["image"], "a:1");
        assert_eq!(out["spec"]["containers"][1]["image"], "b:2");
        assert_eq!(out["metadata"]["finalizers"], json!(["f1", "f2"]));
        let deleted = smp(
            pod.clone(),
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        );
        assert_eq!(deleted["spec"]["containers"].as_array().unwrap().len(), 1);
        let replaced = smp(
            pod.clone(),
            json!({"spec": {"$patch": "replace", "containers": [{"name": "c"}]}}),
        );
        assert_eq!(replaced["spec"], json!({"containers": [{"name": "c"}]}));
        let unfinalized = smp(
            pod,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"]}}),
        );
        assert_eq!(unfinalized["metadata"]["finalizers"], json!([]));
    }

    #[test]
    fn merge_and_json_patches() {
        let node = json!({"metadata": {"labels": {"a": "1"}}, "spec": {}});
        let merged = apply(
            &node,
            MERGE_PATCH,
            br#"{"metadata":{"labels":{"a":null,"b":"2"}}}"#,
        )
        .unwrap();
        assert_eq!(merged["metadata"]["labels"], json!({"b": "2"}));
        let patched = apply(&node, JSON_PATCH, br#"[{"op":"add","path":"/spec/unschedulable","value":true},{"op":"test","path":"/metadata/labels/a","value":"1"}]"#).unwrap();
        assert_eq!(patched["spec"]["unschedulable"], true);
        let failed = apply(
            &node,
            JSON_PATCH,
            br#"[{"op":"test","path":"/metadata/labels/a","value":"2"}]"#,
        );
        assert_eq!(failed.unwrap_err().code, 422);
        assert_eq!(apply(&node, JSON_PATCH, b"{}").unwrap_err().code, 400);
        assert_eq!(apply(&node, MERGE_PATCH, b"[1]").unwrap_err().code, 400);
        assert_eq!(apply(&node, "text/plain", b"{}").unwrap_err().code, 415);
        let applied = apply(&node, APPLY_PATCH, b"metadata:\n  labels:\n    c: '3'\n").unwrap();
        assert_eq!(applied["metadata"]["labels"], json!({"a": "1", "c": "3"}));
    }
}
