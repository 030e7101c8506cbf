//! The Deployment controller: one ReplicaSet per pod template (named by the template's hash),
//! scaled to the Deployment's replicas; older ReplicaSets scaled to zero.

use serde_json::{Value, json};

use super::{controller_ref, controller_uid, name_of, ns_of};
use crate::error::ApiError;
use crate::resources::{DEPLOYMENTS, REPLICASETS};
use crate::store::Tx;

/// A short, stable hash of the pod template (FNV-1a), like `pod-template-hash`.
fn template_hash(template: &Value) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in template.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}").chars().take(10).collect()
}

pub fn reconcile(tx: &mut Tx<'_>) -> Result<(), ApiError> {
    let deployments: Vec<_> = tx.view().list(DEPLOYMENTS, None).cloned().collect();
    for d in deployments {
        let (ns, name) = (ns_of(&d), name_of(&d));
        let uid = d["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
        let hash = template_hash(&d["spec"]["template"]);
        let rs_name = format!("{name}-{hash}");
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        match tx.get(REPLICASETS, &ns, &rs_name) {
            None => {
                let mut template = d["spec"]["template"].clone();
                template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut selector = d["spec"]["selector"].clone();
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let mut labels = d["spec"]["template"]["metadata"]["labels"].clone();
                labels["pod-template-hash"] = json!(hash);
                let rs = json!({
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": rs_name, "labels": labels, "ownerReferences": [controller_ref(&d)]},
                    "spec": {"replicas": replicas, "selector": selector, "template": template},
                    "status": {"replicas": 0},
                });
                tx.create(REPLICASETS, &ns, rs)?;
            }
            Some(rs) if rs["spec"]["replicas"].as_i64() != Some(replicas) => {
                let mut new = (*rs).clone();
                new["spec"]["replicas"] = json!(replicas);
                tx.replace(REPLICASETS, &ns, &rs_name, new)?;
            }
            Some(_) => {}
        }
        let owned: Vec<_> = tx
            .view()
            .list(REPLICASETS, Some(&ns))
            .filter(|r| controller_uid(r) == Some(uid.as_str()))
            .cloned()
            .collect();
        let (mut total, mut ready, mut updated) = (0, 0, 0);
        for rs in &owned {
            let st = &rs["status"];
            total += st["replicas"].as_i64().unwrap_or(0);
            ready += st["readyReplicas"].as_i64().unwrap_or(0);
            if name_of(rs) == rs_name {
                updated = st["replicas"].as_i64().unwrap_or(0);
            } else if rs["spec"]["replicas"].as_i64() != Some(0) {
                let mut old = (**rs).clone();
                old["spec"]["replicas"] = json!(0);
                tx.replace(REPLICASETS, &ns, &name_of(rs), old)?;
            }
        }
        let available = ready >= replicas;
        let mut new = (*d).clone();
        new["status"] = json!({
            "observedGeneration": d["metadata"]["generation"], "replicas": total, "updatedReplicas": updated,
            "readyReplicas": ready, "availableReplicas": ready, "unavailableReplicas": (replicas - ready).max(0),
            "conditions": [
                {"type": "Available", "status": if available { "True" } else { "False" },
                 "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }, "message": ""},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": format!("ReplicaSet \"{rs_name}\" is progressing.")},
            ],
        });
        tx.replace(DEPLOYMENTS, &ns, &name, new)?;
    }
    Ok(())
}
