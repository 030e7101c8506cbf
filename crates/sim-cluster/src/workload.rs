//! What the cluster holds at start: the system namespaces, `nodes` nodes (the first `spot` of
//! them spot capacity, named and labelled as EKS names and labels EC2 nodes), and either the
//! objects of a YAML file or a default workload.

use serde_json::{Value, json};

use crate::api::defaults;
use crate::error::ApiError;
use crate::resources::{self, NAMESPACES, storage_of};
use crate::store::Store;

pub const SPOT_LABELS: [(&str, &str); 3] = [
    ("lifecycle", "Ec2Spot"),
    ("karpenter.sh/capacity-type", "spot"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
];

/// The first node's instance: the one `simulate imds` serves by default (its address is
/// 10.0.0.10, its zone us-east-1a), so the two simulators describe one instance.
pub const FIRST_INSTANCE_ID: &str = "i-0123456789abcdef0";

/// A node as EKS registers an EC2 instance: named by its private DNS name, with its
/// providerID, hostname, instance-type and zone labels.
pub fn node(index: usize, spot: bool) -> Value {
    let ip = format!("10.0.{}.{}", index / 250, index % 250 + 10);
    let name = format!("ip-{}.ec2.internal", ip.replace('.', "-"));
    let zone = ["us-east-1a", "us-east-1b", "us-east-1c"][index % 3];
    let instance_id = match index {
        0 => FIRST_INSTANCE_ID.to_owned(),
        _ => format!(
            "i-0{:016x}",
            (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 4
        ),
    };
    let mut labels = json!({
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "m5.large", "topology.kubernetes.io/zone": zone,
        "topology.kubernetes.io/region": "us-east-1",
    });
    let capacity = if spot {
        SPOT_LABELS.to_vec()
    } else {
        vec![
            ("lifecycle", "OnDemand"),
            ("karpenter.sh/capacity-type", "on-demand"),
            ("eks.amazonaws.com/capacityType", "ON_DEMAND"),
        ]
    };
    for (k, v) in capacity {
        labels[k] = json!(v);
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels,
            "annotations": {"sim.spot-interrupt-handler/internal-ip": ip, "sim.spot-interrupt-handler/instance-id": instance_id}},
        "spec": {"providerID": format!("aws:///{zone}/{instance_id}")},
    })
}

/// `count` nodes as GKE (`gce`) or AKS (`azure`) registers them, the first `spot` of them
/// spot: named as that cloud names them, with its spot label and providerID. The first is the
/// instance the cloud's metadata simulator serves by default (`gke-spot-pool-5f0c1a2b-x7kq`,
/// `aks-spotpool-12345678-vmss000000`), so a rehearsal on that cloud reads one instance
/// everywhere. Any other `cloud`: EC2's ([`node`]).
pub fn cloud_nodes(cloud: &str, count: usize, spot: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            let is_spot = i < spot;
            let n = if is_spot { i } else { i - spot };
            match cloud {
                "gce" => {
                    let zone = ["us-central1-a", "us-central1-b", "us-central1-c"][i % 3];
                    let (pool, hash) = if is_spot {
                        ("spot-pool", "5f0c1a2b")
                    } else {
                        ("default-pool", "8d2e4c1a")
                    };
                    let suffix = if is_spot && n == 0 {
                        "x7kq".to_owned()
                    } else {
                        format!("{:04x}", 0x1000 + i)
                    };
                    let name = format!("gke-{pool}-{hash}-{suffix}");
                    let mut labels = json!({
                        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "e2-standard-4",
                        "topology.kubernetes.io/zone": zone, "topology.kubernetes.io/region": "us-central1",
                        "cloud.google.com/gke-nodepool": pool,
                    });
                    if is_spot {
                        labels["cloud.google.com/gke-spot"] = json!("true");
                    }
                    json!({"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": name, "labels": labels,
                            "annotations": {"sim.spot-interrupt-handler/internal-ip": format!("10.128.0.{}", 12 + i)}},
                        "spec": {"providerID": format!("gce://rehearsal-project/{zone}/{name}")}})
                }
                "azure" => {
                    let pool = if is_spot { "spotpool" } else { "nodepool1" };
                    let set = format!("aks-{pool}-12345678-vmss");
                    let name = format!("{set}{n:06}");
                    let mut labels = json!({
                        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "Standard_D4s_v5",
                        "topology.kubernetes.io/zone": format!("eastus-{}", i % 3 + 1),
                        "topology.kubernetes.io/region": "eastus", "kubernetes.azure.com/agentpool": pool,
                    });
                    labels["kubernetes.azure.com/scalesetpriority"] =
                        json!(if is_spot { "spot" } else { "regular" });
                    json!({"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": name, "labels": labels,
                            "annotations": {"sim.spot-interrupt-handler/internal-ip": format!("10.224.0.{}", 4 + i)}},
                        "spec": {"providerID": format!(
                            "azure:///subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/mc_rehearsal/providers/Microsoft.Compute/virtualMachineScaleSets/{set}/virtualMachines/{n}")}})
                }
                _ => node(i, is_spot),
            }
        })
        .collect()
}

