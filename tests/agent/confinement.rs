//! Each agent confined to its own node by the API server: the ValidatingAdmissionPolicy the
//! manifest ships, on the real control plane, against a bound token that names node A.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::real_cluster::{ControlPlane, client_for};

const MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/manifests/spot-interrupt-handler.yaml"
);

fn bare_pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 0\n  containers: [{{name: c, image: nginx}}]\n"
    )
}

/// The API server's answer to a write: Ok, or the status code and message it refused with.
fn refusal<T>(r: Result<T, kube::Error>) -> Option<(u16, String)> {
    match r {
        Ok(_) => None,
        Err(kube::Error::Api(s)) => Some((s.code, s.message)),
        Err(e) => panic!("not an answer from the API server: {e}"),
    }
}

async fn patch_node(client: &kube::Client, node: &str) -> Option<(u16, String)> {
    let patch = json!({"metadata": {"labels": {"confinement-test": "touched"}}});
    refusal(
        Api::<Node>::all(client.clone())
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    )
}

async fn delete_pod(client: &kube::Client, pod: &str) -> Option<(u16, String)> {
    refusal(
        Api::<Pod>::namespaced(client.clone(), "default")
            .delete(pod, &DeleteParams::default())
            .await,
    )
}

#[tokio::test]
async fn an_agent_changes_only_its_own_node_and_the_pods_bound_to_it() {
    let cp = ControlPlane::start().await;
    let a = sih_sim_cluster::workload::node(0, true);
    let b = sih_sim_cluster::workload::node(1, true);
    let (node_a, node_b) = (
        a["metadata"]["name"].as_str().unwrap().to_owned(),
        b["metadata"]["name"].as_str().unwrap().to_owned(),
    );
    cp.add_nodes(&[a, b]).await;
    cp.kubectl_must(&["apply", "-f", MANIFEST]);
    cp.apply(&format!(
        "{}---\n{}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: default}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: web, image: nginx}}]}}\n",
        bare_pod("on-a", &node_a),
        bare_pod("on-b", &node_b)
    ));
    let dir = cp.dir.join("agent-on-a");
    let agent = client_for(
        &cp.service_account_kubeconfig(
            "kube-system",
            "spot-interrupt-handler",
            crate::real_cluster::Bound::PodOn(&node_a),
            &dir,
        )
        .await,
    )
    .await;

    // The policy is in force once the API server has loaded it (about a second).
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    let refused = loop {
        if let Some(r) = patch_node(&agent, &node_b).await {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "an agent of node A patched node B for 20 s: the policy is not in force"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(refused.0, 403, "{refused:?}");
    assert!(
        refused.1.contains(&format!(
            "may change only its own node ({node_a}), not {node_b}"
        )),
        "{refused:?}"
    );
    assert_eq!(patch_node(&agent, &node_a).await, None, "its own node");

    let refused = delete_pod(&agent, "on-b").await.expect("refused");
    assert_eq!(refused.0, 403, "{refused:?}");
    assert!(
        refused.1.contains("may delete only pods on its own node"),
        "{refused:?}"
    );
    assert_eq!(
        delete_pod(&agent, "on-a").await,
        None,
        "a pod on its own node"
    );

    // A Deployment's replicas may change (surge), what it runs may not.
    let deployments: Api<Deployment> = Api::namespaced(agent.clone(), "default");
    let pp = PatchParams::default();
    assert!(
        deployments
            .patch("web", &pp, &Patch::Merge(&json!({"spec": {"replicas": 2}})))
            .await
            .is_ok()
    );
    let image =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "evil"}]}}}});
    let refused = refusal(
        deployments
            .patch("web", &pp, &Patch::Strategic(&image))
            .await,
    )
    .expect("refused");
    assert_eq!(refused.0, 403, "{refused:?}");

    // A token of the account that names no node (not a pod's projected token) changes no node.
    let unbound = cp.kubectl_must(&[
        "create",
        "token",
        "spot-interrupt-handler",
        "-n",
        "kube-system",
    ]);
    let kubeconfig = std::fs::read_to_string(dir.join("kubeconfig")).unwrap();
    let line = kubeconfig
        .lines()
        .find(|l| l.contains("token:"))
        .unwrap()
        .to_owned();
    let other = dir.join("unbound.kubeconfig");
    std::fs::write(
        &other,
        kubeconfig.replace(&line, &format!("  user: {{token: {}}}", unbound.trim())),
    )
    .unwrap();
    let unbound = client_for(&other).await;
    let refused = patch_node(&unbound, &node_a).await.expect("refused");
    assert_eq!(refused.0, 403, "{refused:?}");

    // The admin, and every other account, are not concerned.
    assert_eq!(patch_node(&cp.client, &node_b).await, None);
}
