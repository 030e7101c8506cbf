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
    let bodies = hook.until_count(2, Duration::from_secs(10)).await;
    let first: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert!(
        first["text"]
            .as_str()
            .unwrap()
            .starts_with(&format!("spot-interruption on {}: ", s.node)),
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
