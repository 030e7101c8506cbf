//! Overlapping notices, an API server that hangs, slow reporters and restarts mid-story: each
//! test reproduces one way the agent used to break (the issue "One evacuation plan per node")
//! and asserts what it does now. The cluster simulator's faults make the hangs; its journal
//! says what reached it and when.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::{Hook, Scene, cordoned, label, taints, until};

const LB: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

// The same bodies against the simulator and against the real control plane.
crate::on_both_backends!(
    the_spot_deadline_deletion_happens_on_time_under_a_maintenance_drain,
    cancelling_one_of_two_events_keeps_the_fence,
    a_restart_with_the_metadata_service_down_resumes_the_drain_at_once,
);

/// One pod on the spot node that its budget never lets go: only a deletion moves it.
pub(crate) fn guarded(node: &str, grace: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: guarded, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: guarded}}}}
  template:
    metadata: {{labels: {{app: guarded}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      terminationGracePeriodSeconds: {grace}
      containers: [{{name: c, image: postgres}}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: guarded, namespace: default}}
spec:
  maxUnavailable: 0
  selector: {{matchLabels: {{app: guarded}}}}"#
    )
}

fn webhooks_of(hook: &Hook, phase_word: &str) -> Vec<Value> {
    hook.bodies()
        .iter()
        .filter_map(|b| serde_json::from_str::<Value>(b).ok())
        .filter(|v| v["phase"] == phase_word)
        .collect()
}

const TEMPLATE: &str = r#"{"kind":"{{ .Kind }}","id":"{{ .EventID }}","phase":"{{ .Phase }}","text":"{{ .Description }}"}"#;

/// When the pod named `prefix-...` was marked for deletion, and with how much grace: from the
/// simulator's journal, or on a real cluster from the terminating pod itself (its
/// `deletionTimestamp` is the request's time plus the grace, in whole seconds).
pub(crate) async fn deletion_of(s: &Scene, prefix: &str) -> Option<(jiff::Timestamp, i64)> {
    if s.real().is_some() {
        let pods =
            kube::Api::<k8s_openapi::api::core::v1::Pod>::default_namespaced(s.client.clone())
                .list(&kube::api::ListParams::default())
                .await
                .unwrap()
                .items;
        return pods.into_iter().find_map(|p| {
            let name = p.metadata.name.as_deref()?;
            if !name.starts_with(prefix) {
                return None;
            }
            let grace = p.metadata.deletion_grace_period_seconds?;
            let at = p.metadata.deletion_timestamp?.0 - jiff::SignedDuration::from_secs(grace);
            Some((at, grace))
        });
    }
    s.cluster_journal("pod-events")
        .await
        .into_iter()
        .find(|e| {
            e["step"] == "deleting" && e["name"].as_str().is_some_and(|n| n.starts_with(prefix))
        })
        .map(|e| {
            (
                e["at"].as_str().unwrap().parse().unwrap(),
                e["grace_seconds"].as_i64().unwrap_or(-1),
            )
        })
}

async fn node_patches(s: &Scene) -> usize {
    s.cluster_journal("requests")
        .await
        .iter()
        .filter(|r| r["verb"] == "patch" && r["resource"] == "nodes" && r["status"] == 200)
        .count()
}

pub(crate) async fn until_guarded_runs(s: &Scene) {
    until("the guarded pod runs", Duration::from_secs(20), || async {
        let pods =
            kube::Api::<k8s_openapi::api::core::v1::Pod>::default_namespaced(s.client.clone())
                .list(&kube::api::ListParams::default().labels("app=guarded"))
                .await
                .unwrap()
                .items;
        pods.iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
}

#[tokio::test]
async fn amazon_ec2_metadata_mock_default_scenario_empties_the_node_once() {
    // A spot notice restated on every read, a rebalance recommendation and a reboot whose
    // window has already started: the mock's default, which once stopped the spot drain.
    let s = Scene::start(&["--aemm-defaults", "--spot-lead", "25s"]).await;
    let (hook, url) = Hook::start().await;
    let started = Instant::now();
    let agent = s
        .agent(&[
            "--webhook-url",
            &url,
            "--webhook-template",
            TEMPLATE,
            "--drain-budget",
            "300s",
        ])
        .await;
    s.drained().await;
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the node is empty before the spot deadline ({:?})",
        started.elapsed()
    );
    agent
        .proc
        .until_logged("drain succeeded", Duration::from_secs(10))
        .await;
    // The drained flag goes into the node's record right after; then nothing more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let patches = node_patches(&s).await;
    // Polling goes on (every 200 ms) with the times moving on every read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        node_patches(&s).await,
        patches,
        "no write per poll: a restated time is the same notice"
    );
    assert!(
        patches <= 3,
        "the fence, the drained record: {patches} writes"
    );
    let detected = webhooks_of(&hook, "detected");
    let mut kinds: Vec<&str> = detected.iter().filter_map(|v| v["kind"].as_str()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "rebalance-recommendation",
            "scheduled-maintenance",
            "spot-interruption"
        ],
        "one announcement per notice: {detected:?}"
    );
    let reasons = s.event_reasons().await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "SpotInterruption").count(),
        1,
        "{reasons:?}"
    );
    let log = agent.proc.log();
    assert!(
        !log.contains("drain stopped"),
        "nothing stopped the spot drain"
    );
    assert!(!log.contains("rebalance recommendation disappeared"));
}

