//! Capacity first (`--reserve-capacity`, issue 31): at a notice that drains a node, one
//! placeholder pod for each pod the drain will move, so that the cluster-autoscaler (or
//! Karpenter) starts the capacity for all of them at once, instead of one budget step at a
//! time; a real replacement preempts its placeholder when it needs the room.
//!
//! This module is the placeholder's shape and the choice of which pods get one: pure, so it is
//! tested as data. What a placeholder is:
//! - the requests the scheduler counts for the pod it stands for (`quantity::effective`), its
//!   nodeSelector, affinity, tolerations and topology spread, so it lands where the
//!   replacement could — never our fence taints' tolerations, so never on a fenced node;
//! - none of its labels (a Service would send traffic to a pause container), only ours;
//! - our PriorityClass (`PRIORITY_CLASS`: below every workload's default 0, above
//!   cluster-autoscaler's expendable cutoff of -10, and `preemptionPolicy: Never`, shipped by
//!   the chart and manifests): it never preempts anything, and anything preempts it;
//! - owned by the Node it stands in for, so it goes with it; named after the node and the pod
//!   it stands for, so two notices (or a restart) reserve once;
//! - a pause container that runs as nobody, with nothing mounted and nothing to do.

mod keep;
pub mod quantity;

pub use keep::{
    CREATES_AT_ONCE, LATE_CREATES, Reservations, ReserveConfig, Reserved, due, expire, keep,
    next_look, release, reserve, selector,
};

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, Node, Pod, PodSecurityContext, PodSpec, ResourceRequirements,
    SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::claim::MANAGED_BY;

/// Our PriorityClass for placeholders.
pub const PRIORITY_CLASS: &str = "spot-interrupt-handler-reservation";
/// Its value: below every workload that leaves it at the default 0, above the
/// cluster-autoscaler's `--expendable-pods-priority-cutoff` default of -10 (pods below it are
/// never scaled for).
pub const PRIORITY: i32 = -5;
/// The pause image a placeholder runs: the one the kubelet itself uses for every pod's
/// sandbox, so nodes usually have it already; a few hundred KiB otherwise.
pub const DEFAULT_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// Marks every placeholder (with `MANAGED_BY`): a restart finds its own by it.
pub const ROLE: (&str, &str) = ("app.kubernetes.io/component", "capacity-reservation");
/// The node a placeholder stands in for (a label value of its name).
pub const FOR_NODE: &str = "spot-interrupt-handler/reserved-for-node";
/// The pod a placeholder stands for: `namespace/name`.
pub const STANDS_FOR: &str = "spot-interrupt-handler/stands-for";
/// A workload's own say (`"true"` or `"false"`), over the cluster's `--reserve-capacity`.
pub const RESERVE_ANNOTATION: &str = "spot-interrupt-handler/reserve-capacity";
/// Every placeholder's name begins so.
pub const NAME_PREFIX: &str = "sih-reserve-";
/// Taint keys of ours: their tolerations are never copied onto a placeholder.
const OUR_TAINTS: &str = "spot-interrupt-handler/";

/// Whether `pod` is one of our placeholders (both our labels).
pub fn is_placeholder(pod: &Pod) -> bool {
    pod.metadata.labels.as_ref().is_some_and(|l| {
        l.get(ROLE.0).map(String::as_str) == Some(ROLE.1)
            && l.get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
    })
}

/// Why a pod gets no placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoReservation {
    /// The cluster does not reserve, and the workload does not ask.
    NotAsked,
    /// The workload's annotation says no.
    OptedOut,
    /// Its DaemonSet puts it on the new node anyway; a mirror pod is the kubelet's.
    NotReplacedElsewhere,
    /// Nobody recreates it: nothing would take the room.
    NoController,
    /// It asks for nothing: there is nothing to reserve.
    NoRequests,
    /// Its requests cannot be read (the quantity is named).
    Unreadable(String),
}

