//! `simulate cluster --tls`: HTTPS, bearer tokens and RBAC, driven by the real kubectl and by
//! kube-rs, with the ClusterRole from `deploy/manifests`.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::support::{
    Sim, eventually, kubectl, kubectl_ok, node_name, secure_cluster, token_client, web,
};

pub const MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/manifests/spot-interrupt-handler.yaml"
);
const SA: (&str, &str) = ("kube-system", "spot-interrupt-handler");
const SA_USER: &str = "system:serviceaccount:kube-system:spot-interrupt-handler";

async fn with_manifest(nodes: usize, spot: usize) -> Sim {
    let sim = secure_cluster(nodes, spot, Some(&web(4, "maxUnavailable: 1")), &[SA]).await;
    kubectl_ok(&sim, &["apply", "-f", MANIFEST]).await;
    sim
}

fn token(sim: &Sim) -> String {
    sim.cluster.token_of(SA.0, SA.1).unwrap().to_owned()
}

fn api_code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("not an API error: {other:?}"),
    }
}

#[tokio::test]
async fn kubectl_over_tls_with_the_admin_kubeconfig() {
    let sim = with_manifest(4, 2).await;
    assert!(sim.cluster.url().starts_with("https://127.0.0.1:"));
    let nodes = kubectl_ok(&sim, &["get", "nodes"]).await;
    assert_eq!(nodes.lines().count(), 5, "{nodes}");
    // The DaemonSet from the manifest runs on the two spot nodes only.
    eventually(
        "the DaemonSet on the spot nodes",
        Duration::from_secs(10),
        || async {
            let out = kubectl_ok(
                &sim,
                &[
                    "get",
                    "daemonset",
                    "spot-interrupt-handler",
                    "-n",
                    "kube-system",
                    "-o",
                    "jsonpath={.status.desiredNumberScheduled} {.status.currentNumberScheduled}",
                ],
            )
            .await;
            out == "2 2"
        },
    )
    .await;
    let drained = kubectl_ok(
        &sim,
        &[
            "drain",
            &node_name(2),
            "--ignore-daemonsets",
            "--timeout",
            "30s",
        ],
    )
    .await;
    assert!(drained.contains("drained"), "{drained}");
    // Plain HTTP to the HTTPS port gets nothing, and the server keeps serving.
    let plain = sim.cluster.url().replace("https://", "http://");
    assert!(reqwest::get(format!("{plain}/api/v1/nodes")).await.is_err());
    kubectl_ok(&sim, &["get", "nodes"]).await;
}

#[tokio::test]
async fn kubectl_with_a_service_account_token() {
    let sim = with_manifest(3, 1).await;
    let t = token(&sim);
    let can = |args: Vec<String>| {
        let sim = &sim;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl(sim, &args).await
        }
    };
    // kubectl reads `pods/eviction` as TYPE/NAME (a pod named "eviction"), on a real cluster
    // too; the subresource is asked for with --subresource.
    let yes = can(vec![
        "auth".into(),
        "can-i".into(),
        "create".into(),
        "pods".into(),
        "--subresource=eviction".into(),
        "-n".into(),
        "default".into(),
        "--token".into(),
        t.clone(),
    ])
    .await;
    assert!(
        yes.ok && yes.stdout.trim() == "yes",
        "{}{}",
        yes.stdout,
        yes.stderr
    );
    let patch = can(vec![
        "auth".into(),
        "can-i".into(),
        "patch".into(),
        "nodes".into(),
        "--token".into(),
        t.clone(),
    ])
    .await;
    assert_eq!(patch.stdout.trim(), "yes");
    let no = can(vec![
        "auth".into(),
        "can-i".into(),
        "delete".into(),
        "nodes".into(),
        "--token".into(),
        t.clone(),
    ])
    .await;
    assert!(
        !no.ok && no.stdout.trim() == "no",
        "{}{}",
        no.stdout,
        no.stderr
    );

    let node = node_name(0);
    let denied = kubectl(&sim, &["delete", "node", &node, "--token", &t]).await;
    assert!(!denied.ok);
    assert!(
        denied.stderr.contains(&format!(
            "Error from server (Forbidden): nodes \"{node}\" is forbidden: User \"{SA_USER}\" cannot delete resource \"nodes\" in API group \"\" at the cluster scope"
        )),
        "{}",
        denied.stderr
    );
    // A token made the kubectl way works and is bound by what the manifest's binding says
    // (nothing, for this new account).
    kubectl_ok(
        &sim,
        &["create", "serviceaccount", "reader", "-n", "default"],
    )
    .await;
    let reader = kubectl_ok(&sim, &["create", "token", "reader", "-n", "default"]).await;
    let reader = reader.trim();
    let list = kubectl(&sim, &["get", "pods", "--token", reader]).await;
    assert!(
        list.stderr.contains("cannot list resource \"pods\""),
        "{}",
        list.stderr
    );
    kubectl_ok(
        &sim,
        &[
            "create",
            "clusterrole",
            "pod-reader",
            "--verb=get,list",
            "--resource=pods",
        ],
    )
    .await;
    kubectl_ok(
        &sim,
        &[
            "create",
            "rolebinding",
            "reader",
            "-n",
            "default",
            "--clusterrole=pod-reader",
            "--serviceaccount=default:reader",
        ],
    )
    .await;
    let list = kubectl(&sim, &["get", "pods", "--token", reader]).await;
    assert!(
        list.ok && list.stdout.contains("web-"),
        "{}{}",
        list.stdout,
        list.stderr
    );
    let elsewhere = kubectl(
        &sim,
        &["get", "pods", "-n", "kube-system", "--token", reader],
    )
    .await;
    assert!(!elsewhere.ok, "a RoleBinding grants only in its namespace");
}

