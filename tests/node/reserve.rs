//! Capacity first (issue 31): placeholders made, kept, preempted and removed, against the
//! simulator and the real control plane (its scheduler's preemption, its admission of a
//! pod's PriorityClass).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sih_node::reserve::{self, Reservations, ReserveConfig};
use sih_node::{DrainConfig, Progress};

use crate::support::{TestCluster, cluster, drain, node_name, node_of, running, until_running};

/// The placeholders' PriorityClass, as deploy/manifests ships it (its first object).
fn priority_class() -> String {
    let text = include_str!("../../deploy/manifests/reserve-capacity.yaml");
    text.split("\n---\n").next().unwrap().to_owned()
}

/// A Deployment whose pods ask for `cpu` (on the real control plane a kwok node has 1000).
fn web(replicas: usize, cpu: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{{name: c, image: nginx, resources: {{requests: {{cpu: "{cpu}"}}}}}}]
"#
    )
}

fn config() -> ReserveConfig {
    ReserveConfig::new(
        true,
        reserve::DEFAULT_IMAGE.into(),
        Duration::from_secs(300),
        Duration::from_secs(10),
    )
}

/// Our placeholders (of `node`, or all), those not being deleted.
async fn placeholders(client: &kube::Client, node: Option<&str>) -> Vec<Pod> {
    Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels(&reserve::selector(node)))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(reserve::NAME_PREFIX))
        })
        .collect()
}

