//! What makes pods special: graceful deletion (a pod on a node stays, marked, until its grace
//! period has passed and the kubelet removes it), eviction under PodDisruptionBudgets, binding.

use serde_json::{Value, json};

use crate::controllers::pdb;
use crate::error::ApiError;
use crate::resources::{NAMESPACES, PDBS, PODS, RESOURCES};
use crate::store::{Obj, Tx};

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub propagation_policy: Option<String>,
}

impl DeleteOptions {
    /// From a `DeleteOptions` body (any may be absent), with query parameters taking precedence.
    pub fn from_body(body: &Value) -> Self {
        let pre = &body["preconditions"];
        Self {
            grace_period_seconds: body["gracePeriodSeconds"].as_i64(),
            uid: pre["uid"].as_str().map(str::to_owned),
            resource_version: pre["resourceVersion"].as_str().map(str::to_owned),
            propagation_policy: body["propagationPolicy"].as_str().map(str::to_owned),
        }
    }
}

fn check_preconditions(current: &Value, opts: &DeleteOptions) -> Result<(), ApiError> {
    let meta = &current["metadata"];
    if let Some(uid) = &opts.uid
        && meta["uid"].as_str() != Some(uid)
    {
        return Err(ApiError::precondition_failed(format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            meta["uid"].as_str().unwrap_or_default()
        )));
    }
    if let Some(rv) = &opts.resource_version
        && meta["resourceVersion"].as_str() != Some(rv)
    {
        return Err(ApiError::precondition_failed(format!(
            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
            meta["resourceVersion"].as_str().unwrap_or_default()
        )));
    }
    Ok(())
}

/// Deletes an object as the API server does; answers the object (marked, or as it was).
pub fn delete(
    tx: &mut Tx<'_>,
    storage: usize,
    ns: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Obj, ApiError> {
    let Some(current) = tx.get(storage, ns, name) else {
        return Err(ApiError::not_found(&RESOURCES[storage].qualified(), name));
    };
    check_preconditions(&current, opts)?;
    if storage == PODS {
        return delete_pod(tx, &current, ns, name, opts.grace_period_seconds);
    }
    if storage == NAMESPACES {
        for (i, r) in RESOURCES.iter().enumerate() {
            if r.namespaced && crate::resources::storage_of(i) == i {
                let names: Vec<String> = tx
                    .view()
                    .list(i, Some(name))
                    .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
                    .collect();
                for n in names {
                    tx.remove(i, name, &n);
                }
            }
        }
    }
    if opts.propagation_policy.as_deref() == Some("Orphan") {
        orphan_dependents(tx, &current)?;
    }
    tx.remove(storage, ns, name)
        .ok_or_else(|| ApiError::not_found(&RESOURCES[storage].qualified(), name))
}

fn delete_pod(
    tx: &mut Tx<'_>,
    pod: &Value,
    ns: &str,
    name: &str,
    grace: Option<i64>,
) -> Result<Obj, ApiError> {
    let grace = grace
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0);
    let unbound = pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
    let terminal = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if grace == 0 || unbound || terminal {
        return tx
            .remove(PODS, ns, name)
            .ok_or_else(|| ApiError::not_found("pods", name));
    }
    // Kept to the millisecond (clients parse fractional RFC 3339): the simulated kubelet removes
    // the pod when its grace period ends, as a real kubelet's own timer would, rather than at a
    // whole second up to a second later.
    let now = jiff::Timestamp::now();
    let deadline = now + std::time::Duration::from_secs(grace as u64);
    // A second delete may shorten the grace period, never lengthen it.
    if let Some(existing) = pod["metadata"]["deletionTimestamp"]
        .as_str()
        .and_then(crate::store::parse_time)
        && existing <= deadline
    {
        return tx
            .get(PODS, ns, name)
            .ok_or_else(|| ApiError::not_found("pods", name));
    }
    tx.mark_deleting(
        PODS,
        ns,
        name,
        &deadline.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        grace,
    )
}

