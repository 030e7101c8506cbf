//! The deadline-aware drain against a live API server and its simulated controllers.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use sih_core::DrainPolicy;
use sih_node::{DrainConfig, Progress};

use crate::support::{
    TestCluster, cluster, deployment, drain, node_name, node_of, running, until_budget_allows,
    until_running,
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

// The same bodies against the simulator and against the real control plane: the load
// balancers' wait with a real EndpointSlice controller, surge with a real Deployment
// controller.
crate::on_both_backends!(
    service_endpoints_wait_for_the_load_balancers_but_never_past_the_deadline,
    a_surged_deployment_never_drops_below_its_desired_ready_replicas,
);

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
        sih_core::Source::Agent,
    ));
    sih_node::fence(
        &Api::all(client.clone()),
        &n0,
        sih_core::Source::Agent,
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

/// One pinned Deployment per choice, with its annotation (and priority) on its template.
fn chooser(name: &str, annotation: Option<&str>, priority: i32, grace: i64) -> String {
    let annotations = annotation
        .map(|a| format!("annotations: {{spot-interrupt-handler/eviction: \"{a}\"}}, "))
        .unwrap_or_default();
    format!(
        r#"
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{{annotations}labels: {{app: {name}}}}}
    spec:
      priority: {priority}
      terminationGracePeriodSeconds: {grace}
      containers: [{{name: c, image: nginx}}]
"#
    )
}

/// Workloads choose how they leave (`spot-interrupt-handler/eviction`): `first` before every
/// tier, then the others by priority (lowest first), then `last`; `at-deadline` is told as late
/// as its grace allows; `never` stays; an invalid value is said (an Event) and the default
/// applies. Every pod still leaves before the deadline.
#[tokio::test]
async fn workloads_choose_how_they_leave_and_tiers_go_by_priority() {
    let yaml = [
        chooser("cache", Some("first"), 1000, 1),
        chooser("low", None, -10, 1),
        chooser("web", None, 0, 1),
        chooser("typo", Some("soon"), 0, 1),
        chooser("db", Some("last"), 0, 1),
        chooser("batch", Some("at-deadline"), 0, 2),
        chooser("self-managed", Some("never"), 0, 1),
    ]
    .concat();
    let (_c, client) = cluster(1, 110, &yaml).await;
    for app in ["cache", "low", "web", "typo", "db", "batch", "self-managed"] {
        until_running(&client, &format!("app={app}"), 1).await;
    }
    let node = node_name(0);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(10);
    let cfg = DrainConfig {
        policy: DrainPolicy {
            margin: Duration::from_secs(1),
            ..DrainPolicy::default()
        },
        ..DrainConfig::default()
    };
    let (c, n) = (client.clone(), node.clone());
    let drained = tokio::spawn(async move {
        let target = sih_node::drain::Target {
            deadline,
            hard: Some(deadline),
        };
        sih_node::drain::drain_until(c, &n, target, cfg, tx).await
    });
    // Each progress with the moment it came.
    let mut seen = Vec::new();
    while let Some(p) = rx.recv().await {
        seen.push((started.elapsed(), p));
    }
    let report = drained.await.unwrap().unwrap();
    assert!(report.succeeded(), "{report:?}");
    let evicted: Vec<(String, Duration)> = seen
        .iter()
        .filter_map(|(at, p)| match p {
            Progress::Evicted { pod, .. } => {
                Some((pod.name.split('-').next().unwrap().to_owned(), *at))
            }
            _ => None,
        })
        .collect();
    let order: Vec<&str> = evicted.iter().map(|(n, _)| n.as_str()).collect();
    let at = |app: &str| {
        evicted
            .iter()
            .find(|(n, _)| n == app)
            .map(|(_, t)| *t)
            .unwrap_or_else(|| panic!("{app} not evicted: {order:?}"))
    };
    assert!(at("cache") <= at("low"), "{order:?}");
    assert!(
        at("low") <= at("web") && at("low") <= at("typo"),
        "{order:?}"
    );
    assert!(at("web") <= at("db") && at("typo") <= at("db"), "{order:?}");
    // Told as late as its 2 s grace allows: deadline (10 s) − margin (1 s) − grace (2 s).
    assert!(
        at("batch") >= Duration::from_millis(6_500) && at("batch") <= Duration::from_secs(8),
        "batch at {:?}",
        at("batch")
    );
    assert!(!order.contains(&"self"), "{order:?}");
    assert!(
        seen.iter()
            .any(|(_, p)| matches!(p, Progress::Skipped { pod, reason }
            if pod.name.starts_with("self-managed") && *reason == sih_core::SkipReason::OptedOut)),
        "the opted-out pod stays"
    );
    assert!(
        seen.iter()
            .any(|(_, p)| matches!(p, Progress::InvalidChoice { pod, value }
            if pod.name.starts_with("typo") && value == "soon")),
        "the invalid choice is said"
    );
    assert_eq!(running(&client, "app=self-managed").await.len(), 1);
    assert!(report.slack_ms >= 0, "{report:?}");
}

