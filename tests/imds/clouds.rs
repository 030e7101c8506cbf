//! The GCE and Azure clients (`sih-clouds`) against their simulators (`sih-sim-clouds`) over
//! loopback, and Google's own client (`google-auth`) against the GCE simulator.

use std::time::Duration;

use serde_json::{Value, json};
use sih_clouds::azure::{AzureClient, AzureConfig, EventStatus, EventType};
use sih_clouds::gce::{GceClient, GceConfig, MAINTENANCE_EVENT, PREEMPTED};
use sih_sim_clouds::{Running, azure, gce};

async fn post(sim: &Running, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/{path}", sim.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

async fn get(sim: &Running, path: &str) -> Value {
    reqwest::get(format!("{}/_sim/{path}", sim.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn gce_client(sim: &Running, watch: Duration) -> GceClient {
    GceClient::new(GceConfig {
        endpoint: sim.url(),
        request_timeout: Duration::from_millis(500),
        watch_timeout: watch,
    })
    .unwrap()
}

#[tokio::test]
async fn gce_watches_answer_on_change_at_once_for_a_stale_etag_and_on_timeout() {
    let sim = gce::start(gce::Config::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let c = gce_client(&sim, Duration::from_secs(1));
    let id = c.identity().await.unwrap();
    assert_eq!(id.name, "gke-spot-pool-5f0c1a2b-x7kq");
    assert_eq!(id.zone, "us-central1-a");
    assert_eq!(id.machine_type, "e2-standard-4");
    assert!(id.preemptible);
    assert_eq!(
        id.provider_id(),
        "gce://rehearsal-project/us-central1-a/gke-spot-pool-5f0c1a2b-x7kq"
    );
    let first = c.read(PREEMPTED).await.unwrap();
    assert_eq!(first.body, "FALSE");
    let etag = first.etag.clone().unwrap();
    // Nothing changes: the watch answers the same value when its timeout ends.
    let same = c.watch(PREEMPTED, &etag).await.unwrap();
    assert_eq!(
        (same.body.as_str(), same.etag.as_deref()),
        ("FALSE", Some(etag.as_str()))
    );
    // A change answers the watch as it happens.
    let watching = tokio::spawn({
        let c = gce_client(&sim, Duration::from_secs(20));
        let etag = etag.clone();
        async move {
            let v = c.watch(PREEMPTED, &etag).await.unwrap();
            (v, tokio::time::Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    post(&sim, "preempt", json!({})).await;
    let changed_at = tokio::time::Instant::now();
    let (v, answered) = watching.await.unwrap();
    assert_eq!(v.body, "TRUE");
    assert_ne!(v.etag.as_deref(), Some(etag.as_str()));
    assert!(answered.duration_since(changed_at) < Duration::from_secs(1));
    // A watch with a stale ETag (the change came between two watches) answers at once.
    let started = tokio::time::Instant::now();
    let stale = gce_client(&sim, Duration::from_secs(20))
        .watch(PREEMPTED, &etag)
        .await
        .unwrap();
    assert_eq!(stale.body, "TRUE");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(c.read(MAINTENANCE_EVENT).await.unwrap().body, "NONE");
}

#[tokio::test]
async fn gce_refuses_requests_without_the_flavor_and_faults_become_classed_errors() {
    let sim = gce::start(gce::Config::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let plain = reqwest::get(format!("{}/computeMetadata/v1/instance/id", sim.url()))
        .await
        .unwrap();
    assert_eq!(plain.status(), 403);
    let c = gce_client(&sim, Duration::from_secs(1));
    post(&sim, "faults", json!({"status": 503, "remaining": 1})).await;
    let e = c.read(PREEMPTED).await.unwrap_err();
    assert!(e.is_retryable() && e.kind() == "status", "{e}");
    post(&sim, "faults", json!({"hang": true, "remaining": 1})).await;
    let e = c.read(PREEMPTED).await.unwrap_err();
    assert_eq!(e.kind(), "timeout", "{e}");
    // A value that is neither TRUE nor FALSE is a clear error, not a notice.
    post(
        &sim,
        "values",
        json!({"path": "instance/preempted", "value": "MAYBE"}),
    )
    .await;
    let body = c.read(PREEMPTED).await.unwrap().body;
    assert!(sih_clouds::gce::items::parse_preempted(&body).is_err());
}

#[tokio::test]
async fn google_auth_reads_the_gce_simulator_as_it_reads_gce() {
    let sim = gce::start(gce::Config::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let host = sim.addr().to_string();
    let out = tokio::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/imds/google_auth_check.py"
        ))
        .env("GCE_METADATA_HOST", &host)
        .env("GCE_METADATA_IP", &host)
        .env("SIM_CONTROL", sim.url())
        .output()
        .await
        .expect("python3 runs (./scripts/test installs google-auth)");
    assert!(
        out.status.success(),
        "google-auth failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["ping"], true, "{seen}");
    assert_eq!(seen["project"], "rehearsal-project");
    assert_eq!(seen["name"], "gke-spot-pool-5f0c1a2b-x7kq");
    assert_eq!(seen["preemptible"], "TRUE");
    assert_eq!(seen["scheduling"]["onHostMaintenance"], "TERMINATE");
    assert_eq!(seen["missing"], Value::Null);
    assert_eq!(seen["before"], "FALSE");
    assert_eq!(seen["after"], "TRUE", "the long poll answered the change");
    let waited = seen["waited_seconds"].as_f64().unwrap();
    assert!(
        (0.3..5.0).contains(&waited),
        "waited {waited} s for a change made after 0.5 s"
    );
}

fn azure_client(sim: &Running) -> AzureClient {
    AzureClient::new(AzureConfig {
        endpoint: sim.url(),
        request_timeout: Duration::from_millis(500),
        first_call_timeout: Duration::from_secs(10),
    })
    .unwrap()
}

#[tokio::test]
async fn azure_events_start_when_acknowledged_and_disappear_when_cancelled() {
    let config = azure::Config {
        first_call_delay: Duration::from_millis(800),
        ..azure::Config::default()
    };
    let sim = azure::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let c = azure_client(&sim);
    let id = c.identity().await.unwrap();
    assert_eq!(id.name, "aks-spotpool-12345678-vmss000000");
    assert_eq!(id.priority, "Spot");
    // The first call starts the service: a short poll fails until it answers.
    let warm = tokio::spawn({
        let c = azure_client(&sim);
        async move { c.warm_up().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(c.events().await.unwrap_err().kind(), "timeout");
    warm.await.unwrap().unwrap();
    let empty = c.events().await.unwrap();
    assert!(empty.events.is_empty());

    let preempt = post(
        &sim,
        "events",
        json!({"type": "Preempt", "not_before_seconds": 30}),
    )
    .await["EventId"]
        .as_str()
        .unwrap()
        .to_owned();
    let reboot = post(&sim, "events", json!({"type": "Reboot"})).await["EventId"]
        .as_str()
        .unwrap()
        .to_owned();
    let doc = c.events().await.unwrap();
    assert!(doc.incarnation > empty.incarnation);
    let p = doc.events.iter().find(|e| e.id == preempt).unwrap();
    assert_eq!(
        (p.kind, p.status),
        (EventType::Preempt, EventStatus::Scheduled)
    );
    let left = p.not_before.unwrap().duration_since(jiff::Timestamp::now());
    assert!(left > jiff::SignedDuration::from_secs(25), "{left:?}");

    c.acknowledge(std::slice::from_ref(&preempt)).await.unwrap();
    let doc = c.events().await.unwrap();
    let p = doc.events.iter().find(|e| e.id == preempt).unwrap();
    assert_eq!((p.status, p.not_before), (EventStatus::Started, None));
    let log = get(&sim, "requests").await;
    let acks: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "POST")
        .collect();
    assert_eq!(acks.len(), 1);
    assert!(acks[0]["body"].as_str().unwrap().contains(&preempt));

    post(&sim, &format!("events/{reboot}/cancel"), json!({})).await;
    let doc = c.events().await.unwrap();
    assert!(doc.events.iter().all(|e| e.id != reboot), "cancelled: gone");

    // Without the header Azure refuses, as it does.
    let plain = reqwest::get(format!(
        "{}/metadata/scheduledevents?api-version=2020-07-01",
        sim.url()
    ))
    .await
    .unwrap();
    assert_eq!(plain.status(), 400);
}
