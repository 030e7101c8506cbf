//! Surge before evict (opt-in): a Deployment annotated `spot-interrupt-handler/surge: "true"`
//! gets as many extra replicas as it has pods on the node before they are evicted, so its
//! Ready replicas never drop below the desired count; the count is restored after the drain.
//!
//! The original count is recorded on the Deployment (`spot-interrupt-handler/surge-restore`)
//! before it is raised, so a drain resumed after a restart restores it, and a second surge
//! never stacks on the first. A Deployment an HPA scales is left alone (the two would fight
//! over `spec.replicas`), as is one for which that cannot be told.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use sih_core::PodFacts;

use crate::NodeError;

/// On a Deployment: `"true"` asks for a surge before its pods leave a node.
pub const SURGE_ANNOTATION: &str = "spot-interrupt-handler/surge";
/// On a Deployment: its replica count before our surge, restored after the drain.
pub const RESTORE_ANNOTATION: &str = "spot-interrupt-handler/surge-restore";
/// On a Deployment: the count our surge raised it to. A record is trusted only while the
/// Deployment still has exactly this many replicas (nobody changed it since).
pub const RAISED_ANNOTATION: &str = "spot-interrupt-handler/surge-raised";

/// The counts of one surge: `(restore_to, raised_to)`, from what the Deployment holds now
/// (`annotations`, `current` replicas) and its pods on the node (`on_node`). A record of an
/// earlier surge (a drain resumed after a restart) is kept, never stacked on; a record we
/// could not have written, or one the Deployment no longer matches, is refused with the
/// reason (told as an Event), never acted on.
pub fn surge_counts(
    annotations: &BTreeMap<String, String>,
    current: i32,
    on_node: usize,
) -> Result<(i32, i32), String> {
    let on_node = i32::try_from(on_node).map_err(|_| "too many pods on the node".to_owned())?;
    let restore = annotations.get(RESTORE_ANNOTATION);
    let raised = annotations.get(RAISED_ANNOTATION);
    let count = |key: &str, v: &str| -> Result<i32, String> {
        v.parse::<i32>()
            .ok()
            .filter(|n| *n >= 0 && n.to_string() == v)
            .ok_or_else(|| format!("{key}: {v:?} is not a replica count we could have written"))
    };
    match (restore, raised) {
        (None, None) => {
            let to = current
                .checked_add(on_node)
                .ok_or_else(|| format!("{current} replicas plus {on_node} do not fit"))?;
            Ok((current, to))
        }
        (Some(r), Some(up)) => {
            let (r, up) = (count(RESTORE_ANNOTATION, r)?, count(RAISED_ANNOTATION, up)?);
            if up != current || r > up {
                return Err(format!(
                    "the recorded surge ({r} raised to {up}) does not match its {current} replicas: someone changed it since; left as it is"
                ));
            }
            Ok((r, up))
        }
        _ => Err(format!(
            "a surge record without its pair ({RESTORE_ANNOTATION} and {RAISED_ANNOTATION}) is not ours to act on; left as it is"
        )),
    }
}

/// One Deployment raised for a drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Surged {
    pub namespace: String,
    pub deployment: String,
    /// The count to restore.
    pub restore_to: i32,
    /// Ready replicas that mean the surge is in place (the original count plus the pods on
    /// the node).
    pub ready_at: i32,
}

impl Surged {
    pub fn name(&self) -> String {
        format!("{}/{}", self.namespace, self.deployment)
    }
}

/// What became of one Deployment that asked for a surge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    Surged(Surged),
    /// Not surged, and why (its pods are evicted as without the annotation).
    Skipped {
        workload: String,
        why: String,
    },
}

