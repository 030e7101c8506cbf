//! Contract tests: the exact HTTP requests the node actions send, pinned against a mocked API
//! server (a `tower::service_fn` behind `kube::Client`), one scenario per test. A request that
//! never arrives fails the test through its timeout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use sih_core::{Carried, Notice, PlanRules, Source};
use sih_node::DrainConfig;
use sih_node::drain::{DrainEnd, Target};
use tokio::sync::watch;

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    content_type: String,
    body: Value,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A client whose API server answers with `reply(method, path)` and records every request.
fn mock(
    reply: impl Fn(&str, &str) -> (StatusCode, Value) + Send + Sync + Clone + 'static,
) -> (kube::Client, Log) {
    mock_or_hang(move |m, p| Some(reply(m, p)))
}

/// Like `mock`, but a `None` reply never answers: the server accepted and hangs.
fn mock_or_hang(
    reply: impl Fn(&str, &str) -> Option<(StatusCode, Value)> + Send + Sync + Clone + 'static,
) -> (kube::Client, Log) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let svc = tower::service_fn(move |req: Request<Body>| {
        let (seen, reply) = (seen.clone(), reply.clone());
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let method = parts.method.to_string();
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let content_type = parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            seen.lock().unwrap().push(Seen {
                method: method.clone(),
                path: path.clone(),
                content_type,
                body,
            });
            let Some((status, answer)) = reply(&method, &path) else {
                return std::future::pending().await;
            };
            let resp = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    (kube::Client::new(svc, "default"), log)
}

fn node(rv: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "resourceVersion": rv, "labels": {"team": "a"}},
        "spec": {"taints": [{"key": "theirs", "effect": "NoSchedule"}]}})
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": reason, "reason": reason, "code": code})
}

fn spot() -> Vec<Carried> {
    vec![Carried::new(Notice::spot_interruption(
        "i-0abc",
        "n1",
        "2026-11-23T00:00:00Z".parse().unwrap(),
        "2026-11-23T00:02:00Z".parse().unwrap(),
        Source::Agent,
    ))]
}

async fn fence(client: kube::Client) -> Result<sih_node::FenceOutcome, sih_node::NodeError> {
    sih_node::fence(
        &kube::Api::all(client),
        "n1",
        Source::Agent,
        &spot(),
        &PlanRules::default(),
        Duration::from_secs(5),
    )
    .await
}

/// A hard target `within` from now.
fn hard(within: Duration) -> Target {
    let deadline = tokio::time::Instant::now() + within;
    Target {
        deadline,
        hard: Some(deadline),
    }
}

#[tokio::test]
async fn fence_sends_one_merge_patch_guarded_by_the_resource_version() {
    let (client, log) = mock(|method, _| match method {
        "GET" => (StatusCode::OK, node("41")),
        _ => (StatusCode::OK, node("42")),
    });
    tokio::time::timeout(Duration::from_secs(5), fence(client))
        .await
        .unwrap()
        .unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(
        (log[0].method.as_str(), log[0].path.as_str()),
        ("GET", "/api/v1/nodes/n1")
    );
    let patch = &log[1];
    assert_eq!(
        (patch.method.as_str(), patch.path.as_str()),
        ("PATCH", "/api/v1/nodes/n1?")
    );
    assert_eq!(patch.content_type, "application/merge-patch+json");
    let record: Value = serde_json::from_str(
        patch.body["metadata"]["annotations"]["spot-interrupt-handler/notice"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        record,
        json!({"notices": [{"kind": "spot-interruption", "id": "i-0abc-spot-interruption",
            "instance_id": "i-0abc", "node": "n1", "deadline": "2026-11-23T00:02:00Z",
            "detected": "2026-11-23T00:00:00Z", "source": "imds"}],
            "cordoned": true, "wasCordoned": false})
    );
    let mut body = patch.body.clone();
    body["metadata"]["annotations"] = json!("checked above");
    assert_eq!(
        body,
        json!({
            "metadata": {"resourceVersion": "41", "annotations": "checked above",
                "labels": {"node.kubernetes.io/exclude-from-external-load-balancers": "spot-interrupt-handler"}},
            "spec": {"unschedulable": true, "taints": [
                {"key": "theirs", "effect": "NoSchedule"},
                {"key": "spot-interrupt-handler/spot-interruption", "value": "i-0abc-spot-interruption", "effect": "NoSchedule"},
            ]},
        })
    );
}

#[tokio::test]
async fn fence_rereads_and_retries_after_a_conflict() {
    let patches = Arc::new(Mutex::new(0));
    let count = patches.clone();
    let (client, log) = mock(move |method, _| match method {
        "GET" => (StatusCode::OK, node("7")),
        _ => {
            let mut n = count.lock().unwrap();
            *n += 1;
            if *n == 1 {
                (StatusCode::CONFLICT, status(409, "Conflict"))
            } else {
                (StatusCode::OK, node("8"))
            }
        }
    });
    let out = fence(client).await.unwrap();
    assert_eq!(out.attempts, 2);
    let methods: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.method.clone())
        .collect();
    assert_eq!(methods, ["GET", "PATCH", "GET", "PATCH"]);
}