async fn the_spot_deadline_deletion_happens_on_time_under_a_maintenance_drain() {
    let s = Scene::start(&[]).await;
    s.apply(&guarded(&s.node, 3)).await;
    until_guarded_runs(&s).await;
    let agent = s.agent(&["--drain-budget", "300s"]).await;
    // Maintenance first (its window opens in 8 s: a soft deadline), then the spot notice.
    s.control(
        "scheduled-event",
        json!({"code": "system-maintenance", "not_before_seconds": 8}),
    )
    .await;
    agent
        .proc
        .until_logged("drain started", Duration::from_secs(5))
        .await;
    let spot = s
        .control("spot-interruption", json!({"lead_seconds": 20}))
        .await;
    let deadline: jiff::Timestamp = spot["time"].as_str().unwrap().parse().unwrap();
    until(
        "the guarded pod is deleted",
        Duration::from_secs(30),
        || async { deletion_of(&s, "guarded-").await.is_some() },
    )
    .await;
    let (at, grace) = deletion_of(&s, "guarded-").await.unwrap();
    let before = deadline.duration_since(at).as_secs_f64();
    assert_eq!(grace, 3, "its whole grace period");
    // Deleted when its grace (3 s) + the margin (1 s) just fit before the spot deadline: not
    // when the maintenance window opened, not never. A real server's deletionTimestamp has
    // whole seconds: read back, the request may seem up to a second earlier.
    let slack = if s.real().is_some() { 1.0 } else { 0.0 };
    assert!(
        (3.0..=6.0 + slack).contains(&before),
        "deleted {before:.1}s before the spot deadline"
    );
    let drains = agent
        .proc
        .json_lines()
        .iter()
        .filter(|l| l["message"] == "drain started")
        .count();
    assert_eq!(
        drains,
        1,
        "one drain, its target moved: {}",
        agent.proc.log()
    );
    assert!(!agent.proc.log().contains("drain stopped"));
}

async fn cancelling_one_of_two_events_keeps_the_fence() {
    let s = Scene::start(&[]).await;
    let agent = s.agent(&[]).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let e = s
            .control(
                "scheduled-event",
                json!({"code": "system-reboot", "not_before_seconds": 600}),
            )
            .await;
        ids.push(e["EventId"].as_str().unwrap().to_owned());
    }
    until("fenced", Duration::from_secs(10), || async {
        cordoned(&s.node().await)
    })
    .await;
    s.control(&format!("scheduled-event/{}/cancel", ids[0]), json!({}))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let node = s.node().await;
    assert!(
        cordoned(&node),
        "the other event still needs the node fenced"
    );
    assert_eq!(label(&node, LB).as_deref(), Some("spot-interrupt-handler"));
    let t = taints(&node);
    assert!(
        t.iter()
            .any(|(k, v, _)| k == "spot-interrupt-handler/scheduled-maintenance" && v == &ids[1]),
        "{t:?}"
    );
    s.control(&format!("scheduled-event/{}/cancel", ids[1]), json!({}))
        .await;
    until(
        "unfenced once both are gone",
        Duration::from_secs(10),
        || async {
            let node = s.node().await;
            !cordoned(&node) && taints(&node).is_empty() && label(&node, LB).is_none()
        },
    )
    .await;
    assert!(agent.proc.log().contains("node unfenced"));
}

