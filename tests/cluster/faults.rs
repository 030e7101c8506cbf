//! Faults on demand (`/_sim/faults`) as kube-rs, kube-runtime's watcher and the real kubectl
//! meet them, node termination as a Spot reclaim does it, and the journal of what happened.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use sih_sim_cluster::journal::PodStep;
use tokio::time::Instant;

use crate::support::{
    client, cluster, eventually, kubectl, node_name, secure_cluster, token_client, web,
};

/// POSTs to the control API and returns the status and JSON answer.
pub(crate) async fn control(
    sim: &crate::support::Sim,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let http = reqwest::Client::new();
    let url = format!("{}{path}", sim.cluster.url());
    let req = match method {
        "GET" => http.get(&url),
        "DELETE" => http.delete(&url),
        _ => http.post(&url).json(&body),
    };
    let resp = req.send().await.expect("control API answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn fault(sim: &crate::support::Sim, body: Value) {
    let (status, answer) = control(sim, "POST", "/_sim/faults", body).await;
    assert_eq!(status, 201, "{answer}");
}

fn code(e: &kube::Error) -> Option<(u16, String)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.reason.clone())),
        _ => None,
    }
}

#[tokio::test]
async fn status_faults_are_real_statuses_that_kube_rs_classifies() {
    let sim = cluster(2, 1, Some("")).await;
    let nodes: Api<Node> = Api::all(client(&sim).await);
    for (status, reason) in [
        (500, "InternalError"),
        (503, "ServiceUnavailable"),
        (429, "TooManyRequests"),
        (504, "Timeout"),
    ] {
        fault(
            &sim,
            json!({"resource": "nodes", "verb": "get", "status": status, "count": 1}),
        )
        .await;
        let e = nodes.get(&node_name(0)).await.unwrap_err();
        assert_eq!(code(&e), Some((status, reason.to_owned())), "{e}");
        nodes
            .get(&node_name(0))
            .await
            .expect("a count of 1 is spent");
    }
    // A 409 on a write: kube-rs sees the conflict a stale resourceVersion gives.
    fault(
        &sim,
        json!({"resource": "nodes", "verb": "patch", "status": 409, "count": 1}),
    )
    .await;
    let patch = Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}));
    let e = nodes
        .patch(&node_name(0), &PatchParams::default(), &patch)
        .await
        .unwrap_err();
    assert_eq!(code(&e).map(|c| c.0), Some(409));
    // 429 says when to come back, in the header and in the Status.
    fault(
        &sim,
        json!({"resource": "nodes", "status": 429, "retry_after": 3, "count": 1}),
    )
    .await;
    let resp = reqwest::get(format!("{}/api/v1/nodes", sim.cluster.url()))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "3");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["details"]["retryAfterSeconds"], 3);
}

