//! The `Table` form that `kubectl get` asks for, with the columns a real server prints per kind
//! (priority 1 columns appear with `-o wide`).

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::resources::RESOURCES;
use crate::store::parse_time;

pub fn wants_table(accept: &str) -> bool {
    accept.contains("as=Table")
}

fn col(name: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": "string", "format": format, "description": "", "priority": priority})
}

pub fn table(resource: usize, objects: &[&Value], rv: u64, cont: Option<String>) -> Value {
    let kind = RESOURCES[resource].kind;
    let columns: Vec<Value> = columns(kind).iter().map(|(n, p)| col(n, *p)).collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| json!({"cells": cells(kind, o), "object": o}))
        .collect();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns, "rows": rows})
}

fn columns(kind: &str) -> &'static [(&'static str, u8)] {
    match kind {
        "Node" => &[
            ("Name", 0),
            ("Status", 0),
            ("Roles", 0),
            ("Age", 0),
            ("Version", 0),
            ("Internal-IP", 1),
            ("External-IP", 1),
            ("OS-Image", 1),
            ("Kernel-Version", 1),
            ("Container-Runtime", 1),
        ],
        "Pod" => &[
            ("Name", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
            ("Nominated Node", 1),
            ("Readiness Gates", 1),
        ],
        "Deployment" => &[
            ("Name", 0),
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Available", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1),
        ],
        "ReplicaSet" => &[
            ("Name", 0),
            ("Desired", 0),
            ("Current", 0),
            ("Ready", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1),
        ],
        "DaemonSet" => &[
            ("Name", 0),
            ("Desired", 0),
            ("Current", 0),
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Available", 0),
            ("Node Selector", 0),
            ("Age", 0),
        ],
        "PodDisruptionBudget" => &[
            ("Name", 0),
            ("Min Available", 0),
            ("Max Unavailable", 0),
            ("Allowed Disruptions", 0),
            ("Age", 0),
        ],
        "Namespace" => &[("Name", 0), ("Status", 0), ("Age", 0)],
        "Event" => &[
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Message", 0),
        ],
        "Lease" => &[("Name", 0), ("Holder", 0), ("Age", 0)],
        _ => &[("Name", 0), ("Age", 0)],
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn n(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn or_none(x: String) -> String {
    if x.is_empty() { "<none>".into() } else { x }
}

/// Kubernetes' short human durations: `45s`, `3m12s`, `25m`, `5h3m`, `20h`, `3d`.
pub fn age(since: &Value) -> String {
    let Some(t) = since.as_str().and_then(parse_time) else {
        return "<unknown>".into();
    };
    let secs = (Timestamp::now().as_second() - t.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{m}m{}s", s % 60),
        s if s < 3 * 3600 => format!("{m}m"),
        s if s < 8 * 3600 => format!("{h}h{}m", m % 60),
        s if s < 48 * 3600 => format!("{h}h"),
        _ => format!("{d}d"),
    }
}

fn selector_string(sel: &Value) -> String {
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", s(v)))
        .collect();
    parts.sort();
    parts.join(",")
}

fn containers(o: &Value) -> (String, String) {
    let cs = o["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<String> = cs.iter().map(|c| s(&c["name"])).collect();
    let images: Vec<String> = cs.iter().map(|c| s(&c["image"])).collect();
    (names.join(","), images.join(","))
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let name = s(&o["metadata"]["name"]);
    let created = age(&o["metadata"]["creationTimestamp"]);
    let cells: Vec<String> = match kind {
        "Node" => {
            let mut status = if crate::controllers::is_ready(o) {
                "Ready".to_owned()
            } else {
                "NotReady".to_owned()
            };
            if o["spec"]["unschedulable"] == true {
                status.push_str(",SchedulingDisabled");
            }
            let addr = |t: &str| {
                o["status"]["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == t)
                    .map(|a| s(&a["address"]))
                    .unwrap_or_else(|| "<none>".into())
            };
            let info = &o["status"]["nodeInfo"];
            vec![
                name,
                status,
                "<none>".into(),
                created,
                s(&info["kubeletVersion"]),
                addr("InternalIP"),
                addr("ExternalIP"),
                s(&info["osImage"]),
                s(&info["kernelVersion"]),
                s(&info["containerRuntimeVersion"]),
            ]
        }
        "Pod" => {
            let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = o["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["ready"] == true)
                .count();
            let restarts: i64 = o["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| n(&c["restartCount"]))
                .sum();
            let status = if o["metadata"]["deletionTimestamp"].is_string() {
                "Terminating".to_owned()
            } else {
                match o["status"]["phase"].as_str() {
                    Some("Succeeded") => "Completed".into(),
                    Some(p) => p.to_owned(),
                    None => "Pending".into(),
                }
            };
            vec![
                name,
                format!("{ready}/{total}"),
                status,
                restarts.to_string(),
                created,
                or_none(s(&o["status"]["podIP"])),
                or_none(s(&o["spec"]["nodeName"])),
                "<none>".into(),
                "<none>".into(),
            ]
        }
        "Deployment" => {
            let (cn, im) = containers(o);
            let st = &o["status"];
            vec![
                name,
                format!("{}/{}", n(&st["readyReplicas"]), n(&o["spec"]["replicas"])),
                n(&st["updatedReplicas"]).to_string(),
                n(&st["availableReplicas"]).to_string(),
                created,
                cn,
                im,
                selector_string(&o["spec"]["selector"]),
            ]
        }
        "ReplicaSet" => {
            let (cn, im) = containers(o);
            let st = &o["status"];
            vec![
                name,
                n(&o["spec"]["replicas"]).to_string(),
                n(&st["replicas"]).to_string(),
                n(&st["readyReplicas"]).to_string(),
                created,
                cn,
                im,
                selector_string(&o["spec"]["selector"]),
            ]
        }
        "DaemonSet" => {
            let st = &o["status"];
            let sel: Vec<String> = o["spec"]["template"]["spec"]["nodeSelector"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", s(v)))
                .collect();
            vec![
                name,
                n(&st["desiredNumberScheduled"]).to_string(),
                n(&st["currentNumberScheduled"]).to_string(),
                n(&st["numberReady"]).to_string(),
                n(&st["updatedNumberScheduled"]).to_string(),
                n(&st["numberAvailable"]).to_string(),
                or_none(sel.join(",")),
                created,
            ]
        }
        "PodDisruptionBudget" => {
            let na = |v: &Value| if v.is_null() { "N/A".to_owned() } else { s(v) };
            vec![
                name,
                na(&o["spec"]["minAvailable"]),
                na(&o["spec"]["maxUnavailable"]),
                n(&o["status"]["disruptionsAllowed"]).to_string(),
                created,
            ]
        }
        "Namespace" => {
            let phase = s(&o["status"]["phase"]);
            vec![
                name,
                if phase.is_empty() {
                    "Active".into()
                } else {
                    phase
                },
                created,
            ]
        }
        "Event" => {
            let last = if o["lastTimestamp"].is_string() {
                &o["lastTimestamp"]
            } else {
                &o["eventTime"]
            };
            let obj = format!(
                "{}/{}",
                s(&o["involvedObject"]["kind"]).to_lowercase(),
                s(&o["involvedObject"]["name"])
            );
            vec![
                age(last),
                s(&o["type"]),
                s(&o["reason"]),
                obj,
                s(&o["message"]),
            ]
        }
        "Lease" => vec![name, or_none(s(&o["spec"]["holderIdentity"])), created],
        _ => vec![name, created],
    };
    cells.into_iter().map(Value::String).collect()
}