#[tokio::test]
async fn an_api_server_that_never_answers_holds_up_no_detection_and_no_stop() {
    let s = Scene::start(&[]).await;
    let (hook, url) = Hook::start().await;
    let mut agent = s
        .agent(&[
            "--webhook-url",
            &url,
            "--webhook-template",
            TEMPLATE,
            "--api-timeout",
            "2s",
        ])
        .await;
    // Every Kubernetes request from now on is accepted and never answered.
    s.cluster_control("faults", json!({"hang": true})).await;
    let t = Instant::now();
    s.spot(60).await;
    hook.until_count(1, Duration::from_secs(3)).await;
    s.control("rebalance-recommendation", json!({})).await;
    until(
        "the rebalance is announced too",
        Duration::from_secs(3),
        || async { webhooks_of(&hook, "detected").len() == 2 },
    )
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "detection went on: {:?}",
        t.elapsed()
    );
    assert_eq!(agent.get("/healthz").await.0, 200, "the poll loop turns");
    // SIGTERM is honoured within a second, whatever hangs.
    let t = Instant::now();
    assert!(agent.proc.sigterm().await.success());
    assert!(
        t.elapsed() < Duration::from_millis(1800),
        "stopped in {:?}",
        t.elapsed()
    );
    s.cluster_control("faults", json!({})).await;
}

#[tokio::test]
async fn a_hung_eviction_never_stops_the_deadline_deletion() {
    let s = Scene::start(&[]).await;
    let (hook, url) = Hook::start().await;
    s.apply(&guarded(&s.node, 2)).await;
    until_guarded_runs(&s).await;
    let agent = s
        .agent(&[
            "--webhook-url",
            &url,
            "--webhook-template",
            TEMPLATE,
            "--api-timeout",
            "3s",
        ])
        .await;
    s.cluster_control(
        "faults",
        json!({"resource": "pods/eviction", "verb": "create", "hang": true}),
    )
    .await;
    let spot = s
        .control("spot-interruption", json!({"lead_seconds": 14}))
        .await;
    let deadline: jiff::Timestamp = spot["time"].as_str().unwrap().parse().unwrap();
    until("every pod has left", Duration::from_secs(25), || async {
        s.web_on_node().await == 0 && deletion_of(&s, "guarded-").await.is_some()
    })
    .await;
    let (at, grace) = deletion_of(&s, "guarded-").await.unwrap();
    assert_eq!(grace, 2);
    assert!(at < deadline, "deleted before the deadline");
    agent
        .proc
        .until_logged("drain succeeded", Duration::from_secs(15))
        .await;
    // Webhooks go out from their own task: the log line may come first.
    until(
        "the drained webhook arrives",
        Duration::from_secs(10),
        || async { !webhooks_of(&hook, "drained").is_empty() },
    )
    .await;
    let drained = webhooks_of(&hook, "drained");
    assert!(
        drained[0]["text"].as_str().unwrap().contains("succeeded"),
        "{drained:?}"
    );
    s.cluster_control("faults", json!({})).await;
}