#[tokio::test]
async fn latency_hang_and_reset_against_kube_rs() {
    let sim = cluster(2, 1, Some("")).await;
    let nodes: Api<Node> = Api::all(client(&sim).await);
    // Late, but answered.
    fault(
        &sim,
        json!({"resource": "nodes", "verb": "get", "latency_ms": 300, "count": 1}),
    )
    .await;
    let t = Instant::now();
    nodes.get(&node_name(0)).await.expect("answered late");
    assert!(t.elapsed() >= Duration::from_millis(300));
    // A reset: the answer breaks mid-body; kube-rs gets a transport error, not a value.
    fault(
        &sim,
        json!({"resource": "nodes", "verb": "list", "reset": true, "count": 1}),
    )
    .await;
    let e = nodes.list(&ListParams::default()).await.unwrap_err();
    assert!(code(&e).is_none(), "a broken connection, not a Status: {e}");
    // A hang: no answer while the fault stands; the client's own timeout ends the wait.
    fault(
        &sim,
        json!({"resource": "nodes", "verb": "get", "hang": true}),
    )
    .await;
    let hung = tokio::time::timeout(Duration::from_millis(500), nodes.get(&node_name(0))).await;
    assert!(hung.is_err(), "no answer to a hanging request");
    // Cleared while a request hangs: the request ends unanswered (never a late success).
    let pending = tokio::spawn({
        let nodes = nodes.clone();
        async move { nodes.get(&node_name(0)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished());
    let (status, answer) = control(&sim, "POST", "/_sim/faults", json!({})).await;
    assert_eq!((status, answer["cleared"].as_u64()), (200, Some(1)));
    let ended = tokio::time::timeout(Duration::from_secs(2), pending)
        .await
        .expect("the hung request ends when its fault is cleared")
        .unwrap();
    assert!(ended.is_err(), "ended without an answer: {ended:?}");
    nodes.get(&node_name(0)).await.expect("healthy again");
    // The journal saw each of them.
    let log = sim.cluster.journal().requests();
    let faults: Vec<&str> = log.iter().filter_map(|r| r.fault.as_deref()).collect();
    for kind in ["latency", "reset", "hang"] {
        assert!(faults.contains(&kind), "{kind} in {faults:?}");
    }
    assert!(
        log.iter()
            .any(|r| r.fault.as_deref() == Some("hang") && r.status == 0),
        "a hang is logged as unanswered"
    );
}

#[tokio::test]
async fn dropped_and_expired_watches_are_survived_by_kube_runtime() {
    let sim = cluster(2, 1, Some("")).await;
    let c = client(&sim).await;
    let nodes: Api<Node> = Api::all(c);
    // What each fault does on the wire.
    let raw = |path: &str| {
        let url = format!("{}{path}", sim.cluster.url());
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    fault(
        &sim,
        json!({"resource": "nodes", "verb": "watch", "drop": true, "count": 1}),
    )
    .await;
    let dropped = tokio::time::timeout(Duration::from_secs(5), raw("/api/v1/nodes?watch=true"))
        .await
        .expect("a dropped watch ends");
    assert_eq!(
        dropped.lines().count(),
        2,
        "the initial ADDED events, then the end"
    );
    fault(
        &sim,
        json!({"resource": "nodes", "verb": "watch", "expire": true, "count": 1}),
    )
    .await;
    let expired = raw("/api/v1/nodes?watch=true&resourceVersion=5").await;
    let event: Value = serde_json::from_str(expired.lines().next().unwrap()).unwrap();
    assert_eq!(
        (event["type"].as_str(), event["object"]["code"].as_u64()),
        (Some("ERROR"), Some(410))
    );
    // kube-runtime's watcher: two drops and an expiry, and it still sees a later change.
    fault(
        &sim,
        json!([
            {"resource": "nodes", "verb": "watch", "drop": true, "count": 2},
            {"resource": "nodes", "verb": "watch", "expire": true, "count": 1},
        ]),
    )
    .await;
    let mut stream = watcher(nodes.clone(), watcher::Config::default()).boxed();
    let seen = tokio::spawn(async move {
        while let Some(e) = stream.next().await {
            if let Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) = e
                && n.metadata
                    .labels
                    .unwrap_or_default()
                    .get("changed")
                    .map(String::as_str)
                    == Some("yes")
            {
                return true;
            }
        }
        false
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    nodes
        .patch(
            &node_name(1),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"changed": "yes"}}})),
        )
        .await
        .unwrap();
    let found = tokio::time::timeout(Duration::from_secs(20), seen)
        .await
        .expect("the watcher recovers from dropped and expired watches")
        .unwrap();
    assert!(found);
}

