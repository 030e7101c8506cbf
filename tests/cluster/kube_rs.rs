//! kube-rs against the simulator: patches, conflicts, selectors, watches, eviction and graceful
//! deletion as a controller written with kube-rs sees them.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::support::{client, cluster, eventually, node_name, web};

fn eviction(name: &str, uid: Option<&str>, grace: Option<i64>) -> serde_json::Value {
    let mut e = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}, "deleteOptions": {}});
    if let Some(uid) = uid {
        e["deleteOptions"]["preconditions"] = json!({"uid": uid});
    }
    if let Some(g) = grace {
        e["deleteOptions"]["gracePeriodSeconds"] = json!(g);
    }
    e
}

/// The name of the first web pod.
async fn first_web_pod(pods: &Api<Pod>) -> String {
    pods.list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap()
}

/// POSTs an Eviction for `name`.
async fn evict(
    pods: &Api<Pod>,
    name: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, kube::Error> {
    pods.create_subresource("eviction", name, &PostParams::default(), &body)
        .await
}

async fn ready_web(pods: &Api<Pod>, n: usize) {
    eventually("web pods ready", Duration::from_secs(10), || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        list.items
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
            .count()
            == n
    })
    .await;
}

#[tokio::test]
async fn strategic_and_merge_patches_of_taints_and_unschedulable() {
    let sim = cluster(1, 1, Some("")).await;
    let nodes: Api<Node> = Api::all(client(&sim).await);
    let n = node_name(0);
    let pp = PatchParams::default();
    nodes
        .patch(&n, &pp, &Patch::Strategic(json!({"spec": {"unschedulable": true, "taints": [{"key": "spot-interrupt-handler/spot-interruption", "value": "abc", "effect": "NoSchedule"}]}})))
        .await
        .unwrap();
    let node = nodes
        .patch(&n, &pp, &Patch::Merge(json!({"metadata": {"labels": {"node.kubernetes.io/exclude-from-external-load-balancers": "spot-interrupt-handler"}}})))
        .await
        .unwrap();
    let spec = node.spec.unwrap();
    assert_eq!(spec.unschedulable, Some(true));
    assert_eq!(spec.taints.unwrap()[0].value.as_deref(), Some("abc"));
    assert!(
        node.metadata
            .labels
            .unwrap()
            .contains_key("node.kubernetes.io/exclude-from-external-load-balancers")
    );
    let patch: json_patch::Patch =
        serde_json::from_value(json!([{"op": "remove", "path": "/spec/taints/0"}])).unwrap();
    let node = nodes
        .patch(&n, &pp, &Patch::<()>::Json(patch))
        .await
        .unwrap();
    assert!(node.spec.unwrap().taints.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn stale_resource_version_is_a_409_conflict() {
    let sim = cluster(1, 0, Some("")).await;
    let nodes: Api<Node> = Api::all(client(&sim).await);
    let n = node_name(0);
    let stale = nodes.get(&n).await.unwrap();
    nodes
        .patch(
            &n,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .unwrap();
    let mut edit = stale.clone();
    edit.metadata
        .labels
        .get_or_insert_default()
        .insert("y".into(), "2".into());
    let err = nodes
        .replace(&n, &PostParams::default(), &edit)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
        "{err}"
    );
    // An optimistic merge patch carrying the stale resourceVersion is refused the same way.
    let rv = stale.metadata.resource_version.unwrap();
    let err = nodes
        .patch(
            &n,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": rv, "labels": {"z": "3"}}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "{err}"
    );
}

#[tokio::test]
async fn field_selectors_list_one_nodes_pods() {
    let sim = cluster(3, 1, Some(&web(6, "maxUnavailable: 1"))).await;
    let pods: Api<Pod> = Api::all(client(&sim).await);
    ready_web(&Api::default_namespaced(client(&sim).await), 6).await;
    let mut total = 0;
    for i in 0..3 {
        let n = node_name(i);
        let on = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={n}")))
            .await
            .unwrap();
        assert!(
            on.items
                .iter()
                .all(|p| p.spec.as_ref().unwrap().node_name.as_deref() == Some(n.as_str()))
        );
        total += on.items.len();
    }
    assert_eq!(total, 9, "6 web pods and 3 daemon pods");
    let running = pods
        .list(&ListParams::default().fields("status.phase=Running,metadata.namespace=kube-system"))
        .await
        .unwrap();
    assert_eq!(running.items.len(), 3);
    let page = pods.list(&ListParams::default().limit(4)).await.unwrap();
    assert_eq!(page.items.len(), 4);
    let rest = pods
        .list(
            &ListParams::default()
                .limit(100)
                .continue_token(page.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 5);
}

#[tokio::test]
async fn watches_of_nodes_and_pods_see_changes() {
    let sim = cluster(2, 1, Some(&web(2, "maxUnavailable: 1"))).await;
    let c = client(&sim).await;
    let nodes: Api<Node> = Api::all(c.clone());
    let n = node_name(1);
    let mut node_events = watcher(
        nodes.clone(),
        watcher::Config::default().fields(&format!("metadata.name={n}")),
    )
    .boxed();
    // The initial listing arrives first.
    loop {
        if let Some(Ok(watcher::Event::InitDone)) = node_events.next().await {
            break;
        }
    }
    nodes
        .patch(
            &n,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = node_events.next().await {
            if let Ok(watcher::Event::Apply(node)) = ev
                && node.spec.and_then(|s| s.unschedulable) == Some(true)
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "the cordon was watched");

    let pods: Api<Pod> = Api::default_namespaced(c);
    let mut stream = pods
        .watch(&kube::api::WatchParams::default().labels("app=web"), "0")
        .await
        .unwrap()
        .boxed();
    let added = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(added, kube::api::WatchEvent::Added(_)));
}

#[tokio::test]
async fn eviction_succeeds_within_budget_and_is_refused_with_429_beyond_it() {
    let sim = cluster(2, 1, Some(&web(2, "maxUnavailable: 1"))).await;
    let c = client(&sim).await;
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    ready_web(&pods, 2).await;
    // With every node cordoned the replacement of an evicted pod cannot run, so the budget
    // stays spent.
    let nodes: Api<Node> = Api::all(c.clone());
    for i in 0..2 {
        nodes
            .patch(
                &node_name(i),
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"unschedulable": true}})),
            )
            .await
            .unwrap();
    }
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    let (a, b) = (&list.items[0], &list.items[1]);
    let (a_name, b_name) = (
        a.metadata.name.clone().unwrap(),
        b.metadata.name.clone().unwrap(),
    );

    // A UID that is not the pod's: the precondition fails.
    let err = evict(&pods, &a_name, eviction(&a_name, Some("not-the-uid"), None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "{err}"
    );

    let ok: serde_json::Value = evict(
        &pods,
        &a_name,
        eviction(&a_name, a.metadata.uid.as_deref(), Some(1)),
    )
    .await
    .unwrap();
    assert_eq!(ok["status"], "Success");
    let evicted = pods.get(&a_name).await.unwrap();
    assert!(
        evicted.metadata.deletion_timestamp.is_some(),
        "evicted pod terminates gracefully"
    );
    assert_eq!(
        evicted.metadata.deletion_grace_period_seconds,
        Some(1),
        "the eviction's grace period is used"
    );

    let err = evict(&pods, &b_name, eviction(&b_name, None, None))
        .await
        .unwrap_err();
    match &err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 429);
            assert_eq!(s.reason, "TooManyRequests");
            assert!(s.message.contains("disruption budget"), "{}", s.message);
        }
        other => panic!("expected 429, got {other}"),
    }
    // The budget's status catches up with the eviction, as the disruption controller's does.
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(c);
    eventually(
        "the budget shows no disruption allowed",
        Duration::from_secs(5),
        || async {
            pdbs.get("web")
                .await
                .unwrap()
                .status
                .is_some_and(|s| s.disruptions_allowed == 0 && s.current_healthy == 1)
        },
    )
    .await;
}

