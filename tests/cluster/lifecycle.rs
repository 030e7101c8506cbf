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

/// PriorityClasses for the tests below: the placeholders' (as the manifests ship it), one
/// below cluster-autoscaler's expendable cutoff, and two above every workload, one that may
/// preempt and one that may not.
const CLASSES: &str = r#"
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: reservation}
value: -5
preemptionPolicy: Never
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: expendable}
value: -20
preemptionPolicy: Never
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: urgent}
value: 1000
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: urgent-but-polite}
value: 1000
preemptionPolicy: Never
"#;

fn pod_of_class(name: &str, class: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"class": class}},
        "spec": {"priorityClassName": class, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}
    }))
    .unwrap()
}

async fn phase_of(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get_opt(name)
        .await
        .unwrap()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .and_then(|p| p.status?.phase)
}

/// Issue 31: the scheduler places by priority as the real one does. A pod's class gives its
/// priority and preemption policy at create (an unknown class is refused, as the real
/// Priority admission plugin refuses it); on a full node a pod that may preempt takes the
/// place of the lowest-priority pod below it; one whose policy is `Never` waits.
#[tokio::test]
async fn the_scheduler_preempts_lower_priority_pods_unless_told_never() {
    let sim = start_config(ClusterConfig {
        nodes: 1,
        spot_nodes: 0,
        // A DaemonSet pod and three web replicas: full.
        max_pods: 4,
        workload: Some(
            sih_sim_cluster::workload::parse(&format!(
                "{CLASSES}\n---\n{}",
                web(3, "maxUnavailable: 1")
            ))
            .unwrap(),
        ),
        pod_start_delay: Duration::from_millis(50),
        ..ClusterConfig::default()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client(&sim).await, "default");
    eventually("web fills the node", Duration::from_secs(5), || async {
        web_running(&pods).await == 3
    })
    .await;

    let refused = pods
        .create(
            &Default::default(),
            &pod_of_class("nobody", "no-such-class"),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(s) = refused else {
        panic!("{refused}")
    };
    assert_eq!(s.code, 403);
    assert!(
        s.message
            .contains("no PriorityClass with name no-such-class was found"),
        "{}",
        s.message
    );

    let polite = pods
        .create(
            &Default::default(),
            &pod_of_class("polite", "urgent-but-polite"),
        )
        .await
        .unwrap();
    let spec = polite.spec.unwrap();
    assert_eq!(spec.priority, Some(1000));
    assert_eq!(spec.preemption_policy.as_deref(), Some("Never"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(phase_of(&pods, "polite").await.as_deref(), Some("Pending"));
    assert_eq!(web_running(&pods).await, 3, "a polite pod preempts nobody");

    pods.delete("polite", &DeleteParams::default())
        .await
        .unwrap();
    let rude = pods
        .create(&Default::default(), &pod_of_class("rude", "urgent"))
        .await
        .unwrap();
    assert_eq!(
        rude.spec.unwrap().preemption_policy.as_deref(),
        Some("PreemptLowerPriority"),
        "the default policy"
    );
    eventually("the urgent pod runs", Duration::from_secs(10), || async {
        phase_of(&pods, "rude").await.as_deref() == Some("Running")
    })
    .await;
    let web: Vec<Pod> = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    assert!(
        web.iter().any(|p| p.metadata.deletion_timestamp.is_some()
            || p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")),
        "one web pod made room"
    );
}

/// Issue 31: the simulated cluster-autoscaler scales for pending placeholders as for any
/// pending pod, never for pods below its expendable cutoff (-10 by default, as the real one);
/// a workload that needs the room then preempts the placeholders on the new node.
#[tokio::test]
async fn the_autoscaler_scales_for_placeholders_not_for_expendable_pods() {
    let sim = start_config(ClusterConfig {
        nodes: 1,
        spot_nodes: 0,
        // A DaemonSet pod and three web replicas: full.
        max_pods: 4,
        workload: Some(
            sih_sim_cluster::workload::parse(&format!(
                "{CLASSES}\n---\n{}",
                web(3, "maxUnavailable: 1")
            ))
            .unwrap(),
        ),
        pod_start_delay: Duration::from_millis(50),
        autoscaler: Some(
            AutoscalerConfig::parse_flag(
                "group=od,min=0,max=2,scale-up-delay=1s,scale-down-after=1h",
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
    eventually("web fills the node", Duration::from_secs(5), || async {
        web_running(&pods).await == 3
    })
    .await;
    for i in 0..2 {
        pods.create(
            &Default::default(),
            &pod_of_class(&format!("expendable-{i}"), "expendable"),
        )
        .await
        .unwrap();
    }
    // Twice the boot delay: a node asked for at once would be here.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        group_nodes(&nodes).await.is_empty(),
        "no node for expendable pods"
    );

    for i in 0..2 {
        pods.create(
            &Default::default(),
            &pod_of_class(&format!("placeholder-{i}"), "reservation"),
        )
        .await
        .unwrap();
    }
    eventually(
        "a node for the placeholders",
        Duration::from_secs(10),
        || async { group_nodes(&nodes).await.len() == 1 },
    )
    .await;
    eventually(
        "the placeholders run on it",
        Duration::from_secs(10),
        || async {
            let mut n = 0;
            for i in 0..2 {
                n += usize::from(
                    phase_of(&pods, &format!("placeholder-{i}"))
                        .await
                        .as_deref()
                        == Some("Running"),
                );
            }
            n == 2
        },
    )
    .await;

    // Three more web replicas: the new node's places are the placeholders' (and one
    // expendable pod's): the workload preempts them, and needs no third node.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 6}})),
        )
        .await
        .unwrap();
    eventually(
        "every web replica runs",
        Duration::from_secs(10),
        || async { web_running(&pods).await == 6 },
    )
    .await;
    for i in 0..2 {
        assert_ne!(
            phase_of(&pods, &format!("placeholder-{i}"))
                .await
                .as_deref(),
            Some("Running"),
            "placeholder-{i} gave up its place"
        );
    }
    assert_eq!(
        group_nodes(&nodes).await.len(),
        1,
        "no node for what was preempted"
    );
}