/// Two tiers on one node: `stuck` first, held by a budget that never allows, then `web`.
async fn stuck_tier_then_web() -> (TestCluster, kube::Client) {
    let yaml = [
        chooser("stuck", Some("first"), 0, 1),
        "\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: stuck, namespace: default}\nspec:\n  maxUnavailable: 0\n  selector: {matchLabels: {app: stuck}}\n".to_owned(),
        chooser("web", None, 0, 1),
    ]
    .concat();
    let (c, client) = cluster(1, 110, &yaml).await;
    until_running(&client, "app=stuck", 1).await;
    until_running(&client, "app=web", 1).await;
    (c, client)
}

/// A tier its budget holds back does not hold up the tiers after it past their share of the
/// time: with 12 s left (1 s margin, 1 s grace), the second of two tiers starts by 5 s, while
/// the blocked pod is deleted at its last moment.
#[tokio::test]
async fn a_blocked_tier_gives_the_next_tier_its_share_of_the_time() {
    let (_c, client) = stuck_tier_then_web().await;
    let cfg = DrainConfig {
        policy: DrainPolicy {
            margin: Duration::from_secs(1),
            ..DrainPolicy::default()
        },
        ..DrainConfig::default()
    };
    let started = tokio::time::Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (c, n) = (client.clone(), node_name(0));
    let drained = tokio::spawn(async move {
        let deadline = started + Duration::from_secs(12);
        let target = sih_node::drain::Target {
            deadline,
            hard: Some(deadline),
        };
        sih_node::drain::drain_until(c, &n, target, cfg, tx).await
    });
    let mut web_at = None;
    let mut stuck_deleted_at = None;
    while let Some(p) = rx.recv().await {
        match p {
            Progress::Evicted { pod, .. } if pod.name.starts_with("web") => {
                web_at = Some(started.elapsed())
            }
            Progress::DeletedAtDeadline { pod, .. } if pod.name.starts_with("stuck") => {
                stuck_deleted_at = Some(started.elapsed())
            }
            _ => {}
        }
    }
    let report = drained.await.unwrap().unwrap();
    assert!(report.succeeded(), "{report:?}");
    let web_at = web_at.expect("web evicted");
    assert!(
        web_at >= Duration::from_millis(4_500) && web_at < Duration::from_millis(6_500),
        "web at {web_at:?}"
    );
    let stuck = stuck_deleted_at.expect("stuck deleted at the deadline");
    assert!(stuck >= Duration::from_secs(9), "stuck at {stuck:?}");
}