#[tokio::test]
async fn eviction_carries_the_uid_precondition_and_planned_grace() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "uid": "uid-web-1", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs", "controller": true}]},
        "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 300, "containers": [{"name": "c", "image": "nginx"}]},
        "status": {"phase": "Running"}});
    let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": [pod]});
    let (client, log) = mock(move |method, path| match (method, path) {
        ("GET", p) if p.starts_with("/api/v1/pods?") => (StatusCode::OK, list.clone()),
        ("POST", _) => (
            StatusCode::CREATED,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
        ),
        _ => (StatusCode::NOT_FOUND, status(404, "NotFound")),
    });
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let report = tokio::time::timeout(
        Duration::from_secs(5),
        sih_node::drain::drain_until(
            client,
            "n1",
            hard(Duration::from_secs(60)),
            DrainConfig::default(),
            tx,
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(report.succeeded(), "{report:?}");
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log[0].path,
        "/api/v1/pods?&fieldSelector=spec.nodeName%3Dn1"
    );
    let eviction = log
        .iter()
        .find(|s| s.method == "POST")
        .expect("an eviction was posted");
    assert_eq!(
        eviction.path,
        "/api/v1/namespaces/default/pods/web-1/eviction?"
    );
    assert_eq!(
        eviction.body,
        json!({
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "web-1", "namespace": "default"},
            // 300 s of the pod's own, clamped to 60 s left − 5 s margin.
            "deleteOptions": {"gracePeriodSeconds": 55, "preconditions": {"uid": "uid-web-1"}},
        })
    );
}

fn one_pod_list() -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": [{
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "uid": "u1", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs", "controller": true}]},
        "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "nginx"}]},
        "status": {"phase": "Running"}}]})
}

async fn drain_against(
    reply: impl Fn(&str, &str) -> (StatusCode, Value) + Send + Sync + Clone + 'static,
) -> (sih_node::DrainReport, Vec<sih_node::Progress>, Log) {
    let (client, log) = mock(reply);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        sih_node::drain::drain_until(
            client,
            "n1",
            hard(Duration::from_secs(8)),
            DrainConfig::default(),
            tx,
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (report, events, log)
}

#[tokio::test]
async fn server_errors_on_eviction_are_retried() {
    let posts = Arc::new(Mutex::new(0));
    let count = posts.clone();
    let list = one_pod_list();
    let (report, _, log) = drain_against(move |method, path| match (method, path) {
        ("GET", p) if p.starts_with("/api/v1/pods?") => (StatusCode::OK, list.clone()),
        ("POST", _) => {
            let mut n = count.lock().unwrap();
            *n += 1;
            if *n <= 2 {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    status(503, "ServiceUnavailable"),
                )
            } else {
                (
                    StatusCode::CREATED,
                    json!({"kind": "Status", "status": "Success"}),
                )
            }
        }
        _ => (StatusCode::NOT_FOUND, status(404, "NotFound")),
    })
    .await;
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == "POST")
            .count(),
        3
    );
}