/// A Deployment spread over the nodes with a PodDisruptionBudget, and a DaemonSet.
pub fn default_workload(nodes: usize) -> Vec<Value> {
    let replicas = (nodes * 2).clamp(2, 20);
    let container =
        json!([{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]);
    vec![
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": container, "terminationGracePeriodSeconds": 10}}}}),
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "node-agent", "namespace": "kube-system", "labels": {"app": "node-agent"}},
            "spec": {"selector": {"matchLabels": {"app": "node-agent"}},
                "template": {"metadata": {"labels": {"app": "node-agent"}}, "spec": {"containers": [{"name": "agent", "image": "busybox:1.36"}]}}}}),
    ]
}

/// Parses a multi-document YAML file of objects (a `List` is unpacked).
pub fn parse(text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("invalid YAML: {e}"))?;
    let mut out = Vec::new();
    for d in docs.into_iter().filter(|d| !d.is_null()) {
        if d["kind"] == "List" {
            out.extend(d["items"].as_array().cloned().unwrap_or_default());
        } else {
            out.push(d);
        }
    }
    Ok(out)
}

/// Creates the start-up objects: namespaces first, then nodes, then the rest in order.
pub fn load(store: &Store, nodes: usize, spot: usize, objects: &[Value]) -> Result<(), String> {
    let mut all: Vec<Value> = ["default", "kube-system", "kube-public", "kube-node-lease"]
        .iter()
        .map(|n| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}))
        .collect();
    all.extend((0..nodes).map(|i| node(i, i < spot)));
    all.extend(objects.iter().cloned());
    let rank = |o: &Value| match o["kind"].as_str() {
        Some("Namespace") => 0,
        Some("Node") => 1,
        _ => 2,
    };
    all.sort_by_key(rank);
    for obj in all {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let index = resources::by_kind(&api_version, &kind).ok_or_else(|| {
            format!("{kind} ({api_version}) {name:?}: this kind is not served by the simulator")
        })?;
        let storage = storage_of(index);
        let ns = if resources::RESOURCES[index].namespaced {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned()
        } else {
            String::new()
        };
        let mut obj = crate::api::events::from_api(index, obj);
        defaults::apply(storage, &mut obj);
        let exists = store.read(|i| i.get(storage, &ns, &name).is_some());
        if exists && matches!(storage, NAMESPACES) {
            continue;
        }
        store
            .write(|tx| tx.create(storage, &ns, obj))
            .map_err(|e: ApiError| format!("{kind} {name:?}: {}", e.message))?;
    }
    Ok(())
}

/// A kubeconfig for an HTTPS simulator: the CA it trusts and a bearer token.
pub fn kubeconfig_with(server: &str, ca_pem: &str, token: &str, namespace: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: spot-sim\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: spot-sim\n  context:\n    cluster: spot-sim\n    user: spot-sim\n    namespace: {namespace}\ncurrent-context: spot-sim\nusers:\n- name: spot-sim\n  user:\n    token: {token}\npreferences: {{}}\n"
    )
}

/// A kubeconfig pointing at the simulator (plain HTTP, no credentials).
pub fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: spot-sim\n  cluster:\n    server: {server}\ncontexts:\n- name: spot-sim\n  context:\n    cluster: spot-sim\n    user: spot-sim\n    namespace: default\ncurrent-context: spot-sim\nusers:\n- name: spot-sim\n  user: {{}}\npreferences: {{}}\n"
    )
}
