//! The scheduler: binds pending pods to Ready nodes that are schedulable for them (cordon,
//! taints against tolerations, nodeSelector, required node affinity, pod capacity), spreading
//! pods by choosing the least-loaded fitting node. Higher priority first; a pod that fits
//! nowhere preempts, as the real scheduler does: on a node it fits but for capacity, the
//! lowest-priority pod below its own is deleted (its grace kept) and the node is nominated
//! for it — unless its `preemptionPolicy` is `Never`.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Value, json};

use super::{LoopConfig, is_ready, name_of, ns_of};
use crate::error::ApiError;
use crate::resources::{NODES, PODS};
use crate::store::{Key, Obj, Tx, now_rfc3339};

fn tolerates(tolerations: &Value, key: &str, value: &str, effect: &str) -> bool {
    tolerations.as_array().into_iter().flatten().any(|t| {
        let effect_ok = t["effect"]
            .as_str()
            .is_none_or(|e| e.is_empty() || e == effect);
        let key_ok = match t["operator"].as_str().unwrap_or("Equal") {
            "Exists" => t["key"].as_str().is_none_or(|k| k.is_empty() || k == key),
            _ => t["key"].as_str() == Some(key) && t["value"].as_str().unwrap_or_default() == value,
        };
        effect_ok && key_ok
    })
}