#[tokio::test]
async fn forbidden_is_reported_with_the_pod_and_the_drain_does_not_succeed() {
    let list = one_pod_list();
    let (report, events, _) = drain_against(move |method, path| match (method, path) {
        ("GET", p) if p.starts_with("/api/v1/pods?") => (StatusCode::OK, list.clone()),
        ("POST", _) => (StatusCode::FORBIDDEN, status(403, "Forbidden")),
        _ => (StatusCode::OK, json!({})),
    })
    .await;
    assert!(!report.succeeded());
    assert_eq!(report.remaining.len(), 1);
    assert!(events.iter().any(|e| matches!(e, sih_node::Progress::Failed { pod, reason } if pod.name == "web-1" && reason.contains("Forbidden"))), "{events:?}");
}

/// On tokio's paused clock a two-minute notice runs in milliseconds: a pod its budget always
/// refuses is retried (jittered, capped backoff) until exactly the moment its own grace period
/// still fits before deadline − margin, then deleted with that grace.
#[tokio::test(start_paused = true)]
async fn blocked_pod_is_deleted_exactly_when_its_grace_just_fits() {
    let start = tokio::time::Instant::now();
    let deleted_at = Arc::new(Mutex::new(None));
    let posts = Arc::new(Mutex::new(0u32));
    let (when, count) = (deleted_at.clone(), posts.clone());
    let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": [{
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db-0", "namespace": "default", "uid": "u-db", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "ss", "controller": true}]},
        "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 30, "containers": [{"name": "c", "image": "postgres"}]},
        "status": {"phase": "Running"}}]});
    let (client, log) = mock(move |method, path| match (method, path) {
        ("GET", p) if p.starts_with("/api/v1/pods?") => (StatusCode::OK, list.clone()),
        ("POST", _) => {
            *count.lock().unwrap() += 1;
            (
                StatusCode::TOO_MANY_REQUESTS,
                status(429, "TooManyRequests"),
            )
        }
        ("DELETE", _) => {
            *when.lock().unwrap() = Some(tokio::time::Instant::now());
            (
                StatusCode::OK,
                json!({"kind": "Status", "status": "Success"}),
            )
        }
        _ => (StatusCode::NOT_FOUND, status(404, "NotFound")),
    });
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let deadline = start + Duration::from_secs(120);
    let target = Target {
        deadline,
        hard: Some(deadline),
    };
    let report = sih_node::drain::drain_until(client, "n1", target, DrainConfig::default(), tx)
        .await
        .unwrap();
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(report.deleted_at_deadline, 1);
    // 120 s notice − (30 s grace + 5 s margin) = deleted at 85 s.
    let at = deleted_at.lock().unwrap().expect("deleted") - start;
    assert_eq!(
        at,
        Duration::from_secs(85),
        "deleted at the last useful moment, not before"
    );
    let delete = log
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.method == "DELETE")
        .cloned()
        .unwrap();
    assert_eq!(
        delete.body["gracePeriodSeconds"], 30,
        "with the pod's whole grace period"
    );
    assert_eq!(delete.body["preconditions"]["uid"], "u-db");
    // Backoff is capped at 2 s: about 85 / 2 retries, not one every 5 s like kubectl.
    let retries = *posts.lock().unwrap();
    assert!((40..=60).contains(&retries), "{retries} eviction attempts");
}

fn db_pod_list(grace: i64) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": [{
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db-0", "namespace": "default", "uid": "u-db", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "ss", "controller": true}]},
        "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": grace, "containers": [{"name": "c", "image": "postgres"}]},
        "status": {"phase": "Running"}}]})
}

