//! aws-node-termination-handler's image swapped for ours: no subcommand, NTH's environment.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Hook, Proc, Scene, free_port, until};

#[tokio::test]
async fn configured_by_nth_variables() {
    let s = Scene::start(&[]).await;
    let (hook, url) = Hook::start().await;
    let metrics_port = free_port().to_string();
    let probes_port = free_port().to_string();
    let (mut agent, _out) = Proc::spawn(
        &[],
        &[
            ("NODE_NAME", &s.node),
            ("POD_NAME", "aws-node-termination-handler-x1"),
            ("NAMESPACE", "kube-system"),
            ("INSTANCE_METADATA_URL", &s.imds_url),
            ("KUBECONFIG", s.kubeconfig.to_str().unwrap()),
            ("UPTIME_FILE", s.uptime_file.to_str().unwrap()),
            ("ENABLE_SPOT_INTERRUPTION_DRAINING", "true"),
            ("ENABLE_SCHEDULED_EVENT_DRAINING", "true"),
            ("EMIT_KUBERNETES_EVENTS", "true"),
            (
                "KUBERNETES_EVENTS_EXTRA_ANNOTATIONS",
                "team=infra,tier=spot",
            ),
            ("WEBHOOK_URL", &url),
            (
                "WEBHOOK_TEMPLATE",
                r#"{"text":"{{ .Kind }} on {{ .NodeName }}: {{ .Description }}"}"#,
            ),
            ("PROMETHEUS_SERVER_PORT", &metrics_port),
            ("ENABLE_PROBES_SERVER", "true"),
            ("PROBES_SERVER_PORT", &probes_port),
            ("PROBES_SERVER_ENDPOINT", "/healthz"),
            ("JSON_LOGGING", "true"),
            ("LOG_LEVEL", "info"),
            ("TAINT_NODE", "false"),
            ("POLL_INTERVAL", "200ms"),
        ],
    );
    agent
        .until_logged("watching for interruption notices", Duration::from_secs(20))
        .await;
    // NTH's probe port answers; the metrics port stays on loopback (ENABLE_PROMETHEUS_SERVER off).
    let probe = reqwest::get(format!("http://127.0.0.1:{probes_port}/healthz"))
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    // The deliberate difference is said at start.
    assert!(
        agent.log().contains("TAINT_NODE=false is not followed"),
        "{}",
        agent.log()
    );

    s.spot(60).await;
    s.drained().await;
    // Events carry the extra annotations.
    until(
        "Events with annotations",
        Duration::from_secs(10),
        || async {
            s.events().await.iter().any(|e| {
                e.reason.as_deref() == Some("DrainSucceeded")
                    && e.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.get("team").map(String::as_str) == Some("infra"))
            })
        },
    )
    .await;
    // NTH's template reads NTH's kind (`--webhook-nth-fields`, on in the drop-in).
    let bodies = hook.until_count(2, Duration::from_secs(10)).await;
    let first: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert!(
        first["text"]
            .as_str()
            .unwrap()
            .starts_with(&format!("SPOT_ITN on {}: ", s.node)),
        "{first}"
    );
    assert!(agent.sigterm().await.success());
}

