//! The real kubectl against the simulator: what it shows, and its cordon, taint, label,
//! annotate, apply, scale, delete and drain behaving as on a real cluster.

use std::time::Duration;

use serde_json::Value;

use crate::support::{cluster, eventually, kubectl, kubectl_ok, node_name, web};

async fn json(sim: &crate::support::Sim, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl_ok(sim, &all).await).expect("kubectl -o json")
}

async fn settled(sim: &crate::support::Sim, ready: usize) {
    eventually("the web pods run", Duration::from_secs(10), || async {
        let d = json(sim, &["get", "deploy", "web"]).await;
        d["status"]["readyReplicas"].as_u64() == Some(ready as u64)
    })
    .await;
}

#[tokio::test]
async fn get_nodes_and_pods_wide() {
    let sim = cluster(4, 2, Some(&web(4, "maxUnavailable: 1"))).await;
    settled(&sim, 4).await;
    let out = kubectl_ok(&sim, &["get", "nodes,pods", "-A", "-o", "wide"]).await;
    assert_eq!(out.matches(" Ready ").count(), 4, "{out}");
    assert!(
        out.contains("INTERNAL-IP") && out.contains("NODE"),
        "wide columns: {out}"
    );
    assert_eq!(
        out.matches("Running").count(),
        8,
        "4 web pods and 4 daemon pods: {out}"
    );
    let spot = kubectl_ok(
        &sim,
        &["get", "nodes", "-l", "lifecycle=Ec2Spot", "-o", "name"],
    )
    .await;
    assert_eq!(spot.lines().count(), 2);
    let ds = kubectl_ok(&sim, &["get", "daemonsets", "-n", "kube-system"]).await;
    let row: Vec<&str> = ds.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..4],
        ["agent", "4", "4", "4"],
        "NAME DESIRED CURRENT READY: {ds}"
    );
}

#[tokio::test]
async fn cordon_taint_label_and_annotate_round_trip() {
    let sim = cluster(2, 1, Some("")).await;
    let n = node_name(0);
    kubectl_ok(&sim, &["cordon", &n]).await;
    kubectl_ok(&sim, &["taint", "nodes", &n, "k=v:NoSchedule"]).await;
    kubectl_ok(&sim, &["label", "node", &n, "team=spot"]).await;
    kubectl_ok(&sim, &["annotate", "node", &n, "note=hello"]).await;
    let node = json(&sim, &["get", "node", &n]).await;
    assert_eq!(node["spec"]["unschedulable"], true);
    assert_eq!(node["spec"]["taints"][0]["key"], "k");
    assert_eq!(node["metadata"]["labels"]["team"], "spot");
    assert_eq!(node["metadata"]["annotations"]["note"], "hello");
    assert!(
        kubectl_ok(&sim, &["get", "nodes"])
            .await
            .contains("Ready,SchedulingDisabled")
    );

    kubectl_ok(&sim, &["taint", "nodes", &n, "k-"]).await;
    kubectl_ok(&sim, &["uncordon", &n]).await;
    kubectl_ok(&sim, &["label", "node", &n, "team-"]).await;
    let node = json(&sim, &["get", "node", &n]).await;
    assert!(
        node["spec"]["taints"]
            .as_array()
            .is_none_or(|t| t.is_empty())
    );
    assert!(node["spec"]["unschedulable"].is_null() || node["spec"]["unschedulable"] == false);
    assert!(node["metadata"]["labels"]["team"].is_null());
}

#[tokio::test]
async fn apply_scale_and_delete_pod_get_replaced() {
    let sim = cluster(3, 1, Some("")).await;
    let path = std::env::temp_dir().join(format!("sih-apply-{}.yaml", sim.cluster.addr().port()));
    let manifest = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n---\n{}",
        web(2, "minAvailable: 1")
            .replace("namespace: default", "namespace: shop")
            .replace("namespace: kube-system", "namespace: shop")
    );
    std::fs::write(&path, manifest).unwrap();
    let applied = kubectl_ok(&sim, &["apply", "-f", path.to_str().unwrap()]).await;
    assert!(
        applied.contains("deployment.apps/web created")
            && applied.contains("daemonset.apps/agent created"),
        "{applied}"
    );
    let again = kubectl_ok(&sim, &["apply", "-f", path.to_str().unwrap()]).await;
    assert!(again.contains("deployment.apps/web unchanged"), "{again}");
    std::fs::remove_file(&path).unwrap();

    kubectl_ok(
        &sim,
        &["scale", "-n", "shop", "deployment/web", "--replicas=5"],
    )
    .await;
    eventually("5 replicas ready", Duration::from_secs(10), || async {
        json(&sim, &["get", "deploy", "-n", "shop", "web"]).await["status"]["readyReplicas"] == 5
    })
    .await;
    let pods = json(&sim, &["get", "pods", "-n", "shop", "-l", "app=web"]).await;
    let victim = pods["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    kubectl_ok(&sim, &["delete", "pod", "-n", "shop", &victim]).await;
    eventually("a replacement runs", Duration::from_secs(10), || async {
        let pods = json(&sim, &["get", "pods", "-n", "shop", "-l", "app=web"]).await;
        let items = pods["items"].as_array().unwrap();
        items.len() == 5
            && items.iter().all(|p| {
                p["metadata"]["name"] != victim.as_str() && p["status"]["phase"] == "Running"
            })
    })
    .await;
}