/// An eviction that the server accepts and never answers is abandoned: the pod is deleted at
/// exactly the moment its grace still fits before the hard deadline, as a refused one is.
#[tokio::test(start_paused = true)]
async fn a_hung_eviction_never_delays_the_deadline_deletion() {
    let start = tokio::time::Instant::now();
    let deleted_at = Arc::new(Mutex::new(None));
    let when = deleted_at.clone();
    let list = db_pod_list(30);
    let (client, log) = mock_or_hang(move |method, path| match (method, path) {
        ("GET", p) if p.starts_with("/api/v1/pods?") => Some((StatusCode::OK, list.clone())),
        ("POST", _) => None, // hangs
        ("DELETE", _) => {
            *when.lock().unwrap() = Some(tokio::time::Instant::now());
            Some((
                StatusCode::OK,
                json!({"kind": "Status", "status": "Success"}),
            ))
        }
        _ => Some((StatusCode::NOT_FOUND, status(404, "NotFound"))),
    });
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let target = hard(Duration::from_secs(120));
    let report = sih_node::drain::drain_until(client, "n1", target, DrainConfig::default(), tx)
        .await
        .unwrap();
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(report.deleted_at_deadline, 1);
    let at = deleted_at.lock().unwrap().expect("deleted") - start;
    assert_eq!(
        at,
        Duration::from_secs(85),
        "120 s − (30 s grace + 5 s margin)"
    );
    let posts = log
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "POST")
        .count();
    assert!(
        posts >= 8,
        "each hung eviction was given up after its timeout: {posts}"
    );
}

/// A soft deadline that passes while a hard one is still ahead (a maintenance window inside a
/// spot notice): budgets are respected until the hard deadline needs the pod gone.
#[tokio::test(start_paused = true)]
async fn a_budget_is_overridden_only_against_the_hard_deadline() {
    let start = tokio::time::Instant::now();
    let deleted_at = Arc::new(Mutex::new(None));
    let when = deleted_at.clone();
    let list = db_pod_list(10);
    let (client, _log) = mock(move |method, path| match (method, path) {
        ("GET", p) if p.starts_with("/api/v1/pods?") => (StatusCode::OK, list.clone()),
        ("POST", _) => (
            StatusCode::TOO_MANY_REQUESTS,
            status(429, "TooManyRequests"),
        ),
        ("DELETE", _) => {
            *when.lock().unwrap() = Some(tokio::time::Instant::now());
            (
                StatusCode::OK,
                json!({"kind": "Status", "status": "Success"}),
            )
        }
        _ => (StatusCode::NOT_FOUND, status(404, "NotFound")),
    });
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let target = Target {
        deadline: start + Duration::from_secs(20),
        hard: Some(start + Duration::from_secs(120)),
    };
    let report = sih_node::drain::drain_until(client, "n1", target, DrainConfig::default(), tx)
        .await
        .unwrap();
    assert!(report.succeeded(), "{report:?}");
    let at = deleted_at.lock().unwrap().expect("deleted") - start;
    assert_eq!(
        at,
        Duration::from_secs(105),
        "120 s − (10 s grace + 5 s margin)"
    );
}

