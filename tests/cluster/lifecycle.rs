//! The rest of a reclaim's story in the simulated cluster: the instance ends at its notice's
//! deadline whatever anyone did, and a cluster-autoscaler brings capacity for the pods left
//! waiting and takes idle nodes away.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use sih_sim_cluster::ClusterConfig;
use sih_sim_cluster::controllers::autoscaler::{AutoscalerConfig, GROUP_LABEL};

use crate::faults::control;
use crate::support::{client, cluster, eventually, node_name, start_config, web, web_running};

fn ready(n: &Node) -> Option<String> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

#[tokio::test]
async fn an_instance_ends_at_its_scheduled_time_not_before() {
    let sim = cluster(3, 1, Some(&web(3, "maxUnavailable: 1"))).await;
    let nodes: Api<Node> = Api::all(client(&sim).await);
    let at = jiff::Timestamp::now() + Duration::from_millis(1500);
    let (status, answer) = control(
        &sim,
        "POST",
        &format!("/_sim/nodes/{}/terminate", node_name(0)),
        json!({"at": at.to_string(), "delete_after_seconds": 1}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["terminateAt"].is_string(), "{answer}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let n = nodes.get(&node_name(0)).await.unwrap();
    assert_eq!(
        ready(&n).as_deref(),
        Some("True"),
        "still running before its time"
    );
    eventually("NotReady at its time", Duration::from_secs(3), || async {
        nodes
            .get_opt(&node_name(0))
            .await
            .unwrap()
            .is_some_and(|n| ready(&n).as_deref() == Some("Unknown"))
    })
    .await;
    let ended = jiff::Timestamp::now();
    assert!(ended >= at, "not before its time");
    eventually("the node is deleted", Duration::from_secs(5), || async {
        nodes.get_opt(&node_name(0)).await.unwrap().is_none()
    })
    .await;
    // A time already past ends it now; an unknown node is a 404.
    let past = jiff::Timestamp::now() - Duration::from_secs(5);
    let (status, _) = control(
        &sim,
        "POST",
        &format!("/_sim/nodes/{}/terminate", node_name(1)),
        json!({"at": past.to_string()}),
    )
    .await;
    assert_eq!(status, 200);
    let n = nodes.get(&node_name(1)).await.unwrap();
    assert_eq!(ready(&n).as_deref(), Some("Unknown"));
    let (status, _) = control(
        &sim,
        "POST",
        "/_sim/nodes/nowhere/terminate",
        json!({"at": at.to_string()}),
    )
    .await;
    assert_eq!(status, 404);
}

async fn group_nodes(nodes: &Api<Node>) -> Vec<Node> {
    nodes
        .list(&ListParams::default().labels(&format!("{GROUP_LABEL}=od")))
        .await
        .unwrap()
        .items
}

/// Pods no node can take bring nodes of the group after its boot delay, as many as they need
/// and no more than `max`; idle group nodes go after `scale-down-after`, down to `min`.
#[tokio::test]
async fn the_autoscaler_brings_capacity_for_waiting_pods_and_removes_idle_nodes() {
    let sim = start_config(ClusterConfig {
        nodes: 1,
        spot_nodes: 0,
        // Five places: a DaemonSet pod and four web pods.
        max_pods: 5,
        workload: Some(sih_sim_cluster::workload::parse(&web(2, "maxUnavailable: 1")).unwrap()),
        pod_start_delay: Duration::from_millis(100),
        autoscaler: Some(
            AutoscalerConfig::parse_flag(
                "group=od,min=1,max=3,scale-up-delay=2s,scale-down-after=1s",
            )
            .unwrap(),
        ),
        ..ClusterConfig::default()
    })
    .await;
    let c = client(&sim).await;
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(c, "default");
    eventually("the group's minimum", Duration::from_secs(5), || async {
        group_nodes(&nodes).await.len() == 1
    })
    .await;
    eventually("web runs", Duration::from_secs(5), || async {
        web_running(&pods).await == 2
    })
    .await;
    // 14 replicas on two nodes of 4 places for them: 6 wait, two more nodes take them.
    let scaled = tokio::time::Instant::now();
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 14}})),
        )
        .await
        .unwrap();
    eventually("pods wait", Duration::from_secs(5), || async {
        web_running(&pods).await == 8
    })
    .await;
    assert_eq!(
        group_nodes(&nodes).await.len(),
        1,
        "no node before its boot delay"
    );
    eventually("all 14 run", Duration::from_secs(10), || async {
        web_running(&pods).await == 14
    })
    .await;
    assert!(scaled.elapsed() >= Duration::from_secs(2));
    let group = group_nodes(&nodes).await;
    assert_eq!(group.len(), 3, "as many nodes as the pods need, up to max");
    assert!(group.iter().all(|n| ready(n).as_deref() == Some("True")));
    // More than max would take: the group stays at max, the rest wait.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 20}})),
        )
        .await
        .unwrap();
    eventually("16 run", Duration::from_secs(5), || async {
        web_running(&pods).await == 16
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(group_nodes(&nodes).await.len(), 3, "never past max");
    // Nothing left to run: idle nodes go, down to the minimum; the cluster's own node stays.
    deployments
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("down to the minimum", Duration::from_secs(10), || async {
        group_nodes(&nodes).await.len() == 1
    })
    .await;
    assert!(nodes.get_opt(&node_name(0)).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(group_nodes(&nodes).await.len(), 1, "never below min");
}
