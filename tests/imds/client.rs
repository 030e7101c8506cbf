//! Our IMDS client against our simulator: every item, both token modes, and every failure the
//! client must survive with a typed error.

use std::time::Duration;

use serde_json::json;
use sih_imds::{
    ImdsError, ScheduledEventCode, ScheduledEventState, SpotAction, TargetLifecycleState, paths,
};
use sih_sim_imds::{
    Identity, NoticeAction, Scenario, SimConfig, SpotPlan, TARGET_LIFECYCLE_STATES, TokenMode,
};

use crate::support::{Control, client, client_with, sim, sim_with, summary};

#[tokio::test]
async fn identity_is_read_in_both_token_modes() {
    for mode in [TokenMode::Optional, TokenMode::Required] {
        let sim = sim_with(SimConfig {
            imdsv2: mode,
            identity: Identity {
                instance_id: "i-0abc".into(),
                availability_zone: "eu-west-1b".into(),
                local_hostname: "ip-10-1-2-3.eu-west-1.compute.internal".into(),
                local_ipv4: "10.1.2.3".into(),
                ..Identity::default()
            },
            ..SimConfig::default()
        })
        .await;
        let id = client(&sim).identity().await.unwrap();
        assert_eq!(id.instance_id, "i-0abc");
        assert_eq!(id.availability_zone, "eu-west-1b");
        assert_eq!(id.region, "eu-west-1");
        assert_eq!(id.instance_type, "m5.large");
        assert_eq!(id.life_cycle.as_deref(), Some("spot"));
        assert_eq!(
            id.local_hostname.as_deref(),
            Some("ip-10-1-2-3.eu-west-1.compute.internal")
        );
        assert_eq!(id.local_ipv4.as_deref(), Some("10.1.2.3"));
        assert_eq!(id.document.instance_id.as_deref(), Some("i-0abc"));
        assert_eq!(id.document.version.as_deref(), Some("2017-09-30"));
        let log = Control::of(&sim).take_requests().await;
        // One token for all eight concurrent reads, then every read carries it.
        let puts = log.iter().filter(|e| e["method"] == "PUT").count();
        assert_eq!(puts, 1, "{log:?}");
        assert!(
            log.iter()
                .filter(|e| e["method"] == "GET")
                .all(|e| e["token"] == "valid")
        );
    }
}

