//! The fault-injecting proxy of `tests/support/fault_proxy.rs` in front of the real API
//! server: with no fault it is transparent (the real authenticator and RBAC judge the client's
//! own token), and each fault does what the simulator's does.

use std::time::Duration;

use axum::http::Method;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use sih_sim_cluster::faults::FaultSpec;

use crate::fault_proxy::{FaultProxy, classify};
use crate::real_cluster::{Bound, ControlPlane, client_for};

fn fault(s: &str) -> FaultSpec {
    FaultSpec::parse_flag(s).unwrap()
}

fn status_of(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[tokio::test]
async fn each_fault_on_the_real_api_server() {
    let cp = ControlPlane::start().await;
    cp.add_nodes(&[sih_sim_cluster::workload::node(0, true)])
        .await;
    let proxy = FaultProxy::start(&cp.kubeconfig).await;
    let dir = cp.dir.join("prober");
    cp.kubectl_must(&["create", "serviceaccount", "prober", "-n", "default"]);
    let token = cp
        .service_account_token("default", "prober", Bound::Nothing)
        .await;
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("proxy.kubeconfig");
    std::fs::write(&file, proxy.kubeconfig(&token)).unwrap();
    let client = client_for(&file).await;
    let nodes: Api<Node> = Api::all(client.clone());

    // Transparent: the real RBAC judges the token the proxy passes on.
    let refused = nodes.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(status_of(&refused), Some(403), "{refused}");
    cp.kubectl_must(&[
        "create",
        "clusterrolebinding",
        "prober",
        "--clusterrole",
        "cluster-admin",
        "--serviceaccount",
        "default:prober",
    ]);
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while nodes.list(&ListParams::default()).await.is_err() {
        assert!(tokio::time::Instant::now() < end, "the binding never took");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let name = sih_sim_cluster::workload::node(0, true)["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(nodes.get(&name).await.is_ok());

    // A status, with the real Status body's reason.
    let id = proxy
        .faults
        .add(fault("resource=nodes,verb=get,status=503"))
        .unwrap();
    let e = nodes.get(&name).await.unwrap_err();
    assert_eq!(status_of(&e), Some(503), "{e}");
    assert!(
        nodes.list(&ListParams::default()).await.is_ok(),
        "only gets"
    );
    proxy.faults.remove(id);

    // Latency: answered, late.
    let id = proxy
        .faults
        .add(fault("resource=nodes,latency_ms=400"))
        .unwrap();
    let started = tokio::time::Instant::now();
    assert!(nodes.get(&name).await.is_ok());
    assert!(started.elapsed() >= Duration::from_millis(400));
    proxy.faults.remove(id);

    // A hang: never answered, and never carried out once the client gave up.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let id = proxy
        .faults
        .add(fault("resource=pods,verb=create,hang"))
        .unwrap();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hung"},
        "spec": {"nodeName": name, "containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    let hung = tokio::time::timeout(
        Duration::from_millis(800),
        pods.create(&PostParams::default(), &pod),
    )
    .await;
    assert!(hung.is_err(), "a hung create answered: {hung:?}");
    proxy.faults.remove(id);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        pods.get_opt("hung").await.unwrap().map(|p| p.metadata.name),
        None,
        "a request its client gave up on took effect"
    );

    // A reset: the answer starts, then the connection breaks (no status to read).
    let id = proxy
        .faults
        .add(fault("resource=nodes,verb=list,reset"))
        .unwrap();
    let e = nodes.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(status_of(&e), None, "{e}");
    proxy.faults.remove(id);

    // A dropped watch ends early and cleanly; an expired one says 410.
    let id = proxy
        .faults
        .add(fault("resource=nodes,verb=watch,drop"))
        .unwrap();
    let stream = nodes
        .watch(&WatchParams::default().timeout(60), "0")
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.collect::<Vec<_>>()).await;
    let events = ended.expect("a dropped watch ends at once");
    assert!(events.iter().all(Result::is_ok), "{events:?}");
    proxy.faults.remove(id);
    let id = proxy
        .faults
        .add(fault("resource=nodes,verb=watch,expire"))
        .unwrap();
    let mut stream = nodes
        .watch(&WatchParams::default().timeout(60), "1")
        .await
        .unwrap()
        .boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(s))) => assert_eq!(s.code, 410),
        other => panic!("an expired watch: {other:?}"),
    }
    proxy.faults.remove(id);

    // The proxy's journal, as the simulator's: the real server's answer, the fault met.
    let journal = proxy.journal.requests();
    assert!(
        journal
            .iter()
            .any(|r| r.status == 403 && r.verb == "list" && r.resource.as_deref() == Some("nodes")),
        "{journal:?}"
    );
    assert!(journal.iter().any(|r| r.fault.as_deref() == Some("hang")
        && r.verb == "create"
        && r.resource.as_deref() == Some("pods")));
    let totals = proxy.faults.totals();
    for effect in ["status", "latency", "hang", "reset", "drop", "expire"] {
        assert_eq!(totals.get(effect), Some(&1), "{effect}: {totals:?}");
    }
}

#[test]
fn paths_read_as_the_api_server_reads_them() {
    let c = |m: Method, p: &'static str, w: bool| {
        let i = classify(&m, p, w);
        (i.verb, i.resource, i.namespace, i.name)
    };
    assert_eq!(
        c(
            Method::POST,
            "/api/v1/namespaces/default/pods/web-1/eviction",
            false
        ),
        (
            "create",
            Some(("pods", Some("eviction"))),
            Some("default"),
            Some("web-1")
        )
    );
    assert_eq!(
        c(Method::GET, "/api/v1/pods", true),
        ("watch", Some(("pods", None)), None, None)
    );
    assert_eq!(
        c(Method::PATCH, "/api/v1/nodes/n1", false),
        ("patch", Some(("nodes", None)), None, Some("n1"))
    );
    assert_eq!(
        c(
            Method::GET,
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
            false
        ),
        ("list", Some(("leases", None)), Some("kube-system"), None)
    );
    assert_eq!(
        c(Method::GET, "/api/v1/namespaces/default", false),
        ("get", Some(("namespaces", None)), None, Some("default"))
    );
    assert_eq!(c(Method::GET, "/version", false).1, None);
}
