//! The ReplicaSet controller: as many active pods as `spec.replicas`, made from the template;
//! a pod being deleted (an eviction, say) no longer counts, so its replacement starts at once.

use serde_json::{Value, json};

use super::is_ready;
use super::{controller_ref, is_active, name_of, ns_of};
use crate::api::{defaults, pods};
use crate::error::ApiError;
use crate::resources::{PODS, REPLICASETS};
use crate::store::{Obj, Tx};

/// A pod from a workload's template, owned by `owner`.
pub fn pod_from_template(owner: &Value, generate_name: String) -> Value {
    let template = &owner["spec"]["template"];
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": generate_name,
            "labels": template["metadata"]["labels"],
            "annotations": template["metadata"]["annotations"],
            "ownerReferences": [controller_ref(owner)],
        },
        "spec": template["spec"],
    });
    if pod["metadata"]["annotations"].is_null() {
        pod["metadata"]
            .as_object_mut()
            .map(|m| m.remove("annotations"));
    }
    defaults::apply(PODS, &mut pod);
    pod
}

pub fn reconcile(tx: &mut Tx<'_>) -> Result<(), ApiError> {
    let sets: Vec<_> = tx.view().list(REPLICASETS, None).cloned().collect();
    if sets.is_empty() {
        return Ok(());
    }
    for rs in sets {
        let (ns, name) = (ns_of(&rs), name_of(&rs));
        let uid = rs["metadata"]["uid"].as_str().unwrap_or_default();
        let mut active: Vec<Obj> = tx
            .view()
            .pods_owned_by(uid)
            .into_iter()
            .filter(|p| is_active(p))
            .cloned()
            .collect();
        let want = rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        for _ in active.len()..want {
            active.push(tx.create(PODS, &ns, pod_from_template(&rs, format!("{name}-")))?);
        }
        if active.len() > want {
            // Remove the least useful first: unscheduled, then not ready, then the newest.
            active.sort_by_key(|p| {
                (
                    p["spec"]["nodeName"].is_string(),
                    is_ready(p),
                    std::cmp::Reverse(
                        p["metadata"]["creationTimestamp"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                )
            });
            for p in active.drain(..active.len() - want) {
                pods::delete(tx, PODS, &ns, &name_of(&p), &pods::DeleteOptions::default())?;
            }
        }
        let ready = active.iter().filter(|p| is_ready(p)).count();
        let mut new = (*rs).clone();
        new["status"] = json!({
            "replicas": active.len(), "fullyLabeledReplicas": active.len(), "readyReplicas": ready,
            "availableReplicas": ready, "observedGeneration": rs["metadata"]["generation"],
        });
        tx.replace(REPLICASETS, &ns, &name, new)?;
    }
    Ok(())
}