#[tokio::test]
async fn a_hung_event_write_delays_no_log_line_and_no_webhook() {
    let s = Scene::start(&[]).await;
    let (hook, url) = Hook::start().await;
    let agent = s
        .agent(&["--webhook-url", &url, "--webhook-template", TEMPLATE])
        .await;
    s.cluster_control(
        "faults",
        json!({"resource": "events", "verb": "create", "hang": true}),
    )
    .await;
    let t = Instant::now();
    s.spot(60).await;
    hook.until_count(1, Duration::from_secs(2)).await;
    agent
        .proc
        .until_logged("drain started", Duration::from_secs(2))
        .await;
    s.drained().await;
    until("the drained webhook", Duration::from_secs(10), || async {
        webhooks_of(&hook, "drained").len() == 1
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    s.cluster_control("faults", json!({})).await;
}

async fn a_restart_with_the_metadata_service_down_resumes_the_drain_at_once() {
    let s = Scene::start(&[]).await;
    s.apply(&guarded(&s.node, 30)).await;
    until_guarded_runs(&s).await;
    let mut first = s.agent(&[]).await;
    s.spot(60).await;
    first
        .proc
        .until_logged("drain started", Duration::from_secs(10))
        .await;
    first.proc.child.kill().await.unwrap();
    // The metadata service is down when the next agent starts.
    s.control("faults", json!({"status": 503})).await;
    let t = Instant::now();
    let second = s.agent_unready(&[]).await;
    second
        .proc
        .until_logged(
            "resuming the notice recorded on the node",
            Duration::from_secs(5),
        )
        .await;
    second
        .proc
        .until_logged("drain started", Duration::from_secs(5))
        .await;
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "resumed in {:?}",
        t.elapsed()
    );
    assert!(
        !second
            .proc
            .log()
            .contains("watching for interruption notices"),
        "without the metadata service"
    );
    s.control("faults", json!({})).await;
}

/// Issue 32 (3): the wait for the node's record used to be counted from the agent's start and
/// fire once: a notice that came later, with the API still down, was never announced.
#[tokio::test]
async fn a_notice_after_the_patience_with_the_api_down_is_announced_at_once() {
    let s = Scene::start(&[]).await;
    let (hook, url) = Hook::start().await;
    s.cluster_control("faults", json!({"status": 503})).await;
    let agent = s
        .agent(&["--webhook-url", &url, "--webhook-template", TEMPLATE])
        .await;
    // Past the wait for the node's record (2 s): the record stays unreadable.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let t = Instant::now();
    s.spot(60).await;
    hook.until_count(1, Duration::from_secs(5)).await;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "announced after {:?}",
        t.elapsed()
    );
    agent
        .proc
        .until_logged("notice detected", Duration::from_secs(1))
        .await;
    s.cluster_control("faults", json!({})).await;
    s.drained().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(webhooks_of(&hook, "detected").len(), 1, "announced once");
}

#[tokio::test]
async fn with_the_api_server_down_at_start_the_agent_still_detects_and_announces() {
    let s = Scene::start(&[]).await;
    let (hook, url) = Hook::start().await;
    s.cluster_control("faults", json!({"status": 503})).await;
    let agent = s
        .agent(&["--webhook-url", &url, "--webhook-template", TEMPLATE])
        .await;
    s.spot(60).await;
    // Announced once the node's record has been waited for a moment (it cannot be read).
    hook.until_count(1, Duration::from_secs(6)).await;
    let patched = s
        .cluster_journal("requests")
        .await
        .iter()
        .any(|r| r["verb"] == "patch" && r["status"] == 200);
    assert!(!patched, "nothing could be written meanwhile");
    s.cluster_control("faults", json!({})).await;
    until(
        "fenced once the API answers",
        Duration::from_secs(10),
        || async { cordoned(&s.node().await) },
    )
    .await;
    s.drained().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(webhooks_of(&hook, "detected").len(), 1, "announced once");
    assert!(
        agent
            .proc
            .log()
            .contains("announcing new notices without it")
    );
}

/// Soak seed 51502: a 429 from the API server's flow control on the drain's pod list (and on
/// the fence) ended the evacuation for good, and the pods were still on the node when the
/// instance went. Throttling is waited out like any other transient refusal.
#[tokio::test]
async fn a_throttling_api_server_delays_the_fence_and_the_drain_and_ends_neither() {
    let s = Scene::start(&[]).await;
    s.until_web_running(6).await;
    let agent = s.agent(&[]).await;
    s.cluster_control(
        "faults",
        json!([
            {"resource": "nodes", "verb": "patch", "status": 429, "retry_after": 1, "count": 1},
            {"resource": "pods", "verb": "list", "status": 429, "retry_after": 1, "count": 2},
        ]),
    )
    .await;
    s.spot(30).await;
    // Our own reads would meet the faults too: wait (on the simulator's journal) until the
    // agent has met all three refusals, then for the drain.
    let refusals = || async {
        s.cluster_journal("requests")
            .await
            .iter()
            // Evictions a budget refuses answer 429 too: only the throttled calls count.
            .filter(|r| r["status"] == 429 && matches!(r["verb"].as_str(), Some("patch" | "list")))
            .map(|r| {
                format!(
                    "{} {}",
                    r["verb"].as_str().unwrap_or_default(),
                    r["resource"].as_str().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
    };
    until(
        "the agent met every refusal",
        Duration::from_secs(10),
        || async { refusals().await.len() == 3 },
    )
    .await;
    s.drained().await;
    assert!(cordoned(&s.node().await));
    agent
        .proc
        .until_logged("drain succeeded", Duration::from_secs(15))
        .await;
    let refused = refusals().await;
    assert_eq!(refused.len(), 3, "{refused:?}");
}
