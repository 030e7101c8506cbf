//! The deadline-aware drain against a live API server and its simulated controllers.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use sih_core::DrainPolicy;
use sih_node::{DrainConfig, Progress};

use crate::support::{
    cluster, deployment, drain, node_name, node_of, running, until_budget_allows, until_running,
};

/// Everything a node carries: a big Deployment, a DaemonSet pod, a mirror pod, an unmanaged
/// pod, an emptyDir pod and a critical pod.
fn mixed_node(node: &str, replicas: usize) -> String {
    format!(
        r#"{deployment}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent, namespace: kube-system}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      containers: [{{name: a, image: busybox}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: static-proxy, namespace: kube-system, annotations: {{kubernetes.io/config.mirror: "abc"}}}}
spec:
  nodeName: {node}
  containers: [{{name: p, image: proxy}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: lonely, namespace: default, labels: {{app: lonely}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers: [{{name: l, image: busybox}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: cache, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: cache}}}}
  template:
    metadata: {{labels: {{app: cache}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      terminationGracePeriodSeconds: 1
      volumes: [{{name: scratch, emptyDir: {{}}}}]
      containers: [{{name: c, image: redis}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: dns, namespace: kube-system}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: dns}}}}
  template:
    metadata: {{labels: {{app: dns}}}}
    spec:
      priorityClassName: system-cluster-critical
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      terminationGracePeriodSeconds: 1
      containers: [{{name: d, image: coredns}}]
"#,
        deployment = deployment("web", replicas, 1, "maxUnavailable: \"10%\""),
    )
}

fn count<F: Fn(&Progress) -> bool>(events: &[Progress], f: F) -> usize {
    events.iter().filter(|e| f(e)).count()
}

#[tokio::test]
async fn drains_110_pods_critical_last_and_leaves_what_must_stay() {
    let n0 = node_name(0);
    // Two nodes with room for everything on either; the web pods spread over both.
    let (_c, client) = cluster(2, 260, &mixed_node(&n0, 224)).await;
    until_running(&client, "app=web", 224).await;
    until_budget_allows(&client, "web").await;
    let on_node: Vec<Pod> = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={n0}")))
        .await
        .unwrap()
        .items;
    let evictable = on_node.len() - 2; // the DaemonSet pod and the mirror pod stay
    assert!(
        evictable >= 110,
        "the node carries {evictable} pods to move"
    );

    // Fence first, as every notice does, so replacements go elsewhere.
    let now = jiff::Timestamp::now();
    let spot = sih_core::Carried::new(sih_core::Notice::spot_interruption(
        "i-1",
        &n0,
        now,
        now,
        sih_core::Source::Imds,
    ));
    sih_node::fence(
        &Api::all(client.clone()),
        &n0,
        sih_core::Source::Imds,
        &[spot],
        &sih_core::PlanRules::default(),
        sih_node::API_TIMEOUT,
    )
    .await
    .unwrap();
    let cfg = DrainConfig {
        policy: DrainPolicy {
            margin: Duration::from_secs(1),
            ..DrainPolicy::default()
        },
        ..DrainConfig::default()
    };
    let (report, events) = drain(&client, &n0, Duration::from_secs(60), cfg).await;
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(report.evicted, evictable, "{report:?}");
    assert_eq!(report.deleted_at_deadline, 0);
    assert!(report.slack_ms > 0);
    assert_eq!(count(&events, |e| matches!(e, Progress::Skipped { .. })), 2);
    let warnings: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Progress::Warning { pod, reason } => Some(format!("{pod}: {reason}")),
            _ => None,
        })
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("default/lonely") && w.contains("no controller")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("default/cache") && w.contains("emptyDir")),
        "{warnings:?}"
    );
    let evictions: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Progress::Evicted { pod, .. } => Some(pod.name.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        evictions.last().unwrap().starts_with("dns-"),
        "the critical pod leaves last: {:?}",
        &evictions[evictions.len() - 3..]
    );
    assert_eq!(
        count(&events, |e| matches!(e, Progress::Gone { .. })),
        evictable
    );

    until_running(&client, "app=web", 224).await;
    assert!(
        running(&client, "app=web")
            .await
            .iter()
            .all(|p| node_of(p) != n0),
        "replicas run elsewhere"
    );
    // The pods pinned to the fenced node wait (Pending) rather than return to it.
    assert!(running(&client, "app=cache").await.is_empty());
}

