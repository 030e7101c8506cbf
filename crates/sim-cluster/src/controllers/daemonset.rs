//! The DaemonSet controller: one pod on every node the template may run on (nodeSelector, node
//! affinity, taints), placed directly on its node. Like the real controller it adds tolerations
//! for cordoned and unhealthy nodes, so a cordon does not evict a DaemonSet's pods.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::is_ready;
use super::replicaset::pod_from_template;
use super::scheduler::{fits, may_stay};
use super::{is_active, name_of, ns_of};
use crate::api::pods;
use crate::error::ApiError;
use crate::resources::{DAEMONSETS, NODES, PODS};
use crate::store::Tx;

const DEFAULT_TOLERATIONS: [(&str, &str); 6] = [
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];

fn daemon_pod(ds: &Value, node: &str) -> Value {
    let mut pod = pod_from_template(ds, format!("{}-", name_of(ds)));
    let tolerations = pod["spec"]["tolerations"]
        .as_array_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut tolerations = tolerations;
    for (key, effect) in DEFAULT_TOLERATIONS {
        if !tolerations
            .iter()
            .any(|t| t["key"] == key && t["effect"] == effect)
        {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": effect}));
        }
    }
    pod["spec"]["tolerations"] = Value::Array(tolerations);
    pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]});
    pod["spec"]["nodeName"] = json!(node);
    pod
}

pub fn reconcile(tx: &mut Tx<'_>) -> Result<(), ApiError> {
    let sets: Vec<_> = tx.view().list(DAEMONSETS, None).cloned().collect();
    if sets.is_empty() {
        return Ok(());
    }
    let nodes: Vec<_> = tx.view().list(NODES, None).cloned().collect();
    for ds in sets {
        let (ns, name) = (ns_of(&ds), name_of(&ds));
        let uid = ds["metadata"]["uid"].as_str().unwrap_or_default();
        let probe = daemon_pod(&ds, "");
        let mut probe = probe;
        probe["spec"]["affinity"] = ds["spec"]["template"]["spec"]["affinity"].clone();
        let mut on_node: HashMap<String, Vec<Value>> = HashMap::new();
        for p in tx
            .view()
            .pods_owned_by(uid)
            .into_iter()
            .filter(|p| is_active(p))
        {
            on_node
                .entry(
                    p["spec"]["nodeName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
                .or_default()
                .push((**p).clone());
        }
        // A node runs the daemon if a new pod may be placed there, or if its pod may stay.
        let eligible: Vec<String> = nodes
            .iter()
            .filter(|n| {
                fits(&probe, n) || (on_node.contains_key(&name_of(n)) && may_stay(&probe, n))
            })
            .map(|n| name_of(n))
            .collect();
        let (mut current, mut ready, mut misscheduled) = (0, 0, 0);
        for node in &eligible {
            match on_node.remove(node) {
                Some(mut pods_here) => {
                    current += 1;
                    if pods_here.iter().any(is_ready) {
                        ready += 1;
                    }
                    for extra in pods_here.drain(1..) {
                        pods::delete(
                            tx,
                            PODS,
                            &ns,
                            &name_of(&extra),
                            &pods::DeleteOptions::default(),
                        )?;
                    }
                }
                None => {
                    tx.create(PODS, &ns, daemon_pod(&ds, node))?;
                }
            }
        }
        for (_, stray) in on_node {
            misscheduled += stray.len();
            for p in stray {
                pods::delete(tx, PODS, &ns, &name_of(&p), &pods::DeleteOptions::default())?;
            }
        }
        let mut new = (*ds).clone();
        new["status"] = json!({
            "desiredNumberScheduled": eligible.len(), "currentNumberScheduled": current, "numberReady": ready,
            "numberAvailable": ready, "numberUnavailable": eligible.len() - ready, "updatedNumberScheduled": current,
            "numberMisscheduled": misscheduled, "observedGeneration": ds["metadata"]["generation"],
        });
        tx.replace(DAEMONSETS, &ns, &name, new)?;
    }
    Ok(())
}