#[tokio::test]
async fn nth_rebalance_monitoring_cordons_only() {
    let s = Scene::start(&[]).await;
    let before = s.web_on_node().await;
    let (agent, _out) = Proc::spawn(
        &[],
        &[
            ("NODE_NAME", &s.node),
            ("INSTANCE_METADATA_URL", &s.imds_url),
            ("KUBECONFIG", s.kubeconfig.to_str().unwrap()),
            ("UPTIME_FILE", s.uptime_file.to_str().unwrap()),
            ("ENABLE_REBALANCE_MONITORING", "true"),
            ("PROMETHEUS_SERVER_PORT", &free_port().to_string()),
            ("JSON_LOGGING", "true"),
            ("POLL_INTERVAL", "200ms"),
        ],
    );
    agent
        .until_logged("watching for interruption notices", Duration::from_secs(20))
        .await;
    s.control("rebalance-recommendation", serde_json::json!({}))
        .await;
    until("cordoned", Duration::from_secs(10), || async {
        crate::support::cordoned(&s.node().await)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        s.web_on_node().await,
        before,
        "NTH's monitoring cordons, never drains"
    );
}

#[tokio::test]
async fn no_subcommand_and_no_nth_environment_prints_help() {
    let out = tokio::process::Command::new(crate::support::BIN)
        .env_clear()
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    let bad = tokio::process::Command::new(crate::support::BIN)
        .env_clear()
        .env("NODE_NAME", "n")
        .env("ENABLE_REBALANCE_DRAINING", "sometimes")
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ENABLE_REBALANCE_DRAINING"));
}

/// aws-node-termination-handler's chart's ClusterRole (v1.25): what an operator who swapped
/// only the image runs with.
const NTH_RULES: &str = r#"[
  {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch", "update"]},
  {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "get"]},
  {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
  {"apiGroups": ["extensions"], "resources": ["daemonsets"], "verbs": ["get"]},
  {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["get"]},
  {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}
]"#;

const MISSING: &str = "a permission is missing: the feature is off";

/// With NTH's ClusterRole, each permission the agent lacks is found at start (before any
/// notice), said once with the rule to add, counted, and its feature turned off: the drain
/// still evicts everything, and nothing is tried that would be refused (it met 49 silent 403s
/// on `get replicasets` in 23 s). With the extra rules docs/install.md ships for this path,
/// nothing is missing.
#[tokio::test]
async fn with_nths_cluster_role_a_missing_permission_is_said_once_and_its_feature_is_off() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let s = Scene::start_with(&[], true).await;
    let roles: kube::Api<ClusterRole> = kube::Api::all(s.client.clone());
    let mut role = roles.get("spot-interrupt-handler").await.unwrap();
    role.rules = Some(serde_json::from_str(NTH_RULES).unwrap());
    roles
        .replace("spot-interrupt-handler", &Default::default(), &role)
        .await
        .unwrap();
    let agent = s.agent(&["--surge-selector", "app=web"]).await;
    let features = || -> Vec<String> {
        let mut f: Vec<String> = agent
            .proc
            .json_lines()
            .iter()
            .filter(|l| l["message"] == MISSING)
            .map(|l| l["feature"].as_str().unwrap().to_owned())
            .collect();
        f.sort();
        f
    };
    until(
        "the missing permissions are said",
        Duration::from_secs(10),
        || async { features().len() >= 4 },
    )
    .await;
    assert_eq!(
        features(),
        [
            "deadline-deletion",
            "granted-evictions",
            "kubernetes-events",
            "recovery-watch",
            "surge"
        ],
        "{}",
        agent.proc.log()
    );
    let surge = agent
        .proc
        .json_lines()
        .into_iter()
        .find(|l| l["message"] == MISSING && l["feature"] == "surge")
        .unwrap();
    assert!(
        surge["add"]
            .as_str()
            .unwrap()
            .contains(r#"{apiGroups: ["apps"], resources: [replicasets], verbs: [get]}"#),
        "{surge}"
    );
    // What cannot be turned off (the fence, the drain) would be an error: NTH's role has it.
    assert!(
        !agent
            .proc
            .json_lines()
            .iter()
            .any(|l| l["level"] == "ERROR"),
        "{}",
        agent.proc.log()
    );
    assert_eq!(
        agent
            .metric(r#"spot_interrupt_handler_features_off{feature="surge"}"#)
            .await,
        1.0
    );
    let started = match s.real() {
        None => s.cluster_journal("requests").await.len(),
        Some(_) => 0,
    };
    s.spot(60).await;
    s.drained().await;
    // The recovery watch would have asked by now; nothing is said again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(features().len(), 5, "{}", agent.proc.log());
    if s.real().is_none() {
        let refused: Vec<Value> = s
            .cluster_journal("requests")
            .await
            .into_iter()
            .skip(started)
            .filter(|r| r["status"] == 403)
            .collect();
        assert!(refused.is_empty(), "refused calls: {refused:?}");
    }
    drop(agent);
    // The rules shipped for this path, bound to our ServiceAccount here.
    let text = std::fs::read_to_string(format!(
        "{}/deploy/manifests/nth-migration-rbac.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut docs = text.split("\n---\n");
    let extra: ClusterRole = serde_saphyr::from_str(docs.next().unwrap()).unwrap();
    let mut binding: ClusterRoleBinding = serde_saphyr::from_str(docs.next().unwrap()).unwrap();
    binding.subjects.as_mut().unwrap()[0].name = "spot-interrupt-handler".into();
    roles.create(&Default::default(), &extra).await.unwrap();
    kube::Api::<ClusterRoleBinding>::all(s.client.clone())
        .create(&Default::default(), &binding)
        .await
        .unwrap();
    let agent = s.agent(&["--surge-selector", "app=web"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !agent.proc.log().contains("a permission is missing"),
        "{}",
        agent.proc.log()
    );
}
