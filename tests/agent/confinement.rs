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

const RESERVE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/manifests/reserve-capacity.yaml"
);

/// Issue 31: with capacity first installed, an agent may create pods, but the policy lets it
/// create only placeholders as we make them, for its own node (the pause image alone, our
/// class, nothing mounted), and delete only those of its placeholders wherever they run.
#[tokio::test]
async fn an_agent_creates_and_removes_only_placeholders_for_its_own_node() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::PostParams;
    let cp = ControlPlane::start().await;
    let a = sih_sim_cluster::workload::node(0, true);
    let b = sih_sim_cluster::workload::node(1, true);
    let (node_a, node_b) = (
        a["metadata"]["name"].as_str().unwrap().to_owned(),
        b["metadata"]["name"].as_str().unwrap().to_owned(),
    );
    cp.add_nodes(&[a, b]).await;
    cp.kubectl_must(&["apply", "-f", MANIFEST, "-f", RESERVE]);
    let nodes: Api<Node> = Api::all(cp.client.clone());
    let (obj_a, obj_b) = (
        nodes.get(&node_a).await.unwrap(),
        nodes.get(&node_b).await.unwrap(),
    );
    // The pod a placeholder stands for: asks for some CPU, has a controller.
    let leaving: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "default",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u", "controller": true}]},
        "spec": {"nodeName": node_a, "containers": [{"name": "web", "image": "nginx",
            "resources": {"requests": {"cpu": "1"}}}]}
    }))
    .unwrap();
    let image = sih_node::reserve::DEFAULT_IMAGE;
    let for_a = sih_node::reserve::placeholder(&leaving, &obj_a, true, image).unwrap();
    let mut for_b = sih_node::reserve::placeholder(&leaving, &obj_b, true, image).unwrap();
    // Kept Pending: bound to node A by the scheduler it would be a pod on A, which the agent
    // may delete for that reason alone.
    for_b.spec.as_mut().unwrap().node_selector =
        Some([("nowhere".to_owned(), "true".to_owned())].into());
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
    let create = |client: &kube::Client, pod: &Pod| {
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");
        let pod = pod.clone();
        async move { refusal(api.create(&PostParams::default(), &pod).await) }
    };

    // In force once loaded: a placeholder for node B is refused.
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    let refused = loop {
        match create(&agent, &for_b).await {
            Some(r) => break r,
            None => {
                // Created before the policy was in force: take it back and try again.
                let _ = delete_pod(&cp.client, for_b.metadata.name.as_deref().unwrap()).await;
            }
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the policy is not in force after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(refused.0, 403, "{refused:?}");
    assert!(
        refused.1.contains(&format!(
            "may create only capacity placeholders for its own node ({node_a})"
        )),
        "{refused:?}"
    );
    assert_eq!(
        create(&agent, &for_a).await,
        None,
        "its own node's placeholder"
    );

    // Anything else it might be tricked into: another image, a volume, the host's network,
    // a plain pod.
    let mut other_image = for_a.clone();
    other_image.metadata.name = Some("sih-reserve-evil-image".into());
    other_image.spec.as_mut().unwrap().containers[0].image = Some("evil".into());
    let mut host = for_a.clone();
    host.metadata.name = Some("sih-reserve-evil-host".into());
    host.spec.as_mut().unwrap().host_network = Some(true);
    let mut volume = for_a.clone();
    volume.metadata.name = Some("sih-reserve-evil-volume".into());
    volume.spec.as_mut().unwrap().volumes = Some(vec![
        serde_json::from_value(json!({"name": "root", "hostPath": {"path": "/"}})).unwrap(),
    ]);
    let plain: Pod = serde_saphyr::from_str(&bare_pod("plain", &node_a)).unwrap();
    for (what, pod) in [
        ("another image", &other_image),
        ("the host's network", &host),
        ("a host volume", &volume),
        ("a plain pod", &plain),
    ] {
        let refused = create(&agent, pod)
            .await
            .unwrap_or_else(|| panic!("{what} created"));
        assert_eq!(refused.0, 403, "{what}: {refused:?}");
    }

    // Its own placeholder goes wherever it runs (or waits); node B's does not.
    let api: Api<Pod> = Api::namespaced(cp.client.clone(), "default");
    api.create(&PostParams::default(), &for_b).await.unwrap();
    let refused = delete_pod(&agent, for_b.metadata.name.as_deref().unwrap())
        .await
        .expect("refused");
    assert_eq!(refused.0, 403, "{refused:?}");
    assert_eq!(
        delete_pod(&agent, for_a.metadata.name.as_deref().unwrap()).await,
        None,
        "its own placeholder"
    );
}