#[tokio::test]
async fn a_hung_eviction_makes_kubectl_drain_time_out_as_on_a_real_cluster() {
    let sim = cluster(3, 1, Some(&web(3, "maxUnavailable: 1"))).await;
    let pods: Api<Pod> = Api::namespaced(client(&sim).await, "default");
    eventually("web runs", Duration::from_secs(10), || async {
        crate::support::web_running(&pods).await == 3
    })
    .await;
    fault(
        &sim,
        json!({"resource": "pods/eviction", "verb": "create", "hang": true}),
    )
    .await;
    let node = node_name(0);
    // kubectl's --timeout is checked between eviction attempts: an eviction that never
    // answers holds `kubectl drain` past it (as on a real cluster whose connection hangs).
    let stuck = tokio::time::timeout(
        Duration::from_secs(8),
        kubectl(
            &sim,
            &["drain", &node, "--ignore-daemonsets", "--timeout=2s"],
        ),
    )
    .await;
    assert!(
        stuck.is_err(),
        "kubectl drain is still waiting 6 s after its --timeout"
    );
    // With a request timeout each hung eviction fails, and the drain gives up.
    let t = Instant::now();
    let out = kubectl(
        &sim,
        &[
            "drain",
            &node,
            "--ignore-daemonsets",
            "--timeout=5s",
            "--request-timeout=2s",
        ],
    )
    .await;
    let took = t.elapsed();
    assert!(
        !out.ok,
        "the drain cannot finish: {}{}",
        out.stdout, out.stderr
    );
    assert!(
        out.stderr.contains("error when evicting")
            && (out.stderr.contains("Client.Timeout exceeded")
                || out.stderr.contains("context deadline exceeded")),
        "kubectl says its evictions timed out: {}",
        out.stderr
    );
    assert!(took < Duration::from_secs(30), "kubectl gave up ({took:?})");
    // The node was cordoned, as kubectl does first; no pod left through a hung eviction.
    let nodes: Api<Node> = Api::all(client(&sim).await);
    let n = nodes.get(&node).await.unwrap();
    assert_eq!(n.spec.unwrap().unschedulable, Some(true));
    assert!(
        sim.cluster
            .journal()
            .pod_events()
            .iter()
            .filter(|e| matches!(e.step, PodStep::Deleting | PodStep::Removed))
            .all(|e| e.node.as_deref() != Some(node.as_str())),
        "nothing was deleted on {node}"
    );
    // kubectl's own request timeout against a hung list, and a 503 as kubectl prints it.
    control(&sim, "DELETE", "/_sim/faults", Value::Null).await;
    fault(
        &sim,
        json!({"resource": "nodes", "verb": "list", "hang": true}),
    )
    .await;
    let out = kubectl(&sim, &["get", "nodes", "--request-timeout=1s"]).await;
    assert!(!out.ok, "{}", out.stdout);
    control(&sim, "DELETE", "/_sim/faults", Value::Null).await;
    assert!(
        out.stderr.contains("Timeout") || out.stderr.contains("deadline exceeded"),
        "{}",
        out.stderr
    );
    fault(
        &sim,
        json!({"resource": "pods", "verb": "list", "status": 503, "count": 10}),
    )
    .await;
    let out = kubectl(&sim, &["get", "pods", "-A"]).await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("the server is currently unable to handle the request"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_terminated_instance_loses_its_pods_and_its_node() {
    let sim = cluster(3, 1, Some(&web(3, "maxUnavailable: 1"))).await;
    let c = client(&sim).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let nodes: Api<Node> = Api::all(c);
    let on = |node: String| {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
                .await
                .unwrap()
                .items
        }
    };
    eventually("a web pod on node 0", Duration::from_secs(10), || async {
        on(node_name(0))
            .await
            .iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
    let lost: Vec<String> = on(node_name(0))
        .await
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect();
    let (status, _) = control(
        &sim,
        "POST",
        &format!("/_sim/nodes/{}/terminate", node_name(0)),
        json!({"delete_after_seconds": 1}),
    )
    .await;
    assert_eq!(status, 200);
    let n = nodes.get(&node_name(0)).await.unwrap();
    let ready = n
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "Unknown", "NotReady at once");
    eventually("the node is deleted", Duration::from_secs(10), || async {
        nodes.get_opt(&node_name(0)).await.unwrap().is_none()
    })
    .await;
    eventually(
        "its pods are gone and replaced",
        Duration::from_secs(10),
        || async {
            let all = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
                .items;
            all.len() == 3
                && all
                    .iter()
                    .all(|p| !lost.contains(p.metadata.uid.as_ref().unwrap()))
        },
    )
    .await;
    let removed: Vec<_> = sim
        .cluster
        .journal()
        .pod_events()
        .into_iter()
        .filter(|e| lost.contains(&e.uid) && e.step == PodStep::Removed)
        .collect();
    assert!(!removed.is_empty());
    assert!(
        removed
            .iter()
            .all(|e| e.node_gone && e.graceful == Some(false)),
        "lost, not stopped: {removed:?}"
    );
    let (status, _) = control(&sim, "POST", "/_sim/nodes/nowhere/terminate", json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_control_api_lists_removes_and_refuses_bad_faults() {
    let sim = cluster(1, 1, Some("")).await;
    fault(
        &sim,
        json!({"resource": "pods", "status": 500, "rate": 0.5}),
    )
    .await;
    fault(&sim, json!({"verb": "watch", "drop": true, "count": 3})).await;
    let (_, listed) = control(&sim, "GET", "/_sim/faults", Value::Null).await;
    let ids: Vec<u64> = listed["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(listed["faults"][1]["remaining"], 3);
    let (status, _) = control(
        &sim,
        "DELETE",
        &format!("/_sim/faults/{}", ids[0]),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    let (_, listed) = control(&sim, "GET", "/_sim/faults", Value::Null).await;
    assert_eq!(listed["faults"].as_array().unwrap().len(), 1);
    for bad in [
        json!({"status": 200}),
        json!({"hang": true, "reset": true}),
        json!({"verb": "poke", "hang": true}),
        json!({"resource": "pods"}),
        json!({"hang": true, "color": "red"}),
        json!([{"hang": true}, {"status": 99}]),
    ] {
        let (status, answer) = control(&sim, "POST", "/_sim/faults", bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (_, listed) = control(&sim, "GET", "/_sim/faults", Value::Null).await;
    assert_eq!(
        listed["faults"].as_array().unwrap().len(),
        1,
        "a refused list adds nothing"
    );
}

#[tokio::test]
async fn fidelity_failed_patches_and_forbidden_unknown_paths_answer_as_a_real_server() {
    let sim = cluster(1, 1, Some("")).await;
    let nodes: Api<Node> = Api::all(client(&sim).await);
    let bad = Patch::<Value>::Json(
        serde_json::from_value(json!([{"op": "remove", "path": "/spec/nothing"}])).unwrap(),
    );
    let e = nodes
        .patch(&node_name(0), &PatchParams::default(), &bad)
        .await
        .unwrap_err();
    match e {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422);
            assert_eq!(s.reason, "Invalid");
            assert_eq!(
                s.message,
                "the server rejected our request due to an error in our request"
            );
        }
        other => panic!("{other}"),
    }

    let secure = secure_cluster(1, 1, Some(""), &[("kube-system", "nobody")]).await;
    let token = secure
        .cluster
        .token_of("kube-system", "nobody")
        .unwrap()
        .to_owned();
    let nobody = token_client(&secure.cluster, Some(&token));
    let admin = client(&secure).await;
    let get = |c: &kube::Client, path: &str| {
        let c = c.clone();
        let req = http::Request::get(path).body(Vec::new()).unwrap();
        async move { c.request::<Value>(req).await }
    };
    let status_of = |r: Result<Value, kube::Error>| match r {
        Ok(_) => (200, String::new()),
        Err(kube::Error::Api(s)) => (s.code, s.message),
        Err(e) => panic!("{e}"),
    };
    let (code, message) = status_of(
        get(
            &nobody,
            "/apis/widgets.example.com/v1/namespaces/default/widgets",
        )
        .await,
    );
    assert_eq!(code, 403, "authorization before routing: {message}");
    assert!(
        message.contains("cannot list resource \"widgets\" in API group \"widgets.example.com\""),
        "{message}"
    );
    assert_eq!(status_of(get(&nobody, "/no/such/path").await).0, 403);
    assert_eq!(
        status_of(get(&admin, "/apis/widgets.example.com/v1/widgets").await).0,
        404,
        "who may ask learns it is not there"
    );
    // The control API is the admin's alone over TLS.
    assert_eq!(status_of(get(&nobody, "/_sim/faults").await).0, 401);
    assert_eq!(status_of(get(&admin, "/_sim/faults").await).0, 200);
}