/// A deadline that moves earlier mid-drain brings the later tiers forward with it: a tier
/// held back by a budget, the next tier due at its share of 60 s (29 s in); the target moves to
/// 8 s after a second (another notice, nearer), and the next tier starts by its share of that
/// (3 s in), not at the 29 s planned at the start (the soak's seed 61986).
#[tokio::test]
async fn a_deadline_moved_earlier_brings_the_next_tier_forward() {
    let (_c, client) = stuck_tier_then_web().await;
    let cfg = DrainConfig {
        policy: DrainPolicy {
            margin: Duration::from_secs(1),
            ..DrainPolicy::default()
        },
        ..DrainConfig::default()
    };
    let started = tokio::time::Instant::now();
    let at = |s: u64| {
        let deadline = started + Duration::from_secs(s);
        Some(sih_node::drain::Target {
            deadline,
            hard: Some(deadline),
        })
    };
    let (target, rx) = tokio::sync::watch::channel(at(60));
    let (tx, mut progress) = tokio::sync::mpsc::unbounded_channel();
    let (c, n) = (client.clone(), node_name(0));
    let drained = tokio::spawn(async move { sih_node::drain::drain(c, &n, rx, cfg, tx).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    target.send_replace(at(8));
    let mut web_at = None;
    while let Some(p) = progress.recv().await {
        if let Progress::Evicted { pod, .. } = p
            && pod.name.starts_with("web")
        {
            web_at = Some(started.elapsed());
        }
    }
    let end = drained.await.unwrap().unwrap();
    assert!(end.report().succeeded(), "{:?}", end.report());
    let web_at = web_at.expect("web evicted");
    assert!(
        web_at >= Duration::from_millis(2_500) && web_at < Duration::from_millis(5_000),
        "web at {web_at:?}: its tier's share of the moved deadline is 3 s"
    );
}

/// Endpoints of a Service wait `lb_drain_delay` before their eviction (the load balancers
/// stop sending them traffic first); other pods go at once; and the deadline always wins:
/// with a delay longer than the notice, the endpoints still go at their last moment.
async fn service_endpoints_wait_for_the_load_balancers_but_never_past_the_deadline() {
    let svc = "\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n";
    let yaml = [
        chooser("web", None, 0, 1),
        svc.to_owned(),
        chooser("worker", None, 0, 1),
    ]
    .concat();
    for (delay, within, web_from, web_to) in [
        // 3 s delay, 20 s notice: the endpoint goes after 3 s.
        (3, 20, 2_800, 4_500),
        // 30 s delay, 8 s notice (1 s margin, 1 s grace): at its last moment, 6 s.
        (30, 8, 5_500, 7_000),
    ] {
        let (_c, client) = cluster(1, 110, &yaml).await;
        until_running(&client, "app=web", 1).await;
        until_running(&client, "app=worker", 1).await;
        // The slice lists the endpoint once its pod runs.
        let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
            Api::namespaced(client.clone(), "default");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while slices
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .all(|s| s.endpoints.is_empty())
        {
            assert!(tokio::time::Instant::now() < deadline, "no endpoints");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cfg = DrainConfig {
            policy: DrainPolicy {
                margin: Duration::from_secs(1),
                ..DrainPolicy::default()
            },
            lb_drain_delay: Duration::from_secs(delay),
            ..DrainConfig::default()
        };
        let started = tokio::time::Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (c, n) = (client.clone(), node_name(0));
        let drained = tokio::spawn(async move {
            let deadline = started + Duration::from_secs(within);
            let target = sih_node::drain::Target {
                deadline,
                hard: Some(deadline),
            };
            sih_node::drain::drain_until(c, &n, target, cfg, tx).await
        });
        let (mut web_at, mut worker_at) = (None, None);
        while let Some(p) = rx.recv().await {
            if let Progress::Evicted { pod, .. } = p {
                let at = Some(started.elapsed());
                if pod.name.starts_with("web") {
                    web_at = at;
                } else if pod.name.starts_with("worker") {
                    worker_at = at;
                }
            }
        }
        let report = drained.await.unwrap().unwrap();
        assert!(report.succeeded(), "{report:?}");
        let (web_at, worker_at) = (web_at.unwrap(), worker_at.unwrap());
        assert!(
            worker_at < Duration::from_secs(1),
            "worker at {worker_at:?}"
        );
        assert!(
            web_at >= Duration::from_millis(web_from) && web_at <= Duration::from_millis(web_to),
            "delay {delay}s, notice {within}s: web at {web_at:?}"
        );
        assert!(report.slack_ms >= 0, "{report:?}");
    }
}

/// Surge before evict: a Deployment annotated `spot-interrupt-handler/surge: "true"` gets its
/// new replicas Ready elsewhere before its pods leave, so its Ready replicas never drop below
/// the desired count, and the count is restored afterwards; without the annotation they do
/// drop (the budget allows one down). An HPA on the Deployment means no surge, said why.
async fn a_surged_deployment_never_drops_below_its_desired_ready_replicas() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Patch, PatchParams};
    // (surge asked, an HPA scales it, asked through --surge-selector instead of annotated)
    for (surge, hpa, by_selector) in [
        (true, false, false),
        (false, false, false),
        (true, true, false),
        (true, false, true),
    ] {
        let (_c, client) = cluster(2, 110, "").await;
        let nodes: Api<Node> = Api::all(client.clone());
        let cordon = |name: String, on: bool| {
            let nodes = nodes.clone();
            async move {
                nodes
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"unschedulable": on}})),
                    )
                    .await
                    .unwrap();
            }
        };
        // Both replicas on node 0; then node 0 is fenced and node 1 takes new pods.
        cordon(node_name(1), true).await;
        let annotations = if surge && !by_selector {
            json!({"spot-interrupt-handler/surge": "true"})
        } else {
            json!({})
        };
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
        deployments
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": "web", "namespace": "default", "annotations": annotations, "labels": {"tier": "web"}},
                    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "nginx"}]}}}
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        let pdb = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web, namespace: default}\nspec:\n  maxUnavailable: 1\n  selector: {matchLabels: {app: web}}\n";
        let budgets: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
            Api::namespaced(client.clone(), "default");
        budgets
            .create(
                &PostParams::default(),
                &serde_saphyr::from_str(pdb).unwrap(),
            )
            .await
            .unwrap();
        if hpa {
            let hpas: Api<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler> =
                Api::namespaced(client.clone(), "default");
            hpas.create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"maxReplicas": 5, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        }
        until_running(&client, "app=web", 2).await;
        until_budget_allows(&client, "web").await;
        cordon(node_name(1), false).await;
        cordon(node_name(0), true).await;
        // Watch the replicas that serve the whole time: Ready and not leaving. Every change in
        // the order the API server made them (a watch, not a poll: on the real control plane
        // a replacement can be Ready within milliseconds of the eviction, between two polls),
        // and not the Deployment's readyReplicas, which counts a pod being deleted until it
        // is gone.
        let lowest = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(i32::MAX));
        let (watch_low, watch_pods) = (
            lowest.clone(),
            Api::<Pod>::namespaced(client.clone(), "default"),
        );
        let (listed, listed_rx) = tokio::sync::oneshot::channel();
        let watcher = tokio::spawn(async move {
            use futures_util::StreamExt;
            use kube::runtime::watcher::{self, Event};
            let serving = |p: &Pod| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            };
            let config = watcher::Config::default().labels("app=web");
            let mut events = std::pin::pin!(watcher::watcher(watch_pods, config));
            let mut pods = std::collections::HashMap::<String, bool>::new();
            let mut listed = Some(listed);
            // A (re)list is counted once whole, never while it comes in.
            let mut listing = true;
            while let Some(event) = events.next().await {
                match event {
                    Ok(Event::Apply(p) | Event::InitApply(p)) => {
                        pods.insert(p.metadata.name.clone().unwrap_or_default(), serving(&p));
                    }
                    Ok(Event::Delete(p)) => {
                        pods.remove(&p.metadata.name.clone().unwrap_or_default());
                    }
                    Ok(Event::Init) => {
                        pods.clear();
                        listing = true;
                    }
                    Ok(Event::InitDone) => {
                        listing = false;
                        if let Some(tx) = listed.take() {
                            let _ = tx.send(());
                        }
                    }
                    Err(_) => continue,
                }
                if !listing {
                    let n = pods.values().filter(|s| **s).count() as i32;
                    watch_low.fetch_min(n, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        listed_rx.await.expect("the pods listed");
        let cfg = DrainConfig {
            policy: DrainPolicy {
                margin: Duration::from_secs(1),
                ..DrainPolicy::default()
            },
            surge_selector: if by_selector {
                [("tier".to_owned(), "web".to_owned())].into()
            } else {
                Default::default()
            },
            ..DrainConfig::default()
        };
        let (report, events) = drain(&client, &node_name(0), Duration::from_secs(20), cfg).await;
        until_running(&client, "app=web", 2).await;
        watcher.abort();
        assert!(report.succeeded(), "{report:?}");
        let said: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                Progress::Surge { what, .. } => Some(what.clone()),
                _ => None,
            })
            .collect();
        let low = lowest.load(std::sync::atomic::Ordering::SeqCst);
        let replicas = deployments
            .get("web")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.replicas);
        assert_eq!(replicas, Some(2), "restored: {said:?}");
        match (surge, hpa) {
            (true, false) => {
                // Annotated, or selected by --surge-selector: the same.
                assert!(
                    said.iter().any(|w| w.contains("raised from 2 to 4")),
                    "{said:?}"
                );
                assert!(said.iter().any(|w| w.contains("restored to 2")), "{said:?}");
                assert_eq!(low, 2, "Ready replicas never below desired: {said:?}");
            }
            (false, _) => {
                assert!(said.is_empty(), "{said:?}");
                assert!(
                    low < 2,
                    "without a surge the budget lets one go down: {low}"
                );
            }
            (true, true) => {
                assert!(
                    said.iter()
                        .any(|w| w.contains("not surged") && w.contains("HorizontalPodAutoscaler")),
                    "{said:?}"
                );
            }
        }
    }
}