/// Whether `pod` gets a placeholder, with `cluster` the cluster's `--reserve-capacity`. An
/// annotation that is neither `true` nor `false` counts as absent (the drain says so).
pub fn wanted(pod: &Pod, cluster: bool) -> Result<(), NoReservation> {
    let meta = &pod.metadata;
    let asked = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESERVE_ANNOTATION))
        .map(|v| v.trim().to_ascii_lowercase());
    match asked.as_deref() {
        Some("false") => return Err(NoReservation::OptedOut),
        Some("true") => {}
        _ if !cluster => return Err(NoReservation::NotAsked),
        _ => {}
    }
    let owner = meta
        .owner_references
        .as_ref()
        .and_then(|o| o.iter().find(|r| r.controller == Some(true)));
    let mirror = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    match owner.map(|o| o.kind.as_str()) {
        _ if mirror => return Err(NoReservation::NotReplacedElsewhere),
        Some("DaemonSet") => return Err(NoReservation::NotReplacedElsewhere),
        None => return Err(NoReservation::NoController),
        Some(_) => {}
    }
    match requests_of(pod) {
        Ok(r) if r.is_empty() => Err(NoReservation::NoRequests),
        Ok(_) => Ok(()),
        Err(e) => Err(NoReservation::Unreadable(e)),
    }
}

/// What the scheduler counts for `pod`'s containers (its overhead comes with its RuntimeClass).
fn requests_of(pod: &Pod) -> Result<BTreeMap<String, Quantity>, String> {
    let Some(spec) = &pod.spec else {
        return Ok(BTreeMap::new());
    };
    let of = |c: &Container| {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .unwrap_or_default()
    };
    let containers: Vec<_> = spec.containers.iter().map(of).collect();
    let init: Vec<_> = spec.init_containers.iter().flatten().map(of).collect();
    quantity::effective(&containers, &init)
}

/// The placeholder's name: the node's and the pod's, hashed (both may be long), so that the
/// same pod on the same node always reserves under one name.
pub fn name_for(node: &str, pod: &Pod) -> String {
    let key = format!(
        "{node}/{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    format!("{NAME_PREFIX}{:016x}", crate::claim::fnv(&key))
}

/// The placeholder for `pod`, which leaves `node`; `None` when [`wanted`] says no.
pub fn placeholder(pod: &Pod, node: &Node, cluster: bool, image: &str) -> Option<Pod> {
    wanted(pod, cluster).ok()?;
    let requests = requests_of(pod).ok()?;
    let spec = pod.spec.clone().unwrap_or_default();
    let node_name = node.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let stands_for = format!(
        "{namespace}/{}",
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    let tolerations: Vec<_> = spec
        .tolerations
        .unwrap_or_default()
        .into_iter()
        // Never on a node we fenced; a toleration of every taint (no key) goes for the same
        // reason: its pod may sit out a fence, a placeholder must not.
        .filter(|t| t.key.as_deref().is_some_and(|k| !k.starts_with(OUR_TAINTS)))
        .collect();
    let labels = BTreeMap::from([
        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
        (ROLE.0.to_owned(), ROLE.1.to_owned()),
        (
            FOR_NODE.to_owned(),
            sih_core::label_value::label_value(&node_name),
        ),
    ]);
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node_name.clone(),
        uid: node.metadata.uid.clone().unwrap_or_default(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    };
    let container = Container {
        name: "pause".into(),
        image: Some(image.to_owned()),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Some(Pod {
        metadata: ObjectMeta {
            name: Some(name_for(&node_name, pod)),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(STANDS_FOR.to_owned(), stands_for)])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            node_selector: spec.node_selector,
            affinity: spec.affinity,
            tolerations: Some(tolerations),
            topology_spread_constraints: spec.topology_spread_constraints,
            priority_class_name: Some(PRIORITY_CLASS.into()),
            // Its runtime's overhead and placement come with it, at admission.
            runtime_class_name: spec.runtime_class_name,
            // Nothing to stop: it goes at once when preempted or removed.
            termination_grace_period_seconds: Some(0),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65535),
                run_as_group: Some(65535),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests;