#[tokio::test]
async fn drain_moves_the_deployment_elsewhere() {
    let sim = cluster(3, 1, Some(&web(6, "maxUnavailable: 1"))).await;
    settled(&sim, 6).await;
    let n = node_name(0);
    let out = kubectl(
        &sim,
        &[
            "drain",
            &n,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=60s",
        ],
    )
    .await;
    assert!(out.ok, "drain failed:\n{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("drained"), "{}", out.stdout);
    settled(&sim, 6).await;
    let pods = json(&sim, &["get", "pods", "-l", "app=web"]).await;
    for p in pods["items"].as_array().unwrap() {
        assert_ne!(
            p["spec"]["nodeName"],
            n.as_str(),
            "no web pod left on the drained node"
        );
        assert_eq!(p["status"]["phase"], "Running");
    }
    let daemon = json(
        &sim,
        &[
            "get",
            "pods",
            "-n",
            "kube-system",
            "--field-selector",
            &format!("spec.nodeName={n}"),
        ],
    )
    .await;
    assert_eq!(
        daemon["items"].as_array().unwrap().len(),
        1,
        "the DaemonSet pod stays on the cordoned node"
    );
}

#[tokio::test]
async fn drain_blocked_by_a_budget_times_out_then_succeeds_once_relaxed() {
    let sim = cluster(2, 1, Some(&web(2, "minAvailable: 2"))).await;
    settled(&sim, 2).await;
    let n = node_name(0);
    let blocked = kubectl(&sim, &["drain", &n, "--ignore-daemonsets", "--timeout=7s"]).await;
    assert!(!blocked.ok);
    let said = format!("{}{}", blocked.stdout, blocked.stderr);
    assert!(
        said.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{said}"
    );
    kubectl_ok(
        &sim,
        &[
            "patch",
            "pdb",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"minAvailable":1}}"#,
        ],
    )
    .await;
    let out = kubectl(&sim, &["drain", &n, "--ignore-daemonsets", "--timeout=60s"]).await;
    assert!(
        out.ok,
        "drain after relaxing the budget:\n{}{}",
        out.stdout, out.stderr
    );
}

#[tokio::test]
async fn daemonset_with_a_spot_node_selector_runs_only_on_spot_nodes() {
    let ds = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: spot-handler, namespace: kube-system}
spec:
  selector: {matchLabels: {app: spot-handler}}
  template:
    metadata: {labels: {app: spot-handler}}
    spec:
      nodeSelector: {lifecycle: Ec2Spot}
      containers: [{name: handler, image: spot-interrupt-handler}]
"#;
    let sim = cluster(4, 2, Some(ds)).await;
    eventually(
        "the daemon runs on both spot nodes",
        Duration::from_secs(10),
        || async {
            let out = kubectl_ok(
                &sim,
                &[
                    "get",
                    "daemonsets",
                    "-n",
                    "kube-system",
                    "spot-handler",
                    "--no-headers",
                ],
            )
            .await;
            let cols: Vec<&str> = out.split_whitespace().collect();
            cols.get(1..4) == Some(&["2", "2", "2"][..])
        },
    )
    .await;
    let pods = json(
        &sim,
        &["get", "pods", "-n", "kube-system", "-l", "app=spot-handler"],
    )
    .await;
    let spot = [node_name(0), node_name(1)];
    for p in pods["items"].as_array().unwrap() {
        let node = p["spec"]["nodeName"].as_str().unwrap();
        assert!(spot.iter().any(|s| s == node), "{node} is not a spot node");
    }
}

/// A Service's selected pods are kept in an EndpointSlice with their node and conditions, as
/// the real controller writes them; `kubectl` lists it by the Service's label.
#[tokio::test]
async fn a_service_gets_an_endpointslice_of_its_pods() {
    let sim = cluster(2, 1, Some(&web(2, "maxUnavailable: 1"))).await;
    settled(&sim, 2).await;
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n";
    let path = std::env::temp_dir().join(format!("sih-svc-{}.yaml", std::process::id()));
    std::fs::write(&path, svc).unwrap();
    kubectl_ok(&sim, &["apply", "-f", path.to_str().unwrap()]).await;
    let _ = std::fs::remove_file(&path);
    eventually("two ready endpoints", Duration::from_secs(10), || async {
        let list = json(
            &sim,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
            ],
        )
        .await;
        let eps = list["items"][0]["endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        eps.len() == 2
            && eps.iter().all(|e| {
                e["conditions"]["ready"] == true
                    && e["nodeName"].as_str().is_some_and(|n| n.starts_with("ip-"))
                    && e["targetRef"]["kind"] == "Pod"
            })
    })
    .await;
    // A pod going away is terminating, then gone from the slice.
    let pods = json(&sim, &["get", "pods", "-l", "app=web"]).await;
    let victim = pods["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    kubectl_ok(&sim, &["delete", "pod", &victim, "--wait=false"]).await;
    eventually(
        "the deleted pod leaves the slice",
        Duration::from_secs(10),
        || async {
            let list = json(&sim, &["get", "endpointslices"]).await;
            !list["items"][0]["endpoints"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .any(|e| {
                    e["targetRef"]["name"] == victim.as_str() && e["conditions"]["ready"] == true
                })
        },
    )
    .await;
}