#[tokio::test]
async fn kube_rs_over_tls_with_tokens() {
    let sim = with_manifest(3, 1).await;
    let client = token_client(&sim.cluster, Some(&token(&sim)));
    let nodes: Api<Node> = Api::all(client.clone());
    let n = nodes
        .get(&node_name(0))
        .await
        .expect("get nodes is allowed");
    assert_eq!(n.metadata.name.as_deref(), Some(node_name(0).as_str()));
    let pods: Api<Pod> = Api::all(client.clone());
    pods.list(&ListParams::default().fields(&format!("spec.nodeName={}", node_name(0))))
        .await
        .expect("list pods is allowed");
    let e = nodes
        .delete(&node_name(0), &DeleteParams::default())
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), 403);
    let e = nodes.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(api_code(&e), 403, "the agent's role does not list nodes");
    if let kube::Error::Api(s) = &e {
        assert_eq!(s.reason, "Forbidden");
    }
    let anonymous = token_client(&sim.cluster, None);
    let e = Api::<Node>::all(anonymous)
        .get(&node_name(0))
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), 401);
}

#[tokio::test]
async fn bad_credentials_and_broken_rbac_objects_get_401_and_403_never_a_crash() {
    let sim = with_manifest(2, 1).await;
    let url = format!("{}/api/v1/nodes", sim.cluster.url());
    let ca = reqwest::Certificate::from_pem(sim.cluster.ca_pem().unwrap().as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let long = "x".repeat(10_000);
    for auth in [
        "Bearer",
        "Bearer ",
        "Basic YWRtaW46YWRtaW4=",
        "bearer not-a-token",
        &format!("Bearer {long}"),
    ] {
        let r = http
            .get(&url)
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{auth:.20}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["reason"], "Unauthorized");
    }
    // An expired token.
    let admin = crate::support::client_for(&sim.cluster);
    let tr: serde_json::Value = admin
        .request(
            http::Request::post(format!(
                "/api/v1/namespaces/{}/serviceaccounts/{}/token",
                SA.0, SA.1
            ))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 1}})).unwrap())
            .unwrap(),
        )
        .await
        .unwrap();
    let short = tr["status"]["token"].as_str().unwrap().to_owned();
    let nodes = Api::<Node>::all(token_client(&sim.cluster, Some(&short)));
    nodes.get(&node_name(0)).await.expect("valid for a second");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(api_code(&nodes.get(&node_name(0)).await.unwrap_err()), 401);

    // A deleted service account's token dies with it, even if the account is created again.
    let sa_token = token(&sim);
    kubectl_ok(&sim, &["delete", "serviceaccount", SA.1, "-n", SA.0]).await;
    let nodes = Api::<Node>::all(token_client(&sim.cluster, Some(&sa_token)));
    assert_eq!(api_code(&nodes.get(&node_name(0)).await.unwrap_err()), 401);
    kubectl_ok(&sim, &["create", "serviceaccount", SA.1, "-n", SA.0]).await;
    assert_eq!(api_code(&nodes.get(&node_name(0)).await.unwrap_err()), 401);

    // Bindings that point at roles that do not exist grant nothing.
    kubectl_ok(&sim, &["create", "serviceaccount", "lost", "-n", "default"]).await;
    kubectl_ok(
        &sim,
        &[
            "create",
            "clusterrolebinding",
            "lost",
            "--clusterrole=no-such-role",
            "--serviceaccount=default:lost",
        ],
    )
    .await;
    kubectl_ok(
        &sim,
        &[
            "create",
            "rolebinding",
            "lost",
            "-n",
            "default",
            "--role=no-such-role",
            "--serviceaccount=default:lost",
        ],
    )
    .await;
    let lost = kubectl_ok(&sim, &["create", "token", "lost", "-n", "default"]).await;
    let pods = Api::<Pod>::default_namespaced(token_client(&sim.cluster, Some(lost.trim())));
    assert_eq!(
        api_code(&pods.list(&ListParams::default()).await.unwrap_err()),
        403
    );
    // A token for an account that does not exist is refused with 404, not issued.
    let e = admin
        .request::<serde_json::Value>(
            http::Request::post("/api/v1/namespaces/default/serviceaccounts/ghost/token")
                .header("content-type", "application/json")
                .body(b"{}".to_vec())
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), 404);
    // And the server is still fine.
    Api::<Pod>::default_namespaced(admin)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "still-here"}, "spec": {"containers": [{"name": "c", "image": "x"}]}})).unwrap(),
        )
        .await
        .unwrap();
}