/// How many pods `node` takes: its `status.allocatable.pods`, or the cluster's `default`.
pub fn pod_room(node: &Value, default: usize) -> usize {
    node["status"]["allocatable"]["pods"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or(default)
}

/// Whether `pod` may be placed on `node`, ignoring capacity.
pub fn fits(pod: &Value, node: &Value) -> bool {
    placement_allows(pod, node, &["NoSchedule", "NoExecute"])
}

/// Whether a pod already on `node` may stay: only `NoExecute` taints (and selectors) remove
/// running pods; cordons and `NoSchedule` taints only keep new ones away.
pub fn may_stay(pod: &Value, node: &Value) -> bool {
    placement_allows(pod, node, &["NoExecute"])
}

fn placement_allows(pod: &Value, node: &Value, effects: &[&str]) -> bool {
    let spec = &pod["spec"];
    let tolerations = &spec["tolerations"];
    if effects.contains(&"NoSchedule")
        && node["spec"]["unschedulable"] == true
        && !tolerates(
            tolerations,
            "node.kubernetes.io/unschedulable",
            "",
            "NoSchedule",
        )
    {
        return false;
    }
    for taint in node["spec"]["taints"].as_array().into_iter().flatten() {
        let effect = taint["effect"].as_str().unwrap_or_default();
        if !effects.contains(&effect) {
            continue;
        }
        let key = taint["key"].as_str().unwrap_or_default();
        if !tolerates(
            tolerations,
            key,
            taint["value"].as_str().unwrap_or_default(),
            effect,
        ) {
            return false;
        }
    }
    let labels = &node["metadata"]["labels"];
    if let Some(sel) = spec["nodeSelector"].as_object()
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let terms = &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    if let Some(terms) = terms.as_array()
        && !terms.is_empty()
        && !terms.iter().any(|t| term_matches(t, node))
    {
        return false;
    }
    true
}

fn term_matches(term: &Value, node: &Value) -> bool {
    let labels = &node["metadata"]["labels"];
    let exprs_ok = term["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| requirement(e, labels.get(e["key"].as_str().unwrap_or_default())));
    let name = node["metadata"]["name"].clone();
    let fields_ok = term["matchFields"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let v = if e["key"] == "metadata.name" {
                Some(&name)
            } else {
                None
            };
            requirement(e, v)
        });
    exprs_ok && fields_ok
}

fn requirement(e: &Value, actual: Option<&Value>) -> bool {
    let values = e["values"].as_array().cloned().unwrap_or_default();
    match e["operator"].as_str().unwrap_or_default() {
        "In" => actual.is_some_and(|a| values.contains(a)),
        "NotIn" => actual.is_none_or(|a| !values.contains(a)),
        "Exists" => actual.is_some(),
        "DoesNotExist" => actual.is_none(),
        _ => false,
    }
}

/// Binds the pods in `unscheduled` (kept by the control loop from the change feed).
pub fn reconcile(
    tx: &mut Tx<'_>,
    config: &LoopConfig,
    unscheduled: &BTreeSet<Key>,
) -> Result<(), ApiError> {
    let mut pending: Vec<_> = unscheduled
        .iter()
        .filter_map(|(ns, name)| tx.get(PODS, ns, name))
        .filter(|p| {
            p["spec"]["nodeName"].as_str().is_none_or(str::is_empty)
                && p["metadata"]["deletionTimestamp"].is_null()
        })
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    pending.sort_by_key(|p| std::cmp::Reverse(p["spec"]["priority"].as_i64().unwrap_or(0)));
    let nodes: Vec<_> = tx
        .view()
        .list(NODES, None)
        .filter(|n| is_ready(n))
        .cloned()
        .collect();
    let names: Vec<String> = nodes.iter().map(|n| name_of(n)).collect();
    let mut load: Vec<usize> = names
        .iter()
        .map(|name| tx.view().pod_count_on_node(name))
        .collect();
    let room: Vec<usize> = nodes.iter().map(|n| pod_room(n, config.max_pods)).collect();
    // Pods of one template share their placement rules: decide which nodes fit once per
    // distinct rule set, not once per pod (30 000 pods × 1000 nodes otherwise).
    let mut fitting: HashMap<String, Vec<usize>> = HashMap::new();
    // The lowest priority of a pod bound anywhere, read once per pass and only when a pod
    // fits nowhere: a pod at or below it has nothing to preempt (every pod at one priority,
    // the usual cluster, never scans the nodes' pods).
    let mut lowest_bound: Option<i64> = None;
    for pod in pending {
        let spec = &pod["spec"];
        let rules = format!(
            "{}|{}|{}",
            spec["tolerations"], spec["nodeSelector"], spec["affinity"]
        );
        let candidates = fitting.entry(rules).or_insert_with(|| {
            (0..nodes.len())
                .filter(|&i| fits(&pod, &nodes[i]))
                .collect()
        });
        let choice = candidates
            .iter()
            .copied()
            .filter(|&i| load[i] < room[i])
            .min_by_key(|&i| (load[i], &names[i]));
        let mut new = (*pod).clone();
        let now = now_rfc3339();
        match choice {
            Some(i) => {
                load[i] += 1;
                new["spec"]["nodeName"] = json!(names[i]);
                new["status"]["conditions"] =
                    json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": now}]);
            }
            None => {
                let floor = *lowest_bound.get_or_insert_with(|| {
                    tx.view()
                        .list(PODS, None)
                        .filter(|p| {
                            p["spec"]["nodeName"]
                                .as_str()
                                .is_some_and(|n| !n.is_empty())
                        })
                        .map(|p| priority(p))
                        .min()
                        .unwrap_or(i64::MAX)
                });
                let nominated = match preempt(tx, &pod, candidates, floor, &nodes, &mut load)? {
                    Preempted::Bind(i) => {
                        load[i] += 1;
                        new["spec"]["nodeName"] = json!(names[i]);
                        new["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": now}]);
                        if let Some(st) = new["status"].as_object_mut() {
                            st.remove("nominatedNodeName");
                        }
                        tx.replace(PODS, &ns_of(&pod), &name_of(&pod), new)?;
                        continue;
                    }
                    Preempted::Nominated(i) => Some(names[i].clone()),
                    Preempted::Waiting => continue,
                    Preempted::No => None,
                };
                let msg = format!(
                    "0/{} nodes are available: no node fits the pod's cordon, taint, selector and capacity constraints.",
                    nodes.len()
                );
                let same = pod["status"]["conditions"][0]["message"] == msg.as_str()
                    && pod["status"]["nominatedNodeName"].as_str() == nominated.as_deref();
                if same {
                    continue;
                }
                new["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg, "lastTransitionTime": now}]);
                if let Some(n) = nominated {
                    new["status"]["nominatedNodeName"] = json!(n);
                }
            }
        }
        tx.replace(PODS, &ns_of(&pod), &name_of(&pod), new)?;
    }
    Ok(())
}

fn priority(p: &Value) -> i64 {
    p["spec"]["priority"].as_i64().unwrap_or(0)
}

/// What preemption did for a pod that fits nowhere.
enum Preempted {
    /// Its victims went at once (no grace): bind it to this node now.
    Bind(usize),
    /// Victims are stopping on this node, nominated for it: it binds when they are gone.
    Nominated(usize),
    /// Its nominated node's victims are still stopping: nothing more to do yet.
    Waiting,
    /// It may not preempt, or nothing below it would make room.
    No,
}