#[tokio::test]
async fn budget_that_never_allows_is_deleted_at_the_deadline_or_waited_for() {
    let yaml = deployment("db", 1, 2, "maxUnavailable: 0");
    let (_c, client) = cluster(2, 110, &yaml).await;
    until_running(&client, "app=db", 1).await;
    let node = node_of(&running(&client, "app=db").await[0]);

    // `wait`: the budget is respected to the end; the drain fails and says why.
    let wait = DrainConfig {
        policy: DrainPolicy {
            margin: Duration::from_secs(1),
            delete_at_deadline: false,
            ..DrainPolicy::default()
        },
        ..DrainConfig::default()
    };
    let (report, events) = drain(&client, &node, Duration::from_secs(3), wait).await;
    assert!(!report.succeeded());
    assert_eq!(report.remaining.len(), 1);
    assert!(
        report.budget_refusals >= 2,
        "retried with backoff: {report:?}"
    );
    assert!(events.iter().any(
        |e| matches!(e, Progress::Failed { reason, .. } if reason.contains("PodDisruptionBudget"))
    ));

    // `delete`: retried until its own 2 s grace (+1 s margin) no longer fits, then deleted with
    // the time that is left.
    let delete = DrainConfig {
        policy: DrainPolicy {
            margin: Duration::from_secs(1),
            ..DrainPolicy::default()
        },
        ..DrainConfig::default()
    };
    let started = tokio::time::Instant::now();
    let (report, events) = drain(&client, &node, Duration::from_secs(6), delete).await;
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(report.deleted_at_deadline, 1);
    let grace = events
        .iter()
        .find_map(|e| match e {
            Progress::DeletedAtDeadline { grace, .. } => Some(*grace),
            _ => None,
        })
        .unwrap();
    assert_eq!(grace, 2, "the pod still got its whole grace period");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "not deleted before it had to be"
    );
    assert!(report.slack_ms >= 0, "gone before the deadline: {report:?}");
}

#[tokio::test]
async fn grace_longer_than_the_time_left_is_clamped() {
    let yaml = deployment("slow", 1, 300, "maxUnavailable: 1");
    let (_c, client) = cluster(2, 110, &yaml).await;
    until_running(&client, "app=slow", 1).await;
    until_budget_allows(&client, "slow").await;
    let node = node_of(&running(&client, "app=slow").await[0]);
    let cfg = DrainConfig {
        policy: DrainPolicy {
            margin: Duration::from_secs(1),
            ..DrainPolicy::default()
        },
        ..DrainConfig::default()
    };
    let (report, events) = drain(&client, &node, Duration::from_secs(4), cfg).await;
    let grace = events
        .iter()
        .find_map(|e| match e {
            Progress::Evicted { grace, .. } => Some(*grace),
            _ => None,
        })
        .unwrap();
    assert!(
        (1..=3).contains(&grace),
        "300 s clamped to the time left minus the margin, got {grace}"
    );
    assert!(report.succeeded(), "{report:?}");
}

#[tokio::test]
async fn a_second_drain_after_a_crash_continues_without_evicting_replacements() {
    let n0 = node_name(0);
    let yaml = deployment("web", 6, 2, "maxUnavailable: 6");
    let (_c, client) = cluster(2, 110, &yaml).await;
    until_running(&client, "app=web", 6).await;
    until_budget_allows(&client, "web").await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let mine: Vec<Pod> = running(&client, "app=web")
        .await
        .into_iter()
        .filter(|p| node_of(p) == n0)
        .collect();
    assert!(mine.len() >= 2);
    // Fenced first, as every drain of ours is: the replacement lands on another node.
    Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .patch(
            &n0,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    // The first run "crashed" after evicting one pod: it is terminating when the drain restarts.
    let first = mine[0].metadata.name.clone().unwrap();
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": first, "namespace": "default"}});
    pods.create_subresource::<_, serde_json::Value>(
        "eviction",
        &first,
        &PostParams::default(),
        &eviction,
    )
    .await
    .unwrap();

    let (report, events) = drain(
        &client,
        &n0,
        Duration::from_secs(30),
        DrainConfig::default(),
    )
    .await;
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(
        report.evicted,
        mine.len() - 1,
        "the terminating pod is waited for, not evicted again"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Progress::Evicted { pod, .. } if pod.name == first))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Progress::Gone { pod } if pod.name == first))
    );
}
