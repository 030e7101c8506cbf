//! The placeholder mirrors what the scheduler needs of the pod it stands for, and nothing a
//! Service or a fence would see.

use super::*;
use serde_json::json;

fn node() -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": "ip-10-0-1-17.ec2.internal", "uid": "node-uid-1"}
    }))
    .unwrap()
}

/// A Deployment's pod with everything a placement depends on.
fn web() -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": "web-5d9f7c-abcde", "namespace": "shop",
            "labels": {"app": "web", "pod-template-hash": "5d9f7c"},
            "annotations": {"note": "kept off"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9f7c",
                "uid": "rs-1", "controller": true}]
        },
        "spec": {
            "nodeSelector": {"kubernetes.io/arch": "arm64"},
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "shop", "effect": "NoSchedule"},
                {"key": "spot-interrupt-handler/spot-interruption", "operator": "Exists"},
                {"operator": "Exists"}
            ],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}],
            "priorityClassName": "business-critical",
            "priority": 1000,
            "serviceAccountName": "web",
            "initContainers": [{"name": "migrate", "image": "migrate",
                "resources": {"requests": {"cpu": "1", "memory": "64Mi"}}}],
            "containers": [
                {"name": "app", "image": "web", "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}},
                {"name": "proxy", "image": "proxy", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}}}
            ],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }
    }))
    .unwrap()
}

fn with(mut pod: Pod, edit: impl FnOnce(&mut Pod)) -> Pod {
    edit(&mut pod);
    pod
}

fn annotated(value: &str) -> Pod {
    with(web(), |p| {
        p.metadata
            .annotations
            .get_or_insert_default()
            .insert(RESERVE_ANNOTATION.into(), value.into());
    })
}

#[test]
fn a_placeholder_asks_what_its_pod_asks_where_its_pod_may_go() {
    let p = placeholder(&web(), &node(), true, DEFAULT_IMAGE).expect("reserved");
    let spec = p.spec.as_ref().unwrap();
    let original = web().spec.unwrap();
    let requests = spec.containers[0]
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap();
    assert_eq!(
        requests["cpu"].0, "1",
        "the init container's 1 CPU, more than 350m"
    );
    assert_eq!(requests["memory"].0, "268435456", "256Mi");
    assert_eq!(spec.containers.len(), 1);
    assert_eq!(spec.containers[0].image.as_deref(), Some(DEFAULT_IMAGE));
    assert!(
        spec.containers[0]
            .resources
            .as_ref()
            .unwrap()
            .limits
            .is_none()
    );
    assert_eq!(spec.node_selector, original.node_selector);
    assert_eq!(spec.affinity, original.affinity);
    assert_eq!(
        spec.topology_spread_constraints,
        original.topology_spread_constraints
    );
    // Ours, never the workload's: it preempts nothing and anything preempts it.
    assert_eq!(spec.priority_class_name.as_deref(), Some(PRIORITY_CLASS));
    assert_eq!(spec.priority, None, "set by admission from the class");
    assert!(spec.init_containers.is_none() && spec.volumes.is_none());
    assert_eq!(spec.service_account_name, None);
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.termination_grace_period_seconds, Some(0));
}

#[test]
fn a_placeholder_never_tolerates_a_fence_and_never_looks_like_its_workload() {
    let p = placeholder(&web(), &node(), true, DEFAULT_IMAGE).unwrap();
    let keys: Vec<Option<String>> = p
        .spec
        .as_ref()
        .unwrap()
        .tolerations
        .iter()
        .flatten()
        .map(|t| t.key.clone())
        .collect();
    assert_eq!(
        keys,
        [Some("dedicated".to_owned())],
        "neither our taints nor every taint"
    );
    let labels = p.metadata.labels.as_ref().unwrap();
    assert!(!labels.contains_key("app"), "a Service must not select it");
    assert_eq!(labels[ROLE.0], ROLE.1);
    assert_eq!(labels[MANAGED_BY.0], MANAGED_BY.1);
    assert_eq!(labels[FOR_NODE], "ip-10-0-1-17.ec2.internal");
    let annotations = p.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations.len(), 1);
    assert_eq!(annotations[STANDS_FOR], "shop/web-5d9f7c-abcde");
    assert_eq!(p.metadata.namespace.as_deref(), Some("shop"));
}

#[test]
fn a_placeholder_belongs_to_its_node_and_has_one_name_per_pod_and_node() {
    let p = placeholder(&web(), &node(), true, DEFAULT_IMAGE).unwrap();
    let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Node", "ip-10-0-1-17.ec2.internal", "node-uid-1")
    );
    assert_eq!(owner.controller, Some(false));
    let name = p.metadata.name.clone().unwrap();
    assert_eq!(
        name,
        name_for("ip-10-0-1-17.ec2.internal", &web()),
        "stable"
    );
    assert!(name.len() <= 63 && name.starts_with("sih-reserve-"));
    let other = with(web(), |p| p.metadata.name = Some("web-5d9f7c-fghij".into()));
    assert_ne!(name, name_for("ip-10-0-1-17.ec2.internal", &other));
    assert_ne!(name, name_for("ip-10-0-1-18.ec2.internal", &web()));
}

