//! The same agent on Google Compute Engine and Azure (`--cloud gce|azure`), against `simulate
//! gce` and `simulate azure`: a preemption fenced as the long poll answers and drained before
//! its 30 seconds end (a budget that never lets go met by the deadline deletion); an Azure
//! `Preempt` drained, then acknowledged; a cancelled `Reboot` undone; events for other VMs
//! ignored; a `Freeze` only told about.

use std::time::Duration;

use serde_json::{Value, json};

use crate::overlaps::{deletion_of, guarded, until_guarded_runs};
use crate::support::{Scene, cordoned, taints, until};

/// The node's record of the notices it carries.
fn record(node: &k8s_openapi::api::core::v1::Node) -> Value {
    crate::support::annotation(node, "spot-interrupt-handler/notice")
        .and_then(|a| serde_json::from_str(&a).ok())
        .unwrap_or(Value::Null)
}

fn kinds(node: &k8s_openapi::api::core::v1::Node) -> Vec<String> {
    record(node)["notices"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| n["kind"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn gce_preemption_is_fenced_as_the_watch_answers_and_drained_within_its_30_seconds() {
    let s = Scene::start_cloud("gce", &[], None, None).await;
    s.apply(&guarded(&s.node, 3)).await;
    until_guarded_runs(&s).await;
    // A poll interval of ten minutes and a watch that never times out: only the long poll
    // answering can see the preemption in time.
    let agent = s
        .agent(&["--poll-interval", "10m", "--gce-watch-timeout", "5m"])
        .await;
    // The agent reads both items plainly, then watches them (a watch is logged once answered).
    until("both items read", Duration::from_secs(10), || async {
        let log = s.metadata_journal("requests").await;
        let read = |item: &str| {
            log.as_array().unwrap().iter().any(|r| {
                r["path"] == format!("/computeMetadata/v1/instance/{item}") && r["status"] == 200
            })
        };
        read("preempted") && read("maintenance-event")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let preempted_at = jiff::Timestamp::now();
    s.control("preempt", json!({})).await;

    until("fenced", Duration::from_secs(5), || async {
        cordoned(&s.node().await)
    })
    .await;
    let node = s.node().await;
    let notice = &record(&node)["notices"][0];
    assert_eq!(notice["kind"], "spot-interruption");
    let detected: jiff::Timestamp = notice["detected"].as_str().unwrap().parse().unwrap();
    let deadline: jiff::Timestamp = notice["deadline"].as_str().unwrap().parse().unwrap();
    let seen_after = detected.duration_since(preempted_at);
    assert!(
        seen_after < jiff::SignedDuration::from_secs(1),
        "the watch answered {seen_after:?} after the change (poll interval 10m)"
    );
    assert_eq!(
        deadline.duration_since(detected),
        jiff::SignedDuration::from_secs(30),
        "GCE's 30 seconds, from the moment it was seen"
    );
    assert!(
        taints(&node)
            .iter()
            .any(|(k, _, e)| k == "spot-interrupt-handler/spot-interruption" && e == "NoSchedule")
    );

    // The web pods leave through evictions; the guarded one, which its budget never lets go,
    // is deleted with what grace is left before the deadline.
    s.drained().await;
    until(
        "the guarded pod is deleted at the deadline",
        Duration::from_secs(40),
        || async { deletion_of(&s, "guarded-").await.is_some() },
    )
    .await;
    let (at, grace) = deletion_of(&s, "guarded-").await.unwrap();
    assert!(at < deadline, "deleted at {at}, deadline {deadline}");
    assert!(grace >= 1, "deleted with grace, not killed: {grace}");
    let reasons = s.event_reasons().await;
    assert!(
        reasons.contains(&"SpotInterruption".to_owned()),
        "{reasons:?}"
    );
    // The instance's facts reached the webhook fields: the agent said who it is.
    agent
        .proc
        .until_logged("GCE instance", Duration::from_secs(1))
        .await;
    // Idle, the long poll costs one request per watch timeout: none since the notice beyond
    // the two watches the change answered and the two that replaced them.
    let log = s.metadata_journal("requests").await;
    let total = log.as_array().unwrap().len();
    assert!(total <= 16, "{total} metadata requests: {log}");
}

#[tokio::test]
async fn gce_live_migration_is_told_and_a_host_maintenance_termination_fences_until_over() {
    let s = Scene::start_cloud("gce", &[], None, None).await;
    let _agent = s.agent(&["--gce-maintenance-notice", "60s"]).await;
    s.control(
        "maintenance",
        json!({"value": "MIGRATE_ON_HOST_MAINTENANCE", "for_seconds": 1}),
    )
    .await;
    until(
        "the live migration is told",
        Duration::from_secs(10),
        || async {
            s.event_reasons()
                .await
                .contains(&"LiveMigration".to_owned())
        },
    )
    .await;
    assert!(!cordoned(&s.node().await), "a live migration only tells");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.control(
        "maintenance",
        json!({"value": "TERMINATE_ON_HOST_MAINTENANCE"}),
    )
    .await;
    until(
        "fenced for the maintenance",
        Duration::from_secs(10),
        || async {
            kinds(&s.node().await).contains(&"scheduled-maintenance".to_owned())
                && cordoned(&s.node().await)
        },
    )
    .await;
    s.drained().await;
    // Over: GCE sets NONE again, and the fence is undone.
    s.control("maintenance", json!({"value": "NONE"})).await;
    until(
        "unfenced once the maintenance is over",
        Duration::from_secs(10),
        || async {
            let n = s.node().await;
            !cordoned(&n) && taints(&n).is_empty()
        },
    )
    .await;
}

/// When the last pod named `prefix...` left the spot node (its object removed).
async fn last_removed(s: &Scene, prefix: &str) -> jiff::Timestamp {
    s.cluster_journal("pod-events")
        .await
        .into_iter()
        .filter(|e| e["step"] == "removed" && e["node"] == s.node.as_str())
        .filter(|e| e["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .filter_map(|e| e["at"].as_str().and_then(|a| a.parse().ok()))
        .max()
        .expect("a pod left the node")
}

/// The acknowledgements the simulator received: `(when, body)`.
async fn acks(s: &Scene) -> Vec<(jiff::Timestamp, String)> {
    s.metadata_journal("requests")
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "POST")
        .map(|r| {
            (
                r["at"].as_str().unwrap().parse().unwrap(),
                r["body"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn azure_preempt_is_drained_then_acknowledged() {
    let s = Scene::start_cloud("azure", &["--first-call-delay", "2s"], None, None).await;
    let agent = s.agent(&[]).await;
    let id = s
        .control(
            "events",
            json!({"type": "Preempt", "not_before_seconds": 30}),
        )
        .await["EventId"]
        .as_str()
        .unwrap()
        .to_owned();
    s.drained().await;
    until(
        "the Preempt is acknowledged",
        Duration::from_secs(10),
        || async { !acks(&s).await.is_empty() },
    )
    .await;
    let acked = acks(&s).await;
    assert_eq!(acked.len(), 1, "one acknowledgement: {acked:?}");
    let body: Value = serde_json::from_str(&acked[0].1).unwrap();
    assert_eq!(body, json!({"StartRequests": [{"EventId": id}]}));
    // After the last pod left the node.
    let last_gone = last_removed(&s, "web-").await;
    assert!(
        acked[0].0 >= last_gone,
        "acknowledged {} before the last pod left {last_gone}",
        acked[0].0
    );
    // Azure starts it at once.
    let events = s.metadata_journal("events").await;
    assert_eq!(events["events"][0]["status"], "Started", "{events}");
    assert_eq!(
        agent
            .metric("spot_interrupt_handler_acknowledgements_total{result=\"ok\"}")
            .await,
        1.0
    );
    assert_eq!(kinds(&s.node().await), ["spot-interruption"]);
}

#[tokio::test]
async fn azure_a_cancelled_reboot_is_undone_other_vms_events_are_ignored_and_a_freeze_only_told() {
    let s = Scene::start_cloud("azure", &[], None, None).await;
    let _agent = s.agent(&[]).await;
    let vm = "aks-spotpool-12345678-vmss000000";
    let other = "aks-spotpool-12345678-vmss000001";
    let others = s
        .control(
            "events",
            json!({"type": "Redeploy", "resources": [other], "not_before_seconds": 600}),
        )
        .await["EventId"]
        .as_str()
        .unwrap()
        .to_owned();
    s.control(
        "events",
        json!({"type": "Freeze", "not_before_seconds": 600}),
    )
    .await;
    until("the freeze is told", Duration::from_secs(10), || async {
        s.event_reasons()
            .await
            .contains(&"LiveMigration".to_owned())
    })
    .await;
    assert!(
        !cordoned(&s.node().await),
        "a freeze is only told about by default"
    );
    // A reboot of this VM and another: drained, but not acknowledged (it would start for both).
    let reboot = s
        .control(
            "events",
            json!({"type": "Reboot", "resources": [vm, other], "not_before_seconds": 600}),
        )
        .await["EventId"]
        .as_str()
        .unwrap()
        .to_owned();
    until("fenced for the reboot", Duration::from_secs(10), || async {
        cordoned(&s.node().await)
    })
    .await;
    s.drained().await;
    let node = s.node().await;
    let ids: Vec<String> = record(&node)["notices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&reboot), "{ids:?}");
    assert!(
        !ids.contains(&others),
        "another VM's event is not ours: {ids:?}"
    );
    s.control(&format!("events/{reboot}/cancel"), json!({}))
        .await;
    until(
        "unfenced once the reboot is cancelled",
        Duration::from_secs(10),
        || async {
            let n = s.node().await;
            !cordoned(&n) && taints(&n).is_empty()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        acks(&s).await.is_empty(),
        "nothing acknowledged: {:?}",
        acks(&s).await
    );
}

/// Killed mid-drain (SIGKILL) and started again: the new agent resumes the drain from the
/// node's record, and the `Preempt` is acknowledged once, after the pod its budget holds is
/// gone (deleted at the last moment before the deadline).
#[tokio::test]
async fn azure_an_agent_killed_mid_drain_acknowledges_once_after_the_drain_it_resumed() {
    let s = Scene::start_cloud("azure", &[], None, None).await;
    s.apply(&guarded(&s.node, 2)).await;
    until_guarded_runs(&s).await;
    let mut agent = s.agent(&[]).await;
    s.control(
        "events",
        json!({"type": "Preempt", "not_before_seconds": 14}),
    )
    .await;
    until("fenced", Duration::from_secs(10), || async {
        cordoned(&s.node().await)
    })
    .await;
    let _ = agent.proc.child.start_kill();
    let _ = agent.proc.child.wait().await;
    assert!(
        acks(&s).await.is_empty(),
        "not acknowledged before the drain is done"
    );
    let _again = s.agent(&[]).await;
    until(
        "the Preempt is acknowledged",
        Duration::from_secs(25),
        || async { !acks(&s).await.is_empty() },
    )
    .await;
    let (at, grace) = deletion_of(&s, "guarded-")
        .await
        .expect("the guarded pod was deleted");
    assert!(grace >= 1, "{grace}");
    let gone = last_removed(&s, "guarded-").await;
    let acked = acks(&s).await;
    assert!(
        acked[0].0 >= gone && gone >= at,
        "acknowledged {} / removed {gone} / deleted {at}",
        acked[0].0
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(acks(&s).await.len(), 1, "once");
}

/// Not told its node (`NODE_NAME` unset), the agent finds the node named as GCE names the
/// instance, and acts on it.
#[tokio::test]
async fn gce_an_agent_not_told_its_node_finds_it_by_the_instance_name() {
    let s = Scene::start_cloud("gce", &[], None, None).await;
    s.control("values", json!({"path": "instance/name", "value": s.node}))
        .await;
    let agent = s.agent_with(&[], &[(crate::support::FIND_NODE, "1")]).await;
    let found = agent
        .proc
        .until_logged(
            "found the node that is this instance",
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(found["node"], s.node.as_str());
    s.control("preempt", json!({})).await;
    until("fenced", Duration::from_secs(5), || async {
        cordoned(&s.node().await)
    })
    .await;
}

/// Issue 32 (7): a metadata server that answers every long poll at once and sends no ETag used
/// to be polled 24 538 times in 10 s. Polls are paced whatever the server does.
#[tokio::test]
async fn a_gce_server_that_never_waits_is_not_hammered() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let s = Scene::start_cloud("gce", &[], None, None).await;
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let node = s.node.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let counted = counted.clone();
        let node = node.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            let item = uri.path().trim_start_matches("/computeMetadata/v1/");
            let body = match item {
                "instance/id" => "4242".to_owned(),
                "instance/name" | "instance/hostname" => node,
                "instance/zone" => "projects/1/zones/us-central1-a".to_owned(),
                "project/project-id" => "p".to_owned(),
                "instance/machine-type" => "projects/1/machineTypes/e2-small".to_owned(),
                "instance/scheduling/preemptible" => "TRUE".to_owned(),
                "instance/network-interfaces/0/ip" => "10.0.0.9".to_owned(),
                "instance/preempted" => "FALSE".to_owned(),
                "instance/maintenance-event" => "NONE".to_owned(),
                _ => String::new(),
            };
            ([("metadata-flavor", "Google")], body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let agent = s
        .agent(&["--imds-endpoint", &url, "--poll-interval", "200ms"])
        .await;
    let before = count.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let polled = count.load(Ordering::SeqCst) - before;
    // Two items a poll, polls at least 200 ms apart: 50 at most in 5 s.
    assert!(polled <= 52, "{polled} requests in 5 s");
    assert!(polled >= 4, "still polled: {polled}");
    assert!(agent.child_alive());
}