async fn cordon(client: &kube::Client, node: &str) {
    Api::<Node>::all(client.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
}

async fn pods_on(client: &kube::Client, node: &str, selector: &str) -> Vec<Pod> {
    running(client, selector)
        .await
        .into_iter()
        .filter(|p| node_of(p) == node)
        .collect()
}

/// Waits up to 30 s for `ok`, polling.
async fn until<F, Fut>(what: &str, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    while !ok().await {
        assert!(tokio::time::Instant::now() < end, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

crate::on_both_backends!(
    a_replacement_preempts_its_placeholder,
    placeholders_are_made_once_kept_across_a_restart_and_removed_by_release_or_ttl,
    the_keeper_removes_in_time_a_placeholder_nobody_told_it_of,
);

/// The whole point of a placeholder: it holds room where the replacement can go, and the
/// replacement takes it. Node B has room for one pod (the simulator: one pod; the real one:
/// 1000 CPUs, the pod asks 600). The placeholder for the web pod on A runs on B; the web pod
/// is evicted; its replacement preempts the placeholder and runs on B.
async fn a_replacement_preempts_its_placeholder() {
    let yaml = format!("{}\n---\n{}", priority_class(), web(1, "600"));
    let (_c, client) = cluster(2, 1, &yaml).await;
    until_running(&client, "app=web", 1).await;
    let pod = running(&client, "app=web").await.remove(0);
    let a = node_of(&pod);
    let b = [node_name(0), node_name(1)]
        .into_iter()
        .find(|n| *n != a)
        .unwrap();
    cordon(&client, &a).await;

    let done = reserve::reserve(&client, &a, std::slice::from_ref(&pod), &config())
        .await
        .unwrap();
    assert_eq!((done.made, done.kept, done.failed), (1, 0, 0), "{done:?}");
    until("the placeholder runs on B", || async {
        placeholders(&client, Some(&a)).await.iter().any(|p| {
            node_of(p) == b && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
    })
    .await;

    let (report, _) = drain(&client, &a, Duration::from_secs(30), DrainConfig::default()).await;
    assert!(report.succeeded(), "{report:?}");
    until(
        "the replacement runs on B, in the placeholder's room",
        || async { pods_on(&client, &b, "app=web").await.len() == 1 },
    )
    .await;
    assert!(
        placeholders(&client, Some(&a)).await.is_empty(),
        "the placeholder was preempted"
    );
}

/// Two passes (two notices, a second drain) reserve once; a look after a restart keeps what
/// is not yet due; `release` removes one node's, the TTL every one due; a pod of the same
/// role that is not ours is never touched.
async fn placeholders_are_made_once_kept_across_a_restart_and_removed_by_release_or_ttl() {
    let yaml = format!("{}\n---\n{}", priority_class(), web(4, "1"));
    let (_c, client) = cluster(2, 10, &yaml).await;
    until_running(&client, "app=web", 4).await;
    let (a, b) = (node_name(0), node_name(1));
    let on_a = pods_on(&client, &a, "app=web").await;
    let on_b = pods_on(&client, &b, "app=web").await;
    assert_eq!(on_a.len() + on_b.len(), 4);

    let first = reserve::reserve(&client, &a, &on_a, &config())
        .await
        .unwrap();
    assert_eq!((first.made, first.kept), (on_a.len(), 0), "{first:?}");
    let again = reserve::reserve(&client, &a, &on_a, &config())
        .await
        .unwrap();
    assert_eq!((again.made, again.kept), (0, on_a.len()), "{again:?}");
    reserve::reserve(&client, &b, &on_b, &config())
        .await
        .unwrap();
    assert_eq!(placeholders(&client, Some(&a)).await.len(), on_a.len());
    assert_eq!(placeholders(&client, None).await.len(), 4);
    // Each mirrors its pod's requests, and names it.
    for p in placeholders(&client, Some(&a)).await {
        let stands_for = &p.metadata.annotations.as_ref().unwrap()[reserve::STANDS_FOR];
        assert!(
            on_a.iter()
                .any(|w| format!("default/{}", w.metadata.name.as_deref().unwrap()) == *stands_for),
            "{stands_for}"
        );
        let spec = p.spec.unwrap();
        let requests = spec.containers[0]
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap();
        assert_eq!(requests["cpu"].0, "1");
        assert_eq!(
            spec.priority,
            Some(reserve::PRIORITY),
            "priority from the class"
        );
    }

    // Somebody else's pod wearing our labels (anyone may write labels): not our name, class
    // or owner, so never taken for ours.
    let decoy: Pod = serde_json::from_value(json!({
        "metadata": {"name": "not-ours", "namespace": "default",
            "labels": {reserve::ROLE.0: reserve::ROLE.1, reserve::FOR_NODE: a.clone(),
                sih_node::claim::MANAGED_BY.0: sih_node::claim::MANAGED_BY.1}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &decoy)
        .await
        .unwrap();

    // A restart's first look: nothing is due, everything kept, the next due within the TTL.
    let (removed, next) = reserve::expire(
        &client,
        None,
        Duration::from_secs(3600),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(removed, 0);
    let next = next.expect("placeholders left");
    assert!(next > jiff::Timestamp::now(), "{next}");
    assert_eq!(placeholders(&client, None).await.len(), 4);

    assert_eq!(
        reserve::release(&client, &a, Duration::from_secs(10))
            .await
            .unwrap(),
        on_a.len()
    );
    until("A's placeholders are gone", || async {
        placeholders(&client, Some(&a)).await.is_empty()
    })
    .await;
    assert_eq!(
        placeholders(&client, Some(&b)).await.len(),
        on_b.len(),
        "B's kept"
    );

    let (removed, next) =
        reserve::expire(&client, Some(&b), Duration::ZERO, Duration::from_secs(10))
            .await
            .unwrap();
    assert_eq!((removed, next), (on_b.len(), None));
    until("B's placeholders are gone", || async {
        placeholders(&client, None).await.is_empty()
    })
    .await;
    assert!(
        Api::<Pod>::namespaced(client.clone(), "default")
            .get_opt("not-ours")
            .await
            .unwrap()
            .is_some(),
        "a pod that is not ours stays"
    );
}

/// A placeholder that lands after the keeper's first look without its bell ringing (a
/// previous life's create answered after that life ended: soak seed 64079) is found and
/// removed when its TTL runs out, not kept for ever.
async fn the_keeper_removes_in_time_a_placeholder_nobody_told_it_of() {
    let yaml = format!("{}\n---\n{}", priority_class(), web(2, "1"));
    let (_c, client) = cluster(2, 10, &yaml).await;
    until_running(&client, "app=web", 2).await;
    let a = node_of(&running(&client, "app=web").await[0]);
    let on_a = pods_on(&client, &a, "app=web").await;
    let ttl = Duration::from_secs(4);
    let keeper = tokio::spawn(reserve::keep(
        client.clone(),
        Some(a.clone()),
        ttl,
        Duration::from_secs(10),
        std::sync::Arc::new(tokio::sync::Notify::new()),
    ));
    // Its first look finds none; then the late create lands.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let made_at = tokio::time::Instant::now();
    let made = reserve::reserve(&client, &a, &on_a, &config())
        .await
        .unwrap();
    assert_eq!(made.made, on_a.len(), "{made:?}");
    until(
        "the keeper removed the placeholder it was not told of",
        || async { placeholders(&client, Some(&a)).await.is_empty() },
    )
    .await;
    keeper.abort();
    let lived = made_at.elapsed();
    // Not before its TTL (the real server's creation time has whole seconds), and found in
    // time: the keeper looks every TTL/2 while a previous life's creates may land.
    assert!(
        lived >= ttl - Duration::from_secs(1),
        "removed early: {lived:?}"
    );
    assert!(
        lived <= ttl + Duration::from_secs(4),
        "found late: {lived:?}"
    );
}

/// A drain that reserves says so, and its placeholders stand for the pods it moved; a create
/// that never answers holds up no eviction (simulator: its faults).
#[tokio::test]
async fn a_drain_reserves_beside_its_evictions_and_a_hung_create_holds_up_none() {
    for hung in [false, true] {
        let yaml = format!("{}\n---\n{}", priority_class(), web(4, "1"));
        let (c, client) = cluster(2, 10, &yaml).await;
        until_running(&client, "app=web", 4).await;
        let a = node_name(0);
        let on_a = pods_on(&client, &a, "app=web").await.len();
        assert!(on_a > 0);
        cordon(&client, &a).await;
        if hung {
            let TestCluster::Simulator(sim) = &c else {
                unreachable!()
            };
            sim.faults()
                .add(sih_sim_cluster::faults::FaultSpec {
                    verb: Some("create".into()),
                    resource: Some("pods".into()),
                    hang: true,
                    ..Default::default()
                })
                .unwrap();
        }
        let asked = std::sync::Arc::new(tokio::sync::Notify::new());
        let cfg = DrainConfig {
            reserve: Some(Reservations {
                config: ReserveConfig {
                    // Longer than the drain: a create that waited for it would show.
                    api_timeout: Duration::from_secs(60),
                    ..config()
                },
                asked: asked.clone(),
            }),
            ..DrainConfig::default()
        };
        let (report, events) = drain(&client, &a, Duration::from_secs(60), cfg).await;
        assert!(report.succeeded(), "{report:?}");
        assert!(
            report.took < Duration::from_secs(30),
            "the drain waited for a hung create: {report:?}"
        );
        let reserved: Vec<&Progress> = events
            .iter()
            .filter(|e| matches!(e, Progress::Reserved { .. }))
            .collect();
        if hung {
            assert!(reserved.is_empty(), "no create answered: {reserved:?}");
            assert_eq!(
                events
                    .iter()
                    .filter(|e| matches!(e, Progress::Evicted { .. }))
                    .count(),
                on_a,
                "every pod evicted while the creates hung"
            );
        } else {
            assert!(
                matches!(reserved[..], [Progress::Reserved { what, warning: false }] if what.starts_with(&format!("{on_a} placeholder(s)"))),
                "{reserved:?}"
            );
            assert_eq!(placeholders(&client, Some(&a)).await.len(), on_a);
            // The keeper was told to look again.
            tokio::time::timeout(Duration::from_secs(1), asked.notified())
                .await
                .expect("the keeper's bell rang");
        }
    }
}