async fn bounded<T>(
    timeout: Duration,
    what: &'static str,
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, NodeError> {
    crate::bounded(timeout, what, call)
        .await
        .and_then(|r| r.map_err(NodeError::Api))
}

/// The Deployment each of `pods` belongs to, through its ReplicaSet: `(namespace, name)` →
/// the uids of its pods on the node.
async fn deployments_of(
    client: &kube::Client,
    pods: &[&PodFacts],
    timeout: Duration,
) -> BTreeMap<(String, String), Vec<String>> {
    let mut by_rs: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for p in pods {
        if p.owner_kind.as_deref() == Some("ReplicaSet")
            && let Some(rs) = &p.owner_name
        {
            by_rs
                .entry((p.namespace.clone(), rs.clone()))
                .or_default()
                .push(p.uid.clone());
        }
    }
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for ((ns, rs), uids) in by_rs {
        let api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
        let owner = match bounded(timeout, "get replicaset", api.get(&rs)).await {
            Ok(r) => r
                .metadata
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .find(|o| o.controller == Some(true) && o.kind == "Deployment"),
            Err(e) => {
                tracing::debug!(replicaset = %rs, error = %e, "cannot read a pod's ReplicaSet; no surge for it");
                None
            }
        };
        if let Some(d) = owner {
            out.entry((ns, d.name)).or_default().extend(uids);
        }
    }
    out
}

/// Raises every Deployment among `pods`' owners that asked for a surge. Returns what was done
/// for each that asked, and which pod uids belong to each surged one.
/// Deployments whose labels hold every `key=value` of `selector` (`--surge-selector`) are
/// surged as if annotated. About 100 lines: one pass from the pods to their ReplicaSets to the
/// Deployments, each step bounded and its refusals said, kept together so the pass reads whole.
pub async fn prepare(
    client: &kube::Client,
    pods: &[&PodFacts],
    selector: &BTreeMap<String, String>,
    timeout: Duration,
) -> Vec<(Prepared, Vec<String>)> {
    let mut out = Vec::new();
    for ((ns, name), uids) in deployments_of(client, pods, timeout).await {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let Ok(d) = bounded(timeout, "get deployment", api.get(&name)).await else {
            continue;
        };
        let annotations = d.metadata.annotations.clone().unwrap_or_default();
        let labels = d.metadata.labels.clone().unwrap_or_default();
        let selected =
            !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v));
        let asked = annotations.get(SURGE_ANNOTATION).map(String::as_str);
        let workload = format!("{ns}/{name}");
        if asked != Some("true") && !selected {
            if let Some(v) = asked.filter(|v| !v.eq_ignore_ascii_case("false")) {
                // A value we do not act on is said, not silently ignored.
                out.push((
                    Prepared::Skipped {
                        workload,
                        why: format!("{SURGE_ANNOTATION}: {v:?} is not \"true\""),
                    },
                    Vec::new(),
                ));
            }
            continue;
        }
        let skip = |why: String| {
            (
                Prepared::Skipped {
                    workload: workload.clone(),
                    why,
                },
                Vec::new(),
            )
        };
        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
        match bounded(timeout, "list hpas", hpas.list(&ListParams::default())).await {
            Ok(list)
                if list.items.iter().any(|h| {
                    h.spec.as_ref().is_some_and(|s| {
                        s.scale_target_ref.kind == "Deployment" && s.scale_target_ref.name == name
                    })
                }) =>
            {
                out.push(skip(
                    "a HorizontalPodAutoscaler scales it (the two would fight over its replicas)"
                        .into(),
                ));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                out.push(skip(format!(
                    "cannot tell whether a HorizontalPodAutoscaler scales it: {e}"
                )));
                continue;
            }
        }
        let current = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        // A surge already in place (a drain resumed after a restart) is not stacked; a record
        // that does not add up is not acted on.
        let (restore_to, ready_at) = match surge_counts(&annotations, current, uids.len()) {
            Ok(counts) => counts,
            Err(why) => {
                out.push(skip(why));
                continue;
            }
        };
        let patch = json!({
            "metadata": {"annotations": {
                RESTORE_ANNOTATION: restore_to.to_string(),
                RAISED_ANNOTATION: ready_at.to_string(),
            }},
            "spec": {"replicas": ready_at},
        });
        let params = PatchParams::default();
        match bounded(
            timeout,
            "patch deployment",
            api.patch(&name, &params, &Patch::Merge(&patch)),
        )
        .await
        {
            Ok(_) => out.push((
                Prepared::Surged(Surged {
                    namespace: ns,
                    deployment: name,
                    restore_to,
                    ready_at,
                }),
                uids,
            )),
            Err(e) => out.push(skip(format!("cannot raise its replicas: {e}"))),
        }
    }
    out
}

/// Whether the surge is in place: the Deployment has its raised count of Ready replicas.
pub async fn ready(client: &kube::Client, s: &Surged, timeout: Duration) -> bool {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &s.namespace);
    bounded(timeout, "get deployment", api.get(&s.deployment))
        .await
        .is_ok_and(|d| {
            d.status
                .and_then(|st| st.ready_replicas)
                .is_some_and(|r| r >= s.ready_at)
        })
}

/// Puts the replica count back and removes the record (retried a few times: a count left
/// raised costs capacity, never availability).
pub async fn restore(
    client: &kube::Client,
    s: &Surged,
    timeout: Duration,
) -> Result<(), NodeError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &s.namespace);
    let patch = json!({
        "metadata": {"annotations": {RESTORE_ANNOTATION: null, RAISED_ANNOTATION: null}},
        "spec": {"replicas": s.restore_to},
    });
    let mut last = None;
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        let params = PatchParams::default();
        match bounded(
            timeout,
            "patch deployment",
            api.patch(&s.deployment, &params, &Patch::Merge(&patch)),
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("three attempts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_first_surge_raises_by_the_pods_on_the_node() {
        assert_eq!(surge_counts(&record(&[]), 3, 2), Ok((3, 5)));
        assert!(surge_counts(&record(&[]), i32::MAX, 1).is_err(), "overflow");
    }

    #[test]
    fn a_resumed_surge_keeps_its_record_and_never_stacks() {
        let r = record(&[(RESTORE_ANNOTATION, "3"), (RAISED_ANNOTATION, "5")]);
        assert_eq!(surge_counts(&r, 5, 1), Ok((3, 5)));
    }

    #[test]
    fn a_record_we_could_not_have_written_is_refused() {
        for (restore, raised, current) in [
            ("1000", "1002", 3),
            ("1", "3", 5),
            ("-5", "1", 1),
            ("2147483647", "2147483647", 3),
            ("3", "abc", 3),
            ("03", "5", 5),
            ("6", "5", 5),
        ] {
            let r = record(&[(RESTORE_ANNOTATION, restore), (RAISED_ANNOTATION, raised)]);
            assert!(
                surge_counts(&r, current, 1).is_err(),
                "{restore} {raised} {current}"
            );
        }
        // Half a record (an older release's, or someone's): not ours to act on.
        assert!(surge_counts(&record(&[(RESTORE_ANNOTATION, "1")]), 3, 1).is_err());
    }
}
