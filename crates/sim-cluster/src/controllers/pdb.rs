//! PodDisruptionBudget arithmetic (shared by the status controller and the eviction handler) and
//! the controller that keeps each budget's status current.

use serde_json::{Value, json};

use crate::api::table::pod_ready;
use crate::error::ApiError;
use crate::resources::{DAEMONSETS, PDBS, PODS, REPLICASETS};
use crate::selector::LabelSelector;
use crate::store::{Inner, Tx};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub expected: i64,
    pub current_healthy: i64,
    pub desired_healthy: i64,
    pub disruptions_allowed: i64,
}

/// Whether a budget's selector picks this pod. In policy/v1 an empty selector selects every
/// pod of the namespace; a missing one selects none.
pub fn selects(pdb: &Value, pod: &Value) -> bool {
    let sel = &pdb["spec"]["selector"];
    !sel.is_null() && LabelSelector::from_object(sel).matches(pod)
}

fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => match s.strip_suffix('%') {
            Some(p) => p.trim().parse::<i64>().ok().map(|p| (p * total + 99) / 100),
            None => s.parse().ok(),
        },
        _ => None,
    }
}

/// The budget as the disruption controller computes it.
pub fn evaluate(store: &Inner, pdb: &Value) -> Budget {
    let ns = pdb["metadata"]["namespace"].as_str().unwrap_or_default();
    let pods: Vec<&Value> = store
        .list(PODS, Some(ns))
        .map(|p| &**p)
        .filter(|p| selects(pdb, p))
        .collect();
    let current_healthy = pods
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && pod_ready(p))
        .count() as i64;
    let spec = &pdb["spec"];
    let (expected, desired) = match (&spec["minAvailable"], &spec["maxUnavailable"]) {
        (Value::Number(n), _) => (pods.len() as i64, n.as_i64().unwrap_or(0)),
        (min @ Value::String(_), _) => {
            let expected = controller_scale(store, ns, &pods);
            (expected, scaled(min, expected).unwrap_or(0))
        }
        (_, max) if !max.is_null() => {
            let expected = controller_scale(store, ns, &pods);
            (
                expected,
                (expected - scaled(max, expected).unwrap_or(0)).max(0),
            )
        }
        _ => (pods.len() as i64, 0),
    };
    Budget {
        expected,
        current_healthy,
        desired_healthy: desired,
        disruptions_allowed: (current_healthy - desired).max(0),
    }
}

/// The number of pods the selected pods' controllers want: replicas of each ReplicaSet, the
/// scheduled count of each DaemonSet, one for each pod without a controller.
fn controller_scale(store: &Inner, ns: &str, pods: &[&Value]) -> i64 {
    let mut seen: Vec<&str> = Vec::new();
    let mut total = 0;
    for p in pods {
        let owner = p["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["controller"] == true);
        let Some(owner) = owner else {
            total += 1;
            continue;
        };
        let uid = owner["uid"].as_str().unwrap_or_default();
        if seen.contains(&uid) {
            continue;
        }
        seen.push(uid);
        let name = owner["name"].as_str().unwrap_or_default();
        total += match owner["kind"].as_str() {
            Some("ReplicaSet") => store
                .get(REPLICASETS, ns, name)
                .and_then(|r| r["spec"]["replicas"].as_i64())
                .unwrap_or(1),
            Some("DaemonSet") => store
                .get(DAEMONSETS, ns, name)
                .and_then(|d| d["status"]["desiredNumberScheduled"].as_i64())
                .unwrap_or(1),
            _ => 1,
        };
    }
    total
}

/// Writes every budget's current status.
pub fn reconcile(tx: &mut Tx<'_>) -> Result<(), ApiError> {
    let pdbs: Vec<_> = tx.view().list(PDBS, None).cloned().collect();
    for pdb in pdbs {
        let b = evaluate(tx.view(), &pdb);
        let mut new = (*pdb).clone();
        // A disrupted pod stays listed until it is being deleted or gone.
        let ns_of_pdb = pdb["metadata"]["namespace"].as_str().unwrap_or_default();
        let mut disrupted = pdb["status"]["disruptedPods"].clone();
        if let Some(m) = disrupted.as_object_mut() {
            m.retain(|pod, _| {
                tx.view()
                    .get(PODS, ns_of_pdb, pod)
                    .is_some_and(|p| p["metadata"]["deletionTimestamp"].is_null())
            });
        }
        new["status"] = json!({
            "observedGeneration": pdb["metadata"]["generation"],
            "expectedPods": b.expected,
            "currentHealthy": b.current_healthy,
            "desiredHealthy": b.desired_healthy,
            "disruptionsAllowed": b.disruptions_allowed,
            "disruptedPods": if disrupted.is_null() { json!({}) } else { disrupted },
            "conditions": [{
                "type": "DisruptionAllowed",
                "status": if b.disruptions_allowed > 0 { "True" } else { "False" },
                "reason": if b.disruptions_allowed > 0 { "SufficientPods" } else { "InsufficientPods" },
                "message": "",
                "observedGeneration": pdb["metadata"]["generation"],
                "lastTransitionTime": pdb["status"]["conditions"][0]["lastTransitionTime"].as_str().map(str::to_owned).unwrap_or_else(crate::store::now_rfc3339),
            }],
        });
        if new["status"]["conditions"][0]["status"] != pdb["status"]["conditions"][0]["status"] {
            new["status"]["conditions"][0]["lastTransitionTime"] =
                json!(crate::store::now_rfc3339());
        }
        let ns = pdb["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = pdb["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        tx.replace(PDBS, &ns, &name, new)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&json!("50%"), 3), Some(2));
        assert_eq!(scaled(&json!("100%"), 4), Some(4));
        assert_eq!(scaled(&json!("0%"), 4), Some(0));
        assert_eq!(scaled(&json!(2), 10), Some(2));
        assert_eq!(scaled(&json!("2"), 10), Some(2));
        assert_eq!(scaled(&json!(null), 10), None);
    }
}