/// A nearer deadline arriving while a pod is still stopping asks it again with the grace that
/// now fits; a target taken away stops the drain.
#[tokio::test(start_paused = true)]
async fn a_tightened_target_hastens_pods_and_no_target_stops_the_drain() {
    let gone = Arc::new(Mutex::new(false));
    let deletes = Arc::new(Mutex::new(Vec::new()));
    let (is_gone, seen) = (gone.clone(), deletes.clone());
    let list = db_pod_list(90);
    let pod = list["items"][0].clone();
    let (client, log) = mock(move |method, path| match (method, path) {
        ("GET", p) if p.starts_with("/api/v1/pods?") => (StatusCode::OK, list.clone()),
        ("POST", _) => (
            StatusCode::CREATED,
            json!({"kind": "Status", "status": "Success"}),
        ),
        ("GET", _) if *is_gone.lock().unwrap() => (StatusCode::NOT_FOUND, status(404, "NotFound")),
        ("GET", _) => (StatusCode::OK, pod.clone()),
        ("DELETE", p) => {
            seen.lock().unwrap().push(p.to_owned());
            (
                StatusCode::OK,
                json!({"kind": "Status", "status": "Success"}),
            )
        }
        _ => (StatusCode::NOT_FOUND, status(404, "NotFound")),
    });
    let start = tokio::time::Instant::now();
    let (target_tx, target_rx) = watch::channel(Some(hard(Duration::from_secs(120))));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let drain = tokio::spawn(sih_node::drain(
        client,
        "n1",
        target_rx,
        DrainConfig::default(),
        tx,
    ));
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Evicted with 90 s of grace (it fits 120 s − 5 s); now the instance goes at 40 s.
    target_tx.send_replace(Some(Target {
        deadline: start + Duration::from_secs(40),
        hard: Some(start + Duration::from_secs(40)),
    }));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = log.lock().unwrap().clone();
    let eviction = log.iter().find(|s| s.method == "POST").unwrap();
    assert_eq!(eviction.body["deleteOptions"]["gracePeriodSeconds"], 90);
    let hastened = log
        .iter()
        .find(|s| s.method == "DELETE")
        .expect("asked again");
    let grace = hastened.body["gracePeriodSeconds"].as_i64().unwrap();
    assert!(
        (24..=26).contains(&grace),
        "what fits before 40 s − 5 s at about 10 s: {grace}"
    );
    let mut progress = Vec::new();
    while let Ok(p) = rx.try_recv() {
        progress.push(p);
    }
    assert!(
        progress
            .iter()
            .any(|p| matches!(p, sih_node::Progress::Hastened { .. }))
    );
    // Nothing needs the drain any more: it stops (it does not fail).
    target_tx.send_replace(None);
    let end = tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .expect("the drain stops at once")
        .unwrap()
        .unwrap();
    assert!(matches!(end, DrainEnd::Stopped(_)), "{end:?}");
    *gone.lock().unwrap() = true;
}

/// A drain resumed after a restart finds a pod already stopping with a grace planned for a
/// later deadline (a soft one, before a spot notice came): it is asked again with what fits.
#[tokio::test]
async fn a_resumed_drain_hastens_a_pod_found_stopping_too_slowly() {
    let stops_at = jiff::Timestamp::now() + Duration::from_secs(60);
    let mut list = db_pod_list(90);
    list["items"][0]["metadata"]["deletionTimestamp"] =
        json!(stops_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    let pod = list["items"][0].clone();
    let (client, log) = mock(move |method, path| match (method, path) {
        ("GET", p) if p.starts_with("/api/v1/pods?") => (StatusCode::OK, list.clone()),
        ("GET", _) => (StatusCode::OK, pod.clone()),
        ("DELETE", _) => (
            StatusCode::OK,
            json!({"kind": "Status", "status": "Success"}),
        ),
        _ => (StatusCode::NOT_FOUND, status(404, "NotFound")),
    });
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let (target_tx, target_rx) = watch::channel(Some(hard(Duration::from_secs(20))));
    let drain = tokio::spawn(sih_node::drain(
        client,
        "n1",
        target_rx,
        DrainConfig::default(),
        tx,
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let delete = loop {
        let seen = log
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.method == "DELETE")
            .cloned();
        if let Some(d) = seen {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "never asked again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let grace = delete.body["gracePeriodSeconds"].as_i64().unwrap();
    assert!(
        (13..=15).contains(&grace),
        "20 s − 5 s margin, not 60: {grace}"
    );
    assert_eq!(delete.body["preconditions"]["uid"], "u-db");
    assert!(
        log.lock().unwrap().iter().all(|s| s.method != "POST"),
        "a stopping pod is not evicted again"
    );
    target_tx.send_replace(None);
    let _ = drain.await;
}