/// Preemption for `pod`, which fits no node with room: among the `fitting` nodes (placement
/// rules allow it) that are full, the one whose lowest-priority pod is lowest and below the
/// pod's own gives up that pod. `floor`: no bound pod is below it.
fn preempt(
    tx: &mut Tx<'_>,
    pod: &Value,
    fitting: &[usize],
    floor: i64,
    nodes: &[Obj],
    load: &mut [usize],
) -> Result<Preempted, ApiError> {
    let mine = priority(pod);
    if pod["spec"]["preemptionPolicy"] == "Never" || mine <= floor {
        return Ok(Preempted::No);
    }
    // Already nominated, its victims still stopping: wait for them, never preempt twice.
    if let Some(nominated) = pod["status"]["nominatedNodeName"].as_str() {
        let stopping = tx
            .view()
            .pods_on_node(nominated)
            .iter()
            .any(|p| p["metadata"]["deletionTimestamp"].is_string() && priority(p) < mine);
        if stopping {
            return Ok(Preempted::Waiting);
        }
    }
    let victim = fitting
        .iter()
        .filter_map(|&i| {
            let name = name_of(&nodes[i]);
            tx.view()
                .pods_on_node(&name)
                .into_iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && priority(p) < mine)
                .min_by_key(|p| {
                    (
                        priority(p),
                        std::cmp::Reverse(
                            p["metadata"]["creationTimestamp"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                        ),
                    )
                })
                .map(|p| (i, (**p).clone()))
        })
        .min_by_key(|(i, p)| (priority(p), name_of(&nodes[*i])));
    let Some((i, victim)) = victim else {
        return Ok(Preempted::No);
    };
    let (ns, name) = (ns_of(&victim), name_of(&victim));
    tracing::debug!(pod = %name_of(pod), victim = %name, node = %name_of(&nodes[i]), "scheduler: preemption");
    // What the real scheduler writes on its victims, so a watcher can tell a preemption.
    let mut marked = victim.clone();
    let condition = json!({"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
        "message": format!("default-scheduler: preempting to accommodate a higher priority pod ({})", name_of(pod)),
        "lastTransitionTime": now_rfc3339()});
    match marked["status"]["conditions"].as_array_mut() {
        Some(c) => c.push(condition),
        None => marked["status"]["conditions"] = json!([condition]),
    }
    tx.replace(PODS, &ns, &name, marked)?;
    let grace = victim["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap_or(30)
        .max(0);
    if grace == 0 {
        tx.remove(PODS, &ns, &name);
        load[i] = load[i].saturating_sub(1);
        return Ok(Preempted::Bind(i));
    }
    let at = jiff::Timestamp::now() + std::time::Duration::from_secs(grace as u64);
    tx.mark_deleting(
        PODS,
        &ns,
        &name,
        &at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        grace,
    )?;
    Ok(Preempted::Nominated(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Value {
        json!({"metadata": {"name": "n1", "labels": {"lifecycle": "Ec2Spot"}}, "spec": {}})
    }

    #[test]
    fn cordon_taints_selectors_and_affinity() {
        let pod = json!({"spec": {}});
        assert!(fits(&pod, &node()));
        let mut cordoned = node();
        cordoned["spec"]["unschedulable"] = json!(true);
        assert!(!fits(&pod, &cordoned));
        let ds_pod = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}});
        assert!(fits(&ds_pod, &cordoned));

        let mut tainted = node();
        tainted["spec"]["taints"] = json!([{"key": "spot-interrupt-handler/spot-interruption", "value": "n-1", "effect": "NoSchedule"}]);
        assert!(!fits(&pod, &tainted));
        assert!(fits(
            &json!({"spec": {"tolerations": [{"operator": "Exists"}]}}),
            &tainted
        ));
        assert!(fits(
            &json!({"spec": {"tolerations": [{"key": "spot-interrupt-handler/spot-interruption", "operator": "Equal", "value": "n-1"}]}}),
            &tainted
        ));
        assert!(!fits(
            &json!({"spec": {"tolerations": [{"key": "spot-interrupt-handler/spot-interruption", "value": "other"}]}}),
            &tainted
        ));
        let mut soft = node();
        soft["spec"]["taints"] = json!([{"key": "x", "effect": "PreferNoSchedule"}]);
        assert!(fits(&pod, &soft));

        assert!(fits(
            &json!({"spec": {"nodeSelector": {"lifecycle": "Ec2Spot"}}}),
            &node()
        ));
        assert!(!fits(
            &json!({"spec": {"nodeSelector": {"lifecycle": "OnDemand"}}}),
            &node()
        ));
        let pinned = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}}}}});
        assert!(!fits(&pinned, &node()));
    }
}