fn orphan_dependents(tx: &mut Tx<'_>, owner: &Value) -> Result<(), ApiError> {
    let uid = owner["metadata"]["uid"].clone();
    for storage in [PODS, crate::resources::REPLICASETS] {
        let dependents: Vec<Obj> = tx
            .view()
            .list(storage, None)
            .filter(|o| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .cloned()
            .collect();
        for d in dependents {
            let mut new = (*d).clone();
            if let Some(refs) = new["metadata"]["ownerReferences"].as_array_mut() {
                refs.retain(|r| r["uid"] != uid);
            }
            let ns = d["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let name = d["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            tx.replace(storage, &ns, &name, new)?;
        }
    }
    Ok(())
}

/// POST `pods/NAME/eviction`: a graceful delete that PodDisruptionBudgets may refuse (429).
pub fn evict(tx: &mut Tx<'_>, ns: &str, name: &str, eviction: &Value) -> Result<Value, ApiError> {
    if let Some(n) = eviction["metadata"]["name"].as_str()
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "name in URL does not match name in Eviction object: {n} != {name}"
        )));
    }
    let Some(pod) = tx.get(PODS, ns, name) else {
        return Err(ApiError::not_found("pods", name));
    };
    let opts = DeleteOptions::from_body(&eviction["deleteOptions"]);
    check_preconditions(&pod, &opts)?;
    let success = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    // Pods that are already going, finished, or never started are not protected by a budget.
    let exempt = pod["metadata"]["deletionTimestamp"].is_string()
        || matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed" | "Pending") | None
        );
    if !exempt {
        let budgets: Vec<Obj> = tx
            .view()
            .list(PDBS, Some(ns))
            .filter(|b| pdb::selects(b, &pod))
            .cloned()
            .collect();
        if budgets.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        if let Some(budget) = budgets.first() {
            check_budget(tx, budget, &pod)?;
        }
    }
    delete_pod(tx, &pod, ns, name, opts.grace_period_seconds)?;
    Ok(success)
}

/// Decides an eviction as the API server does: from the budget's status, kept current by the
/// disruption controller, and spends one allowed disruption in the same write (recording the
/// pod in `disruptedPods`), so concurrent evictions cannot overspend the budget. O(1): the
/// pods are not counted here.
fn check_budget(tx: &mut Tx<'_>, budget: &Obj, pod: &Value) -> Result<(), ApiError> {
    let status = &budget["status"];
    let current = |k: &str| status[k].as_i64().unwrap_or(0);
    let up_to_date = status["observedGeneration"] == budget["metadata"]["generation"];
    // A budget the controller has not seen yet is evaluated now.
    let (allowed, healthy, desired) = if up_to_date {
        (
            current("disruptionsAllowed"),
            current("currentHealthy"),
            current("desiredHealthy"),
        )
    } else {
        let b = pdb::evaluate(tx.view(), budget);
        (b.disruptions_allowed, b.current_healthy, b.desired_healthy)
    };
    let budget_name = budget["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let refuse = || {
        ApiError::disruption_budget(
            &budget_name,
            format!("needs {desired} healthy pods and has {healthy} currently"),
        )
    };
    if !crate::controllers::is_ready(pod) {
        let always = budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
        return if always || healthy >= desired {
            Ok(())
        } else {
            Err(refuse())
        };
    }
    if allowed <= 0 {
        return Err(refuse());
    }
    let mut spent = (**budget).clone();
    spent["status"]["disruptionsAllowed"] = json!(allowed - 1);
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    if !spent["status"]["disruptedPods"].is_object() {
        spent["status"]["disruptedPods"] = json!({});
    }
    spent["status"]["disruptedPods"][pod_name] = json!(crate::store::now_rfc3339());
    let ns = budget["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    tx.replace(PDBS, &ns, &budget_name, spent)?;
    Ok(())
}

/// POST `pods/NAME/binding`: assigns an unscheduled pod to a node.
pub fn bind(tx: &mut Tx<'_>, ns: &str, name: &str, binding: &Value) -> Result<Value, ApiError> {
    let Some(pod) = tx.get(PODS, ns, name) else {
        return Err(ApiError::not_found("pods", name));
    };
    let Some(node) = binding["target"]["name"].as_str().filter(|n| !n.is_empty()) else {
        return Err(ApiError::invalid(
            "pods",
            name,
            "target.name: Required value",
        ));
    };
    if let Some(current) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Err(ApiError::precondition_failed(format!(
            "pod {name} is already assigned to node \"{current}\""
        )));
    }
    let mut new = (*pod).clone();
    new["spec"]["nodeName"] = json!(node);
    tx.replace(PODS, ns, name, new)?;
    Ok(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}
