//! The agent's ClusterRole in `deploy/manifests` grants exactly what the code uses: with it,
//! fence, drain (evictions, waiting for pods to go, deletion at the deadline) and Events work
//! against `simulate cluster --tls`; without any one of its rules, the call that needs that
//! rule gets a 403. And every rule in the manifest has such a case (nothing more is granted).

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, Node};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, ListParams, PostParams};
use serde_json::Value;
use sih_core::{DrainPolicy, Notice, NoticeKind};
use sih_node::{DrainConfig, FenceSpec, NodeError, Progress};
use sih_sim_cluster::{ClusterConfig, RunningCluster, workload};

use crate::support::{deployment, node_name, until_budget_allows, until_running};

const MANIFEST: &str = include_str!("../../deploy/manifests/spot-interrupt-handler.yaml");
const SA: (&str, &str) = ("kube-system", "spot-interrupt-handler");

/// The manifest's objects of `kind`.
fn manifest(kind: &str) -> Vec<Value> {
    workload::parse(MANIFEST)
        .expect("the manifest parses")
        .into_iter()
        .filter(|o| o["kind"] == kind)
        .collect()
}

/// `(apiGroup, resource, verb)` for every grant of the manifest's ClusterRole.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let list = |k: &str| -> Vec<String> {
            rule[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        for g in list("apiGroups") {
            for r in list("resources") {
                for v in list("verbs") {
                    out.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    out
}

/// The ClusterRole without one grant.
fn without(role: &Value, cut: &(String, String, String)) -> Value {
    let mut role = role.clone();
    let mut rules = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        let has = |k: &str, v: &str| rule[k].as_array().unwrap().iter().any(|x| x == v);
        if has("apiGroups", &cut.0) && has("resources", &cut.1) && has("verbs", &cut.2) {
            // Split the rule so only the cut (resource, verb) goes.
            for r in rule["resources"].as_array().unwrap() {
                let verbs: Vec<&Value> = rule["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|v| !(r == cut.1.as_str() && *v == cut.2.as_str()))
                    .collect();
                if !verbs.is_empty() {
                    let mut part = rule.clone();
                    part["resources"] = serde_json::json!([r]);
                    part["verbs"] = serde_json::json!(verbs);
                    rules.push(part);
                }
            }
        } else {
            rules.push(rule.clone());
        }
    }
    role["rules"] = Value::Array(rules);
    role
}

/// A `--tls` cluster with the agent's account bound to `role`; `(cluster, admin, agent)`.
async fn cluster_with(role: &Value, yaml: &str) -> (RunningCluster, kube::Client, kube::Client) {
    let config = ClusterConfig {
        nodes: 2,
        spot_nodes: 2,
        workload: Some(workload::parse(yaml).unwrap()),
        pod_start_delay: Duration::from_millis(50),
        tls: true,
        service_accounts: vec![(SA.0.into(), SA.1.into())],
        ..ClusterConfig::default()
    };
    let cluster = sih_sim_cluster::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = |token: &str| {
        let kc = kube::config::Kubeconfig::from_yaml(&cluster.kubeconfig_for(token)).unwrap();
        let mut config = kube::Config::try_from(kc).unwrap();
        config.default_retry = false;
        kube::Client::try_from(config).unwrap()
    };
    let admin = client(cluster.admin_token().unwrap());
    let agent = client(cluster.token_of(SA.0, SA.1).unwrap());
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(role.clone()).unwrap(),
        )
        .await
        .unwrap();
    let binding = manifest("ClusterRoleBinding").remove(0);
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(binding).unwrap(),
        )
        .await
        .unwrap();
    (cluster, admin, agent)
}

fn notice() -> Notice {
    Notice {
        kind: NoticeKind::SpotInterruption,
        id: "i-1-spot-1".into(),
        instance_id: Some("i-1".into()),
        node: node_name(0),
        detected: Timestamp::now(),
        deadline: None,
    }
}

fn is_forbidden(e: &NodeError) -> bool {
    matches!(e, NodeError::Api(kube::Error::Api(s)) if s.code == 403)
}

/// What the code does with one grant, and whether it worked.
async fn exercise(grant: &(String, String, String), role: &Value) -> bool {
    let workload = match grant.1.as_str() {
        // A budget that never allows a disruption: only deletion at the deadline moves it.
        "pods" if grant.2 == "delete" => deployment("guarded", 1, 1, "maxUnavailable: 0"),
        _ => deployment("web", 2, 1, "maxUnavailable: 1"),
    };
    let (cluster, admin, agent) = cluster_with(role, &workload).await;
    let app = if grant.2 == "delete" {
        "app=guarded"
    } else {
        "app=web"
    };
    until_running(&admin, app, if grant.2 == "delete" { 1 } else { 2 }).await;
    if grant.2 != "delete" {
        until_budget_allows(&admin, "web").await;
    }
    let node = node_name(0);
    let nodes: Api<Node> = Api::all(agent.clone());
    let spec = FenceSpec {
        notice: notice(),
        effect: "NoSchedule".into(),
        cordon: true,
    };
    let drain = |within: Duration| {
        let agent = agent.clone();
        let node = node.clone();
        async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let cfg = DrainConfig {
                policy: DrainPolicy {
                    margin: Duration::from_secs(1),
                    ..DrainPolicy::default()
                },
                ..DrainConfig::default()
            };
            let report =
                sih_node::drain(agent, &node, tokio::time::Instant::now() + within, cfg, tx).await;
            let mut progress = Vec::new();
            while let Ok(p) = rx.try_recv() {
                progress.push(p);
            }
            (report, progress)
        }
    };
    let ok = match (grant.0.as_str(), grant.1.as_str(), grant.2.as_str()) {
        ("", "nodes", "get" | "patch") => match sih_node::fence(&nodes, &node, &spec).await {
            Ok(_) => true,
            Err(e) => {
                assert!(is_forbidden(&e), "{e}");
                false
            }
        },
        ("", "pods", "list") => match drain(Duration::from_secs(10)).await.0 {
            Ok(r) => r.succeeded(),
            Err(e) => {
                assert!(is_forbidden(&e), "{e}");
                false
            }
        },
        ("", "pods/eviction", "create") | ("", "pods", "get") => {
            let (report, progress) = drain(Duration::from_secs(3)).await;
            let report = report.expect("the list is allowed");
            let evicted = progress
                .iter()
                .any(|p| matches!(p, Progress::Evicted { .. }));
            if grant.1 == "pods/eviction" {
                report.succeeded() && evicted
            } else {
                // Evicted, but never seen gone: the drain cannot finish.
                assert!(evicted);
                report.succeeded()
            }
        }
        ("", "pods", "delete") => {
            let (report, progress) = drain(Duration::from_secs(3)).await;
            let deleted = progress
                .iter()
                .any(|p| matches!(p, Progress::DeletedAtDeadline { .. }));
            let refused = progress.iter().any(
                |p| matches!(p, Progress::Failed { reason, .. } if reason.contains("forbidden")),
            );
            assert!(deleted != refused, "{progress:?}");
            report.expect("the list is allowed");
            deleted
        }
        ("events.k8s.io", "events", "create") => {
            sih_report::EventReporter::new(agent.clone(), &node, None)
                .notice(&notice())
                .await;
            Api::<Event>::all(admin.clone())
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some("SpotInterruption"))
        }
        other => panic!(
            "the manifest grants {other:?}, which no code path here uses: remove it, or add the call that needs it"
        ),
    };
    drop(cluster);
    ok
}

#[tokio::test]
async fn every_rule_of_the_cluster_role_is_needed_and_enough() {
    let role = manifest("ClusterRole").remove(0);
    let all = grants(&role);
    assert_eq!(all.len(), 7, "{all:?}");
    for grant in &all {
        assert!(
            exercise(grant, &role).await,
            "{grant:?} fails with the full role"
        );
        assert!(
            !exercise(grant, &without(&role, grant)).await,
            "{grant:?} still works without its rule: the rule is not needed"
        );
    }
}