#[tokio::test]
async fn pod_under_two_budgets_cannot_be_evicted() {
    let extra = "---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web-too, namespace: default}\nspec:\n  maxUnavailable: 5\n  selector: {matchLabels: {app: web}}\n";
    let sim = cluster(
        2,
        1,
        Some(&format!("{}{extra}", web(2, "maxUnavailable: 1"))),
    )
    .await;
    let pods: Api<Pod> = Api::default_namespaced(client(&sim).await);
    ready_web(&pods, 2).await;
    let name = first_web_pod(&pods).await;
    let err = evict(&pods, &name, eviction(&name, None, None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 500 && s.message.contains("more than one PodDisruptionBudget")),
        "{err}"
    );
}

#[tokio::test]
async fn graceful_deletion_keeps_the_pod_until_its_grace_period_ends() {
    let sim = cluster(1, 0, Some(&web(1, "maxUnavailable: 1"))).await;
    let pods: Api<Pod> = Api::default_namespaced(client(&sim).await);
    ready_web(&pods, 1).await;
    let name = first_web_pod(&pods).await;
    pods.delete(
        &name,
        &DeleteParams {
            grace_period_seconds: Some(2),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    let marked = pods.get(&name).await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        pods.get_opt(&name).await.unwrap().is_some(),
        "still terminating within its grace period"
    );
    eventually(
        "the pod is gone after its grace period",
        Duration::from_secs(5),
        || async { pods.get_opt(&name).await.unwrap().is_none() },
    )
    .await;
}

#[tokio::test]
async fn controllers_replace_evicted_pods_on_other_nodes() {
    let sim = cluster(3, 1, Some(&web(3, "maxUnavailable: 1"))).await;
    let c = client(&sim).await;
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    ready_web(&pods, 3).await;
    let n = node_name(0);
    let nodes: Api<Node> = Api::all(c.clone());
    nodes
        .patch(
            &n,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    let on_node = pods
        .list(
            &ListParams::default()
                .labels("app=web")
                .fields(&format!("spec.nodeName={n}")),
        )
        .await
        .unwrap();
    assert!(!on_node.items.is_empty());
    for p in &on_node.items {
        let name = p.metadata.name.clone().unwrap();
        evict(&pods, &name, eviction(&name, None, Some(1)))
            .await
            .unwrap();
    }
    let deployments: Api<Deployment> = Api::default_namespaced(c);
    eventually(
        "replicas back on other nodes",
        Duration::from_secs(10),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .unwrap();
            let ready = deployments
                .get("web")
                .await
                .unwrap()
                .status
                .and_then(|s| s.ready_replicas)
                == Some(3);
            ready
                && list
                    .items
                    .iter()
                    .all(|p| p.spec.as_ref().unwrap().node_name.as_deref() != Some(n.as_str()))
        },
    )
    .await;
}

#[tokio::test]
async fn events_written_through_one_api_are_listed_by_the_other() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    let sim = cluster(1, 0, Some("")).await;
    let c = client(&sim).await;
    let n = node_name(0);
    let new: Event = serde_json::from_value(json!({
        "metadata": {"name": "spot.1", "namespace": "default"},
        "regarding": {"kind": "Node", "name": n, "apiVersion": "v1"},
        "reason": "SpotInterruption", "note": "notice seen", "type": "Warning", "action": "Fence",
        "reportingController": "spot-interrupt-handler", "reportingInstance": n,
        "eventTime": "2026-11-23T00:00:00.000000Z",
    }))
    .unwrap();
    Api::<Event>::default_namespaced(c.clone())
        .create(&PostParams::default(), &new)
        .await
        .unwrap();
    let core = Api::<CoreEvent>::default_namespaced(c)
        .list(&ListParams::default().fields(&format!("involvedObject.name={n}")))
        .await
        .unwrap();
    assert_eq!(core.items.len(), 1);
    assert_eq!(core.items[0].reason.as_deref(), Some("SpotInterruption"));
    assert_eq!(core.items[0].message.as_deref(), Some("notice seen"));
}

