//! Defaults the real API server fills in on create, for the fields clients and our controllers
//! read back.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::resources::{
    DAEMONSETS, DEPLOYMENTS, NAMESPACES, PDBS, PODS, PRIORITY_CLASSES, REPLICASETS,
};

/// The built-in PriorityClasses, which every real server has without storing them here.
pub fn priority_of(class: &str) -> Option<i64> {
    match class {
        "system-node-critical" => Some(2_000_001_000),
        "system-cluster-critical" => Some(2_000_000_000),
        _ => None,
    }
}

/// The Priority admission plugin on a pod's create: its `priorityClassName` (or the class
/// marked `globalDefault`) gives `spec.priority` and `spec.preemptionPolicy`; a class that does
/// not exist refuses the pod (403), as a real server does.
pub fn admit_priority(store: &crate::store::Inner, pod: &mut Value) -> Result<(), ApiError> {
    let named = pod["spec"]["priorityClassName"]
        .as_str()
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    let class = match &named {
        Some(name) => match priority_of(name) {
            Some(value) => Some(json!({"value": value})),
            None => match store.get(PRIORITY_CLASSES, "", name) {
                Some(c) => Some((**c).clone()),
                None => {
                    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
                    return Err(ApiError::forbidden(
                        format!(
                            "pods \"{pod_name}\" is forbidden: no PriorityClass with name {name} was found"
                        ),
                        pod_name,
                        "",
                        "pods",
                    ));
                }
            },
        },
        None => store
            .list(PRIORITY_CLASSES, None)
            .find(|c| c["globalDefault"] == true)
            .map(|c| (**c).clone()),
    };
    let spec = &mut pod["spec"];
    if let Some(c) = class {
        if named.is_none()
            && let Some(name) = c["metadata"]["name"].as_str()
        {
            spec["priorityClassName"] = json!(name);
        }
        spec["priority"] = json!(c["value"].as_i64().unwrap_or(0));
        spec["preemptionPolicy"] = c
            .get("preemptionPolicy")
            .filter(|p| p.is_string())
            .cloned()
            .unwrap_or_else(|| json!("PreemptLowerPriority"));
    } else {
        set_if_null(&mut spec["priority"], json!(0));
        set_if_null(&mut spec["preemptionPolicy"], json!("PreemptLowerPriority"));
    }
    Ok(())
}

pub fn apply(storage: usize, obj: &mut Value) {
    match storage {
        PODS => pod(obj),
        DEPLOYMENTS => {
            set_if_null(&mut obj["spec"]["replicas"], json!(1));
            set_if_null(&mut obj["spec"]["revisionHistoryLimit"], json!(10));
            set_if_null(&mut obj["spec"]["progressDeadlineSeconds"], json!(600));
            set_if_null(
                &mut obj["spec"]["strategy"],
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            );
            set_if_null(&mut obj["status"], json!({}));
        }
        REPLICASETS => {
            set_if_null(&mut obj["spec"]["replicas"], json!(1));
            set_if_null(&mut obj["status"], json!({"replicas": 0}));
        }
        DAEMONSETS => {
            set_if_null(
                &mut obj["spec"]["updateStrategy"],
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            set_if_null(
                &mut obj["status"],
                json!({"currentNumberScheduled": 0, "desiredNumberScheduled": 0, "numberMisscheduled": 0, "numberReady": 0}),
            );
        }
        PDBS => set_if_null(
            &mut obj["status"],
            json!({"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0}),
        ),
        NAMESPACES => set_if_null(&mut obj["status"], json!({"phase": "Active"})),
        PRIORITY_CLASSES => {
            set_if_null(&mut obj["preemptionPolicy"], json!("PreemptLowerPriority"))
        }
        _ => {}
    }
}

fn set_if_null(slot: &mut Value, v: Value) {
    if slot.is_null() {
        *slot = v;
    }
}

fn pod(p: &mut Value) {
    let spec = &mut p["spec"];
    set_if_null(&mut spec["terminationGracePeriodSeconds"], json!(30));
    set_if_null(&mut spec["restartPolicy"], json!("Always"));
    set_if_null(&mut spec["schedulerName"], json!("default-scheduler"));
    set_if_null(&mut spec["dnsPolicy"], json!("ClusterFirst"));
    let class = spec["priorityClassName"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    set_if_null(
        &mut spec["priority"],
        json!(priority_of(&class).unwrap_or(0)),
    );
    // What the DefaultTolerationSeconds admission plugin adds to every pod.
    let tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    let mut tolerations = tolerations;
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        if !tolerations.iter().any(|t| t["key"] == key) {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
    spec["tolerations"] = Value::Array(tolerations);
    if let Some(cs) = spec["containers"].as_array_mut() {
        for c in cs {
            set_if_null(&mut c["imagePullPolicy"], json!("IfNotPresent"));
            set_if_null(
                &mut c["terminationMessagePath"],
                json!("/dev/termination-log"),
            );
            set_if_null(&mut c["resources"], json!({}));
        }
    }
    set_if_null(
        &mut p["status"],
        json!({"phase": "Pending", "qosClass": "BestEffort"}),
    );
}