/// An instance keeps its identity for its life: a retry asks only for the items that failed,
/// so a service failing half its answers cannot hold a restarted agent's first look for
/// seconds (soak seed 61317: eight reads had to succeed together). A malformed answer is not
/// remembered.
#[tokio::test]
async fn an_identity_retry_asks_only_for_what_failed() {
    let sim = sim(TokenMode::Optional).await;
    let ctl = Control::of(&sim);
    let c = client(&sim);
    ctl.post(
        "faults",
        json!({"status": 500, "path_prefix": "/latest/meta-data/local-ipv4"}),
    )
    .await;
    ctl.post(
        "items",
        json!({"path": "dynamic/instance-identity/document", "body": "<html>"}),
    )
    .await;
    // Two items fail: the local IPv4 (500) and the document (malformed).
    assert!(c.identity().await.is_err());
    ctl.post("faults", json!({"status": 0})).await;
    ctl.take_requests().await;
    let err = c.identity().await.unwrap_err();
    assert!(matches!(err, ImdsError::Malformed { .. }), "{err}");
    let asked = |log: &[(String, String, u64, String)]| {
        let mut paths: Vec<String> = log
            .iter()
            .filter(|e| e.0 == "GET")
            .map(|e| e.1.clone())
            .collect();
        paths.sort();
        paths
    };
    let log = summary(&ctl.take_requests().await);
    assert_eq!(
        asked(&log),
        [
            paths::IDENTITY_DOCUMENT,
            paths::LOCAL_IPV4,
            paths::PUBLIC_HOSTNAME,
            paths::PUBLIC_IPV4,
            paths::ASG_NAME_TAG,
        ]
        .iter()
        .map(|p| p.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>(),
        "the six items read before are not asked again: {log:?}"
    );
    ctl.post(
        "items",
        json!({"path": "dynamic/instance-identity/document", "remove": true}),
    )
    .await;
    let id = c.identity().await.unwrap();
    assert_eq!(id.local_ipv4.as_deref(), Some("10.0.0.10"));
    assert_eq!(
        id.document.instance_id.as_deref(),
        Some(id.instance_id.as_str())
    );
    let log = summary(&ctl.take_requests().await);
    assert!(
        asked(&log).contains(&paths::IDENTITY_DOCUMENT.to_string()),
        "the malformed document was asked again: {log:?}"
    );
    assert!(
        !asked(&log).contains(&paths::LOCAL_IPV4.to_string()),
        "{log:?}"
    );
}

#[tokio::test]
async fn quiet_poll_sees_nothing_pending() {
    let sim = sim(TokenMode::Required).await;
    let snap = client(&sim).poll().await;
    assert_eq!(snap.spot_instance_action.unwrap(), None);
    assert_eq!(snap.spot_termination_time.unwrap(), None);
    assert_eq!(snap.rebalance.unwrap(), None);
    assert_eq!(snap.scheduled_events.unwrap().events, vec![]);
    assert_eq!(snap.target_lifecycle_state.unwrap(), None);
    let log = summary(&Control::of(&sim).take_requests().await);
    let gets: Vec<_> = log.iter().filter(|e| e.0 == "GET").collect();
    assert_eq!(gets.len(), 5, "one request per interruption item: {log:?}");
}

#[tokio::test]
async fn spot_notice_of_every_action_keeps_its_time_across_reads() {
    let sim = sim(TokenMode::Optional).await;
    let ctl = Control::of(&sim);
    let c = client(&sim);
    for action in SpotAction::ALL {
        let set = ctl
            .post(
                "spot-interruption",
                json!({"action": action.as_str(), "lead_seconds": 90}),
            )
            .await;
        let first = c
            .spot_instance_action()
            .await
            .unwrap()
            .expect("notice visible");
        assert_eq!(first.action, action);
        assert_eq!(
            first.time.unwrap().to_string(),
            set["time"].as_str().unwrap()
        );
        let lead = first.time.unwrap().as_second() - jiff::Timestamp::now().as_second();
        assert!(
            (88..=90).contains(&lead),
            "notice time is about now + 90 s, got {lead}"
        );
        let again = c.poll().await;
        assert_eq!(
            again.spot_instance_action.unwrap(),
            Some(first.clone()),
            "time is fixed"
        );
        assert_eq!(again.spot_termination_time.unwrap(), first.time);
    }
}

#[tokio::test]
async fn scheduled_spot_notice_appears_after_its_delay() {
    let sim = sim_with(SimConfig {
        scenario: Scenario {
            spot: Some(SpotPlan {
                action: NoticeAction::Hibernate,
                after: Duration::from_millis(300),
                lead: Duration::from_secs(120),
            }),
            ..Scenario::default()
        },
        ..SimConfig::default()
    })
    .await;
    let c = client(&sim);
    assert_eq!(c.spot_instance_action().await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let notice = c.spot_instance_action().await.unwrap().unwrap();
    assert_eq!(notice.action, SpotAction::Hibernate);
}

#[tokio::test]
async fn rebalance_scheduled_events_and_asg_states_are_typed() {
    let sim = sim(TokenMode::Required).await;
    let ctl = Control::of(&sim);
    let c = client(&sim);

    let r = ctl.post("rebalance-recommendation", json!({})).await;
    let rebalance = c.rebalance_recommendation().await.unwrap().unwrap();
    assert_eq!(
        rebalance.notice_time.to_string(),
        r["noticeTime"].as_str().unwrap()
    );

    let reboot = ctl
        .post(
            "scheduled-event",
            json!({"code": "system-reboot", "not_before_seconds": 600, "not_after_seconds": 1800}),
        )
        .await;
    let id = reboot["EventId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("instance-event-") && id.len() == "instance-event-".len() + 17);
    let events = c.scheduled_events().await.unwrap().events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_id, id);
    assert_eq!(events[0].code, ScheduledEventCode::SystemReboot);
    assert_eq!(events[0].state, ScheduledEventState::Active);
    let ahead = events[0].not_before.as_second() - jiff::Timestamp::now().as_second();
    assert!((598..=600).contains(&ahead));
    assert_eq!(
        events[0].not_after.unwrap().as_second() - events[0].not_before.as_second(),
        1200
    );

    ctl.post(&format!("scheduled-event/{id}/cancel"), json!({}))
        .await;
    let events = c.scheduled_events().await.unwrap().events;
    assert_eq!(events[0].state, ScheduledEventState::Canceled);
    let history = c.scheduled_events_history().await.unwrap().events;
    assert_eq!(history.len(), 1);
    assert!(history[0].description.starts_with("[Canceled]"));

    for state in TARGET_LIFECYCLE_STATES {
        ctl.post("asg-lifecycle", json!({ "state": state })).await;
        let got = c.target_lifecycle_state().await.unwrap().unwrap();
        assert_eq!(got.as_str(), state);
    }
    assert_eq!(
        c.target_lifecycle_state().await.unwrap(),
        Some(TargetLifecycleState::WarmedTerminated)
    );

    ctl.post("reset", json!({})).await;
    let snap = c.poll().await;
    assert_eq!(snap.rebalance.unwrap(), None);
    assert_eq!(snap.scheduled_events.unwrap().events, vec![]);
    assert_eq!(snap.target_lifecycle_state.unwrap(), None);
}

#[tokio::test]
async fn token_expired_mid_run_gets_one_fresh_token_and_one_retry() {
    let sim = sim(TokenMode::Required).await;
    let ctl = Control::of(&sim);
    let c = client(&sim);
    c.get(paths::INSTANCE_ID).await.unwrap();
    ctl.take_requests().await;

    ctl.post("expire-tokens", json!({})).await;
    assert_eq!(
        c.get(paths::INSTANCE_ID).await.unwrap().as_deref(),
        Some("i-0123456789abcdef0")
    );
    let log = summary(&ctl.take_requests().await);
    let shape: Vec<_> = log
        .iter()
        .map(|e| (e.0.as_str(), e.2, e.3.as_str()))
        .collect();
    assert_eq!(
        shape,
        [
            ("GET", 401, "expired"),
            ("PUT", 200, "none"),
            ("GET", 200, "valid")
        ]
    );
}

#[tokio::test]
async fn short_lived_token_is_refreshed_before_it_expires() {
    let sim = sim(TokenMode::Required).await;
    let ctl = Control::of(&sim);
    let c = client_with(&sim, |cfg| cfg.token_ttl = Duration::from_secs(1));
    for _ in 0..4 {
        c.get(paths::INSTANCE_ID).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let log = summary(&ctl.take_requests().await);
    assert!(
        log.iter().all(|e| e.2 == 200),
        "no read was refused: {log:?}"
    );
    assert!(
        log.iter().filter(|e| e.0 == "PUT").count() >= 2,
        "token was replaced: {log:?}"
    );
}

#[tokio::test]
async fn refused_token_falls_back_to_imdsv1_unless_v2_only() {
    let sim = sim(TokenMode::Optional).await;
    let ctl = Control::of(&sim);
    ctl.post(
        "faults",
        json!({"status": 403, "path_prefix": "/latest/api/token"}),
    )
    .await;

    let c = client(&sim);
    assert_eq!(
        c.get(paths::INSTANCE_ID).await.unwrap().as_deref(),
        Some("i-0123456789abcdef0")
    );
    c.get(paths::INSTANCE_TYPE).await.unwrap();
    let log = summary(&ctl.take_requests().await);
    let puts = log.iter().filter(|e| e.0 == "PUT").count();
    assert_eq!(
        puts, 1,
        "a refused token is not asked for on every read: {log:?}"
    );
    assert!(
        log.iter()
            .filter(|e| e.0 == "GET")
            .all(|e| e.3 == "none" && e.2 == 200)
    );

    let strict = client_with(&sim, |cfg| cfg.v2_only = true);
    let err = strict.get(paths::INSTANCE_ID).await.unwrap_err();
    assert!(matches!(err, ImdsError::TokenUnavailable { .. }), "{err}");
    assert!(!err.is_retryable());
    let log = summary(&ctl.take_requests().await);
    assert!(
        log.iter().all(|e| e.0 == "PUT"),
        "no tokenless read in v2-only mode: {log:?}"
    );
}

#[tokio::test]
async fn tokens_becoming_required_are_picked_up_after_a_401() {
    let sim = sim(TokenMode::Optional).await;
    let ctl = Control::of(&sim);
    ctl.post(
        "faults",
        json!({"status": 404, "path_prefix": "/latest/api/token", "count": 1}),
    )
    .await;
    let c = client(&sim);
    c.get(paths::INSTANCE_ID).await.unwrap();
    ctl.post("imdsv2", json!({"mode": "required"})).await;
    ctl.take_requests().await;
    assert!(c.get(paths::INSTANCE_ID).await.unwrap().is_some());
    let log = summary(&ctl.take_requests().await);
    let shape: Vec<_> = log.iter().map(|e| (e.0.as_str(), e.2)).collect();
    assert_eq!(shape, [("GET", 401), ("PUT", 200), ("GET", 200)]);
}

#[tokio::test]
async fn transient_503_is_retried_and_persistent_503_is_a_retryable_error() {
    let sim = sim(TokenMode::Optional).await;
    let ctl = Control::of(&sim);
    let c = client(&sim);
    c.get(paths::INSTANCE_ID).await.unwrap();
    ctl.take_requests().await;

    ctl.post(
        "faults",
        json!({"status": 503, "count": 2, "path_prefix": "/latest/meta-data/"}),
    )
    .await;
    assert!(c.get(paths::INSTANCE_ID).await.unwrap().is_some());
    let statuses: Vec<u64> = summary(&ctl.take_requests().await)
        .iter()
        .map(|e| e.2)
        .collect();
    assert_eq!(statuses, [503, 503, 200]);

    ctl.post(
        "faults",
        json!({"status": 503, "path_prefix": "/latest/meta-data/"}),
    )
    .await;
    let err = c.get(paths::INSTANCE_ID).await.unwrap_err();
    assert!(
        matches!(err, ImdsError::Status { status: 503, .. }),
        "{err}"
    );
    assert!(err.is_retryable());
    assert_eq!(ctl.take_requests().await.len(), 3, "attempts are bounded");
}

#[tokio::test]
async fn slow_answers_time_out_and_are_retried() {
    let sim = sim(TokenMode::Optional).await;
    let ctl = Control::of(&sim);
    let c = client_with(&sim, |cfg| cfg.request_timeout = Duration::from_millis(150));
    c.get(paths::INSTANCE_ID).await.unwrap();

    ctl.post(
        "faults",
        json!({"latency_ms": 1000, "count": 1, "path_prefix": "/latest/meta-data/"}),
    )
    .await;
    assert!(
        c.get(paths::INSTANCE_ID).await.unwrap().is_some(),
        "second attempt is fast"
    );

    ctl.post(
        "faults",
        json!({"latency_ms": 1000, "path_prefix": "/latest/meta-data/"}),
    )
    .await;
    let err = c.get(paths::INSTANCE_ID).await.unwrap_err();
    assert!(matches!(err, ImdsError::Timeout { .. }), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let sim = sim(TokenMode::Optional).await;
    let ctl = Control::of(&sim);
    let c = client(&sim);
    c.get(paths::INSTANCE_ID).await.unwrap();
    for status in [400, 403] {
        ctl.post(
            "items",
            json!({"path": "meta-data/spot/instance-action", "status": status}),
        )
        .await;
        ctl.take_requests().await;
        let err = c.spot_instance_action().await.unwrap_err();
        assert!(
            matches!(err, ImdsError::Status { status: s, .. } if s == status),
            "{err}"
        );
        assert!(!err.is_retryable());
        assert_eq!(ctl.take_requests().await.len(), 1);
    }
}

#[tokio::test]
async fn garbage_bodies_give_typed_errors_and_never_hide_other_items() {
    let sim = sim(TokenMode::Optional).await;
    let ctl = Control::of(&sim);
    let c = client_with(&sim, |cfg| cfg.max_body_bytes = 4096);
    ctl.post("spot-interruption", json!({})).await;

    let garbage = [
        (
            "meta-data/events/recommendations/rebalance",
            "{\"noticeTime\": ".to_owned(),
            "invalid JSON",
        ),
        (
            "meta-data/events/recommendations/rebalance",
            r#"{"noticeTime":"yesterday"}"#.to_owned(),
            "RFC 3339",
        ),
        (
            "meta-data/events/recommendations/rebalance",
            "x".repeat(5000),
            "cap",
        ),
        (
            "meta-data/autoscaling/target-lifecycle-state",
            "Exploded".to_owned(),
            "unknown state",
        ),
        (
            "meta-data/events/maintenance/scheduled",
            r#"{"Code":"system-reboot"}"#.to_owned(),
            "invalid JSON",
        ),
    ];
    for (path, body, says) in garbage {
        ctl.post("reset", json!({})).await;
        ctl.post("spot-interruption", json!({})).await;
        ctl.post("items", json!({"path": path, "body": body})).await;
        let snap = c.poll().await;
        let errors: Vec<String> = snap.errors().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 1, "{path}: {errors:?}");
        assert!(
            errors[0].contains(says),
            "{path}: {:?} should mention {says:?}",
            errors[0]
        );
        assert!(errors[0].contains(path), "{:?} names the item", errors[0]);
        let spot = snap.spot_instance_action.expect("spot item unaffected");
        assert_eq!(spot.unwrap().action, SpotAction::Terminate);
    }

    // One malformed scheduled event is reported beside the valid ones, never instead of them.
    ctl.post("reset", json!({})).await;
    ctl.post(
        "items",
        json!({"path": "meta-data/events/maintenance/scheduled", "body":
            r#"[{"Code":"system-reboot"},{"NotBefore":"21 Jan 2019 09:00:43 GMT","Code":"system-reboot","EventId":"e-ok","State":"active"}]"#}),
    )
    .await;
    let events = c.poll().await.scheduled_events.expect("the item reads");
    assert_eq!(events.events.len(), 1);
    assert_eq!(events.events[0].event_id, "e-ok");
    assert!(events.malformed[0].1.to_string().contains("missing field"));
    // An unknown spot action with a valid time is a terminate notice (EC2 takes the instance).
    ctl.post(
        "items",
        json!({"path": "meta-data/spot/instance-action", "body": r#"{"action":"explode","time":"2026-11-23T00:00:00Z"}"#}),
    )
    .await;
    let read = c.spot_instance_action().await.unwrap().unwrap();
    assert_eq!(read.action, SpotAction::Terminate);
    assert_eq!(read.unknown_action.as_deref(), Some("explode"));

    // An interruption whose time cannot be read is still an interruption (fail closed).
    ctl.post(
        "items",
        json!({"path": "meta-data/spot/instance-action", "body": r#"{"action":"terminate","time":"soon"}"#}),
    )
    .await;
    let read = c.spot_instance_action().await.unwrap().unwrap();
    assert_eq!(
        (read.time, read.unreadable_time.as_deref()),
        (None, Some("soon"))
    );
    ctl.post(
        "items",
        json!({"path": "meta-data/spot/instance-action", "body": "<html>"}),
    )
    .await;
    let err = c.spot_instance_action().await.unwrap_err();
    assert!(matches!(err, ImdsError::Malformed { .. }));
    assert!(err.to_string().contains("invalid JSON"), "{err}");

    // A legacy termination-time body that is not a time is "no notice", not an error.
    ctl.post(
        "items",
        json!({"path": "meta-data/spot/termination-time", "body": "not yet"}),
    )
    .await;
    assert_eq!(c.spot_termination_time().await.unwrap(), None);
}

#[tokio::test]
async fn unreachable_service_is_a_retryable_transport_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = sih_imds::ImdsClient::new(sih_imds::ImdsConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        backoff_base: Duration::from_millis(1),
        ..Default::default()
    })
    .unwrap();
    let err = c.get(paths::INSTANCE_ID).await.unwrap_err();
    assert!(
        matches!(err, ImdsError::Transport { .. } | ImdsError::Timeout { .. }),
        "{err}"
    );
    assert!(err.is_retryable());
}