#[tokio::test]
async fn leases_delete_preconditions_and_orphaning() {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::coordination::v1::Lease;
    let sim = cluster(2, 1, Some(&web(2, "maxUnavailable: 1"))).await;
    let c = client(&sim).await;

    let leases: Api<Lease> = Api::default_namespaced(c.clone());
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "notice-abc"}, "spec": {"holderIdentity": "replica-1", "leaseDurationSeconds": 30}})).unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let err = leases
        .create(&PostParams::default(), &lease)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err}"
    );
    assert_eq!(
        leases
            .get("notice-abc")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some("replica-1")
    );

    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    ready_web(&pods, 2).await;
    let name = first_web_pod(&pods).await;
    let wrong = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("not-it".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let err = pods.delete(&name, &wrong).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.message.contains("Precondition failed")),
        "{err}"
    );

    let deployments: Api<Deployment> = Api::default_namespaced(c.clone());
    deployments
        .delete("web", &DeleteParams::orphan())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sets = Api::<ReplicaSet>::default_namespaced(c)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(
        sets.items.len(),
        1,
        "an orphaned ReplicaSet survives its Deployment"
    );
    assert!(
        sets.items[0]
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(|r| r.is_empty())
    );
}

#[tokio::test]
async fn scheduler_respects_node_capacity_and_reports_unschedulable_pods() {
    let config = sih_sim_cluster::ClusterConfig {
        nodes: 2,
        spot_nodes: 0,
        workload: Some(
            // The Deployment and its budget, without the DaemonSet, so only web pods compete.
            sih_sim_cluster::workload::parse(
                &web(8, "maxUnavailable: 1")
                    .split("---")
                    .take(2)
                    .collect::<Vec<_>>()
                    .join("---"),
            )
            .unwrap(),
        ),
        max_pods: 3,
        pod_start_delay: Duration::from_millis(50),
        ..sih_sim_cluster::ClusterConfig::default()
    };
    let cluster = sih_sim_cluster::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(crate::support::client_for(&cluster));
    eventually("6 pods run, 2 wait", Duration::from_secs(10), || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items;
        let running = list
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        let unschedulable = list
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.reason.as_deref() == Some("Unschedulable"))
                    })
            })
            .count();
        running == 6 && unschedulable == 2
    })
    .await;
}