#[test]
fn the_cluster_default_and_the_workloads_own_word_decide() {
    assert_eq!(wanted(&web(), true), Ok(()));
    assert_eq!(wanted(&web(), false), Err(NoReservation::NotAsked));
    assert_eq!(wanted(&annotated("true"), false), Ok(()));
    assert_eq!(wanted(&annotated(" TRUE "), false), Ok(()));
    assert_eq!(
        wanted(&annotated("false"), true),
        Err(NoReservation::OptedOut)
    );
    // Neither: the cluster's default stands.
    assert_eq!(wanted(&annotated("maybe"), true), Ok(()));
    assert_eq!(
        wanted(&annotated("maybe"), false),
        Err(NoReservation::NotAsked)
    );
    assert!(placeholder(&web(), &node(), false, DEFAULT_IMAGE).is_none());
}

#[test]
fn pods_that_are_not_replaced_elsewhere_or_ask_for_nothing_get_none() {
    let daemon = with(web(), |p| {
        p.metadata.owner_references.as_mut().unwrap()[0].kind = "DaemonSet".into()
    });
    assert_eq!(
        wanted(&daemon, true),
        Err(NoReservation::NotReplacedElsewhere)
    );
    let mirror = with(web(), |p| {
        p.metadata
            .annotations
            .get_or_insert_default()
            .insert("kubernetes.io/config.mirror".into(), "x".into());
    });
    assert_eq!(
        wanted(&mirror, true),
        Err(NoReservation::NotReplacedElsewhere)
    );
    let bare = with(web(), |p| p.metadata.owner_references = None);
    assert_eq!(wanted(&bare, true), Err(NoReservation::NoController));
    let best_effort = with(web(), |p| {
        let spec = p.spec.as_mut().unwrap();
        spec.init_containers = None;
        for c in &mut spec.containers {
            c.resources = None;
        }
    });
    assert_eq!(wanted(&best_effort, true), Err(NoReservation::NoRequests));
    let broken = with(web(), |p| {
        let c = &mut p.spec.as_mut().unwrap().containers[0];
        c.resources
            .as_mut()
            .unwrap()
            .requests
            .as_mut()
            .unwrap()
            .insert("cpu".into(), Quantity("a lot".into()));
    });
    assert!(matches!(
        wanted(&broken, true),
        Err(NoReservation::Unreadable(e)) if e.contains("a lot")
    ));
}

#[test]
fn a_placeholder_is_known_as_one_and_stands_for_nothing_itself() {
    let p = placeholder(&web(), &node(), true, DEFAULT_IMAGE).unwrap();
    assert!(is_placeholder(&p));
    assert!(!is_placeholder(&web()));
    // Owned by its node, controlled by nothing: no placeholder for a placeholder.
    assert_eq!(wanted(&p, true), Err(NoReservation::NoController));
    // A drain of the node it landed on takes its Node for its owner: not a pod nobody
    // recreates.
    let facts = crate::drain::facts_of(&p);
    assert_eq!(facts.owner_kind.as_deref(), Some("Node"));
    assert!(!facts.unmanaged());
}

/// The keeper never waits only for its bell: a placeholder a previous life or a cancelled
/// drain asked for may land after its look, and is found long before it is due while creates
/// may still land (after a start or a bell); otherwise it looks at least once a TTL.
#[test]
fn the_keeper_looks_again_soon_after_a_start_then_once_a_ttl_and_when_one_is_due() {
    use std::time::Duration;
    let s = Duration::from_secs;
    let ttl = s(300);
    // Just started, none left: every 5 s while a previous life's creates may land.
    assert_eq!(next_look(s(0), None, ttl), s(5));
    assert_eq!(next_look(LATE_CREATES - s(1), None, ttl), s(5));
    // A short TTL: half of it, so one that lands is found before it is due.
    assert_eq!(next_look(s(0), None, s(4)), s(2));
    // Later, none left: once a TTL.
    assert_eq!(next_look(LATE_CREATES, None, ttl), ttl);
    // One due: a little after it, unless an earlier look is owed.
    assert_eq!(
        next_look(LATE_CREATES + s(10), Some(s(30)), ttl),
        s(30) + Duration::from_millis(100)
    );
    assert_eq!(next_look(s(10), Some(s(30)), ttl), s(5));
    assert_eq!(
        next_look(s(10), Some(Duration::ZERO), ttl),
        Duration::from_millis(100)
    );
}
