//! PodDisruptionBudget arithmetic (shared by the status controller and the eviction handler) and
//! the controller that keeps each budget's status current.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use crate::controllers::is_ready;
use crate::error::ApiError;
use crate::resources::{DAEMONSETS, PDBS, PODS, REPLICASETS};
use crate::selector::LabelSelector;
use crate::store::{Inner, Obj, Store, Tx};

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

/// What a budget's status is computed from: taken under the store's lock (cheap `Arc` clones)
/// and counted outside it, as the real disruption controller counts from its cache.
pub struct Snapshot {
    pdb: Obj,
    pods: Vec<Obj>,
    /// Desired pods of each controller in the namespace, by the controller's uid.
    scales: HashMap<String, i64>,
}

pub fn snapshot(store: &Inner, pdb: &Obj) -> Snapshot {
    let ns = pdb["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut scales = HashMap::new();
    for (kind, field) in [
        (REPLICASETS, "/spec/replicas"),
        (DAEMONSETS, "/status/desiredNumberScheduled"),
    ] {
        for c in store.list(kind, Some(ns)) {
            let uid = c["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
            scales.insert(uid, c.pointer(field).and_then(Value::as_i64).unwrap_or(1));
        }
    }
    Snapshot {
        pdb: pdb.clone(),
        pods: store.list(PODS, Some(ns)).cloned().collect(),
        scales,
    }
}

/// The budget as the disruption controller computes it.
pub fn count(s: &Snapshot) -> Budget {
    let sel = &s.pdb["spec"]["selector"];
    if sel.is_null() {
        return Budget {
            expected: 0,
            current_healthy: 0,
            desired_healthy: 0,
            disruptions_allowed: 0,
        };
    }
    let selector = LabelSelector::from_object(sel);
    let pods: Vec<&Value> = s
        .pods
        .iter()
        .map(|p| &**p)
        .filter(|p| selector.matches(p))
        .collect();
    let current_healthy = pods
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && is_ready(p))
        .count() as i64;
    let spec = &s.pdb["spec"];
    let (expected, desired) = match (&spec["minAvailable"], &spec["maxUnavailable"]) {
        (Value::Number(n), _) => (pods.len() as i64, n.as_i64().unwrap_or(0)),
        (min @ Value::String(_), _) => {
            let expected = controller_scale(&s.scales, &pods);
            (expected, scaled(min, expected).unwrap_or(0))
        }
        (_, max) if !max.is_null() => {
            let expected = controller_scale(&s.scales, &pods);
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

/// Counts a budget now, under the caller's lock (the eviction handler, for a budget the
/// controller has not seen yet).
pub fn evaluate(store: &Inner, pdb: &Obj) -> Budget {
    count(&snapshot(store, pdb))
}

/// The number of pods the selected pods' controllers want: replicas of each ReplicaSet, the
/// scheduled count of each DaemonSet, one for each pod without a controller.
fn controller_scale(scales: &HashMap<String, i64>, pods: &[&Value]) -> i64 {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut total = 0;
    for p in pods {
        match super::controller_uid(p) {
            None => total += 1,
            Some(uid) => {
                if seen.insert(uid) {
                    total += scales.get(uid).copied().unwrap_or(1);
                }
            }
        }
    }
    total
}

/// Recomputes every budget's status: snapshot under the lock, count outside it, then write
/// each status only if the budget did not change meanwhile (an eviction spends the budget in
/// its status; a count from before that must not overwrite it). Returns whether some budget
/// changed meanwhile and must be counted again.
pub fn reconcile(store: &Store) -> Result<bool, ApiError> {
    let snapshots: Vec<Snapshot> =
        store.read(|i| i.list(PDBS, None).map(|p| snapshot(i, p)).collect());
    let counted: Vec<(Obj, Budget)> = snapshots
        .iter()
        .map(|s| (s.pdb.clone(), count(s)))
        .collect();
    drop(snapshots);
    store.write(|tx| {
        let mut stale = false;
        for (pdb, b) in counted {
            let (ns, name) = (super::ns_of(&pdb), super::name_of(&pdb));
            match tx.get(PDBS, &ns, &name) {
                Some(cur)
                    if cur["metadata"]["resourceVersion"] == pdb["metadata"]["resourceVersion"] =>
                {
                    let new = with_status(tx, &cur, &b);
                    tx.replace(PDBS, &ns, &name, new)?;
                }
                Some(_) => stale = true,
                None => {}
            }
        }
        Ok(stale)
    })
}

fn with_status(tx: &Tx<'_>, pdb: &Value, b: &Budget) -> Value {
    let mut new = pdb.clone();
    // A disrupted pod stays listed until it is being deleted or gone.
    let ns = pdb["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut disrupted = pdb["status"]["disruptedPods"].clone();
    if let Some(m) = disrupted.as_object_mut() {
        m.retain(|pod, _| {
            tx.view()
                .get(PODS, ns, pod)
                .is_some_and(|p| p["metadata"]["deletionTimestamp"].is_null())
        });
    }
    let allowed = b.disruptions_allowed > 0;
    let previous = &pdb["status"]["conditions"][0];
    let status_word = if allowed { "True" } else { "False" };
    let since = match previous["lastTransitionTime"].as_str() {
        Some(t) if previous["status"] == status_word => t.to_owned(),
        _ => crate::store::now_rfc3339(),
    };
    new["status"] = json!({
        "observedGeneration": pdb["metadata"]["generation"],
        "expectedPods": b.expected,
        "currentHealthy": b.current_healthy,
        "desiredHealthy": b.desired_healthy,
        "disruptionsAllowed": b.disruptions_allowed,
        "disruptedPods": if disrupted.is_null() { json!({}) } else { disrupted },
        "conditions": [{
            "type": "DisruptionAllowed", "status": status_word,
            "reason": if allowed { "SufficientPods" } else { "InsufficientPods" },
            "message": "", "observedGeneration": pdb["metadata"]["generation"], "lastTransitionTime": since,
        }],
    });
    new
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
