//! Queue mode end to end: a real moto server for SQS (started here), `simulate cluster`, and
//! `queue` as a process. Messages are the contract's samples with the simulated nodes'
//! instance ids.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{Value, json};

use crate::moto::Moto;
use crate::support::{BIN, Proc, Scene, cordoned, taints, until};

/// The controller's own access key: its requests are told apart from the test's set-up calls
/// (`Moto::iam_actions`; moto reads a key of 20 capitals and digits).
const CONTROLLER_KEY: &str = "AKIASIHCONTROLLER000";

const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", CONTROLLER_KEY),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
];

fn sample(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/crates/queue/samples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

// The same bodies against the simulator and against the real control plane: Leases between
// replicas, a takeover after kill -9, lifecycle hooks, the queue manifest's RBAC.
crate::on_both_backends!(
    spot_warning_fences_drains_and_deletes_the_message_only_afterwards,
    terminate_hook_heartbeats_while_draining_then_continues,
    two_replicas_on_one_queue_drain_and_announce_each_notice_once,
    a_replica_killed_mid_drain_is_taken_over_within_seconds,
    spot_warning_over_tls_with_the_queue_manifests_rbac,
);

/// The nodes other than the spot node `s.node`.
async fn other_nodes(s: &Scene) -> Vec<String> {
    kube::Api::<k8s_openapi::api::core::v1::Node>::all(s.client.clone())
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .filter(|n| n != &s.node)
        .collect()
}

/// The instance id in a node's providerID.
async fn instance_of(s: &Scene, node: &str) -> String {
    let n: k8s_openapi::api::core::v1::Node =
        kube::Api::all(s.client.clone()).get(node).await.unwrap();
    n.spec
        .unwrap()
        .provider_id
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

struct QueueScene {
    s: Scene,
    moto: Moto,
    sqs: aws_sdk_sqs::Client,
    url: String,
    controller: Proc,
    admin: String,
}

/// A `queue` controller process on `url`; returns it with its admin URL.
async fn controller(s: &Scene, moto: &Moto, url: &str, extra: &[&str]) -> (Proc, String) {
    controller_with_env(s, moto, url, extra, &[]).await
}

async fn controller_with_env(
    s: &Scene,
    moto: &Moto,
    url: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Proc, String) {
    let mut args = vec![
        "--log-format",
        "json",
        "--log-level",
        "info,spot_interrupt_handler=debug,sih_report=debug",
        "queue",
        "--queue-url",
        url,
        "--aws-endpoint",
        &moto.url,
        "--kubeconfig",
        s.kubeconfig.to_str().unwrap(),
        "--admin-listen",
        "127.0.0.1:0",
        "--deadline-margin",
        "1s",
    ];
    if !extra.contains(&"--visibility-timeout") {
        args.extend_from_slice(&["--visibility-timeout", "4s"]);
    }
    args.extend_from_slice(extra);
    let mut all_env = AWS_ENV.to_vec();
    all_env.extend_from_slice(env);
    let (proc, _out) = Proc::spawn(&args, &all_env);
    let admin = proc
        .until_logged("admin listener", Duration::from_secs(20))
        .await["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    proc.until_logged("consuming the queue", Duration::from_secs(20))
        .await;
    (proc, format!("http://{admin}"))
}

/// Nodes for `instances` as EKS registers them: named by the private DNS name EC2 gave each,
/// with its providerID; the first `spot` are spot capacity. JSON is YAML.
fn nodes_yaml(instances: &[sih_queue::Instance], spot: usize) -> String {
    instances
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            let mut n = sih_sim_cluster::workload::node(i, i < spot);
            let name = inst.private_dns_name.clone().expect("moto names instances");
            let zone = inst.availability_zone.clone().unwrap();
            n["metadata"]["name"] = json!(name);
            n["metadata"]["labels"]["kubernetes.io/hostname"] = json!(name);
            n["metadata"]["labels"]["topology.kubernetes.io/zone"] = json!(zone);
            n["metadata"]["annotations"]["sim.spot-interrupt-handler/instance-id"] = json!(inst.id);
            n["spec"]["providerID"] = json!(format!("aws:///{zone}/{}", inst.id));
            n.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

impl QueueScene {
    async fn start(extra: &[&str]) -> Self {
        Self::launch(None, extra, None).await
    }

    /// moto first: three instances in its EC2 (the spot one tagged `tag`), then a cluster
    /// whose nodes are those instances, then the queue and a controller.
    async fn launch(rbac: Option<(&str, &str)>, extra: &[&str], tag: Option<&str>) -> Self {
        Self::launch_with(rbac, extra, tag, &[]).await
    }

    /// `launch`, with `env` for the controller.
    async fn launch_with(
        rbac: Option<(&str, &str)>,
        extra: &[&str],
        tag: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        let moto = Moto::start().await;
        let mut ids = moto.run_instances(1, tag).await;
        ids.extend(moto.run_instances(2, None).await);
        let instances = moto.instances(&ids).await;
        assert_eq!(instances.len(), 3);
        let s = Scene::start_full(&[], rbac, Some(&nodes_yaml(&instances, 1))).await;
        Self::start_in(s, moto, extra, env).await
    }

    async fn start_in(s: Scene, moto: Moto, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let sqs = moto.sqs().await;
        let url = sqs
            .create_queue()
            .queue_name("spot-events")
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let (controller, admin) = controller_with_env(&s, &moto, &url, extra, env).await;
        Self {
            s,
            moto,
            sqs,
            url,
            controller,
            admin,
        }
    }

    async fn send(&self, body: &str) {
        self.send_to(&self.url, body).await;
    }

    async fn send_to(&self, url: &str, body: &str) {
        self.sqs
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    /// Another queue on this moto (for a replica that alone reads it); returns its URL.
    async fn other_queue(&self, name: &str) -> String {
        self.sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap()
    }

    /// (visible, in flight) messages.
    async fn depth(&self) -> (u64, u64) {
        self.depth_of(&self.url).await
    }

    /// (visible, in flight) messages of any queue on this moto.
    async fn depth_of(&self, url: &str) -> (u64, u64) {
        let a = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        let n = |k: QueueAttributeName| a.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
        (
            n(QueueAttributeName::ApproximateNumberOfMessages),
            n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    async fn until_empty(&self) {
        until("the queue is empty", Duration::from_secs(20), || async {
            self.depth().await == (0, 0)
        })
        .await;
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// The status of an admin endpoint (`/readyz`, `/healthz`) and its body.
    async fn probe(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("{}{path}", self.admin)).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Waits until the spot node carries the taint `key`.
    async fn until_tainted(&self, key: &str, within: Duration) {
        until(&format!("the node carries {key}"), within, || async {
            taints(&self.s.node().await)
                .iter()
                .any(|(k, _, _)| k == key)
        })
        .await;
    }

    fn count_logged(&self, message: &str) -> usize {
        self.controller
            .json_lines()
            .iter()
            .filter(|l| l["message"] == message)
            .count()
    }
}

fn spot_warning(instance: &str) -> String {
    ec2_event("spot-interruption-warning.json", instance)
}

/// An EC2 EventBridge sample (its `detail.instance-id`) about `instance`, sent now.
fn ec2_event(sample_name: &str, instance: &str) -> String {
    let mut v: Value = serde_json::from_str(&sample(sample_name)).unwrap();
    v["detail"]["instance-id"] = json!(instance);
    v["time"] = json!(jiff::Timestamp::now().to_string());
    v.to_string()
}

async fn spot_warning_fences_drains_and_deletes_the_message_only_afterwards() {
    let q = QueueScene::start(&[]).await;
    let instance = instance_of(&q.s, &q.s.node).await;
    q.send(&spot_warning(&instance)).await;
    until("fenced", Duration::from_secs(20), || async {
        cordoned(&q.s.node().await)
    })
    .await;
    // While its drain runs, the message is in flight, not deleted.
    if q.count_logged("drain succeeded") == 0 {
        assert_eq!(q.depth().await.1, 1, "{}", q.controller.log());
    }
    q.s.drained().await;
    q.until_empty().await;
    assert!(taints(&q.s.node().await).iter().any(|(k, v, _)| k
        == "spot-interrupt-handler/spot-interruption"
        && v.starts_with(&instance)));
    assert_eq!(q.count_logged("drain succeeded"), 1);
    // Found the EKS way: EC2's private DNS name is the node's name.
    let resolved: Vec<Value> = q
        .controller
        .json_lines()
        .into_iter()
        .filter(|l| l["message"] == "instance resolved")
        .collect();
    assert_eq!(resolved[0]["by"], "private-dns-name", "{resolved:?}");
    assert_eq!(resolved[0]["node"], q.s.node.as_str());
    assert_eq!(
        q.metric("spot_interrupt_handler_queue_messages_total{result=\"done\"}")
            .await,
        1.0
    );
    assert_eq!(
        q.metric(
            "spot_interrupt_handler_notices_total{kind=\"spot-interruption\",source=\"queue\"}"
        )
        .await,
        1.0
    );
    assert!(
        q.metric("spot_interrupt_handler_queue_message_age_seconds_count")
            .await
            >= 1.0
    );
    drop(q.moto);
}

#[tokio::test]
async fn duplicates_poison_and_unknown_instances() {
    let q = QueueScene::start(&[]).await;
    let instance = instance_of(&q.s, &q.s.node).await;
    let body = spot_warning(&instance);
    // The same event twice (at-least-once delivery): one drain.
    q.send(&body).await;
    q.send(&body).await;
    // Every malformed example, and an instance that is not in this cluster.
    let poison: Vec<String> = serde_json::from_str(&sample("malformed-examples.json")).unwrap();
    for p in &poison {
        if !p.is_empty() {
            q.send(p).await;
        }
    }
    q.send(&spot_warning("i-0000000000000dead")).await;
    q.send(&sample("asg-test-notification.json")).await;
    q.s.drained().await;
    q.until_empty().await;
    assert_eq!(q.count_logged("drain started"), 1, "{}", q.controller.log());
    assert_eq!(
        q.metric("spot_interrupt_handler_queue_messages_total{result=\"malformed\"}")
            .await,
        5.0
    );
    assert_eq!(
        q.metric("spot_interrupt_handler_queue_messages_total{result=\"ignored\"}")
            .await,
        3.0
    );
    assert_eq!(
        q.metric("spot_interrupt_handler_queue_messages_total{result=\"unknown_instance\"}")
            .await,
        1.0
    );
    drop(q.moto);
}

#[tokio::test]
async fn state_change_stopping_and_a_health_event_naming_two_instances() {
    let q = QueueScene::start(&["--rebalance-action", "taint"]).await;
    let spot = instance_of(&q.s, &q.s.node).await;
    let mut v: Value = serde_json::from_str(&sample("instance-state-change.json")).unwrap();
    v["detail"]["instance-id"] = json!(spot);
    v["detail"]["state"] = json!("stopping");
    v["time"] = json!(jiff::Timestamp::now().to_string());
    q.send(&v.to_string()).await;
    q.s.drained().await;
    q.until_empty().await;

    // Both instances of one Health event are fenced (NTH handled only the first).
    let nodes = other_nodes(&q.s).await;
    let a = instance_of(&q.s, &nodes[0]).await;
    let b = instance_of(&q.s, &nodes[1]).await;
    // The first instance's drain is slow (15 s): the second is fenced meanwhile, not after.
    slow_pod_on(&q.s, &nodes[0], 15).await;
    let drains_before = q.count_logged("drain succeeded");
    let mut h: Value = serde_json::from_str(&sample("aws-health-scheduled-change.json")).unwrap();
    h["detail"]["affectedEntities"] = json!([{"entityValue": a}, {"entityValue": b}]);
    h["detail"]["startTime"] = json!("Fri, 15 Jan 2027 10:00:00 GMT");
    q.send(&h.to_string()).await;
    for n in &nodes[..2] {
        until(
            "fenced by the Health event",
            Duration::from_secs(10),
            || async {
                let node: k8s_openapi::api::core::v1::Node =
                    kube::Api::all(q.s.client.clone()).get(n).await.unwrap();
                taints(&node)
                    .iter()
                    .any(|(k, _, _)| k == "spot-interrupt-handler/scheduled-maintenance")
            },
        )
        .await;
    }
    assert!(
        q.count_logged("drain succeeded") < drains_before + 2,
        "both were fenced before the slow drain ended"
    );
    drop(q.moto);
}

/// An Auto Scaling group `spot-workers` with a terminate hook and a launch hook, as the samples
/// name them.
async fn group_with_hooks(moto: &Moto) {
    let asg = moto.autoscaling().await;
    asg.create_launch_configuration()
        .launch_configuration_name("lc")
        .image_id("ami-12345678")
        .instance_type("m5.large")
        .send()
        .await
        .unwrap();
    asg.create_auto_scaling_group()
        .auto_scaling_group_name("spot-workers")
        .launch_configuration_name("lc")
        .min_size(0)
        .max_size(0)
        .availability_zones("us-east-1a")
        .send()
        .await
        .unwrap();
    for (name, transition) in [
        (
            "drain-before-terminate",
            "autoscaling:EC2_INSTANCE_TERMINATING",
        ),
        ("wait-until-ready", "autoscaling:EC2_INSTANCE_LAUNCHING"),
    ] {
        asg.put_lifecycle_hook()
            .auto_scaling_group_name("spot-workers")
            .lifecycle_hook_name(name)
            .lifecycle_transition(transition)
            .heartbeat_timeout(300)
            .send()
            .await
            .unwrap();
    }
}

fn with_instance(sample_name: &str, instance: &str) -> String {
    let mut v: Value = serde_json::from_str(&sample(sample_name)).unwrap();
    v["detail"]["EC2InstanceId"] = json!(instance);
    v["time"] = json!(jiff::Timestamp::now().to_string());
    v.to_string()
}

/// A terminate lifecycle hook for the scene's node, drained and its message gone; returns the
/// instance.
async fn terminate_hook_drained(q: &QueueScene) -> String {
    group_with_hooks(&q.moto).await;
    let instance = instance_of(&q.s, &q.s.node).await;
    q.send(&with_instance(
        "asg-terminate-lifecycle-eventbridge.json",
        &instance,
    ))
    .await;
    q.s.drained().await;
    q.until_empty().await;
    instance
}

async fn terminate_hook_heartbeats_while_draining_then_continues() {
    // A pod that takes 3 s to stop and a 1 s heartbeat: the drain spans heartbeats (on a
    // real control plane the web pods alone leave in under a second).
    let q = QueueScene::start(&[
        "--heartbeat-interval",
        "1s",
        "--pod-termination-grace-period",
        "3",
    ])
    .await;
    slow_pod_on(&q.s, &q.s.node, 3).await;
    let instance = terminate_hook_drained(&q).await;
    let calls = q.moto.lifecycle_calls();
    let complete: Vec<&Value> = calls
        .iter()
        .filter(|c| c["action"] == "CompleteLifecycleAction")
        .collect();
    assert_eq!(complete.len(), 1, "{calls:?}");
    assert_eq!(complete[0]["result"], "CONTINUE");
    assert_eq!(complete[0]["hook"], "drain-before-terminate");
    assert_eq!(complete[0]["instance"], instance.as_str());
    assert_eq!(complete[0]["token"], "5f0e7c2a-0000-4000-8000-0000000000aa");
    // Completed only after the drain: it is the last call, after the heartbeats.
    assert_eq!(calls.last().unwrap()["action"], "CompleteLifecycleAction");
    let beats = calls
        .iter()
        .filter(|c| c["action"] == "RecordLifecycleActionHeartbeat")
        .count();
    assert!(beats >= 1, "{calls:?}\n{}", q.controller.log());
    assert_eq!(
        q.metric(
            "spot_interrupt_handler_actions_total{action=\"lifecycle_heartbeat\",result=\"ok\"}"
        )
        .await,
        beats as f64
    );
    // Each heartbeat is logged (debug): an operator can follow the hook being held.
    let logged = q
        .controller
        .json_lines()
        .iter()
        .filter(|l| l["message"] == "lifecycle heartbeat sent")
        .count();
    assert_eq!(logged, beats, "{}", q.controller.log());
}

/// The last heartbeat before `--heartbeat-until` is said (info): after it the hook runs out on
/// its own timeout, which an operator must know when a drain outlasts it.
#[tokio::test]
async fn the_last_lifecycle_heartbeat_is_said() {
    let q = QueueScene::start(&[
        "--heartbeat-interval",
        "1s",
        "--heartbeat-until",
        "2500ms",
        "--pod-termination-grace-period",
        "5",
    ])
    .await;
    slow_pod_on(&q.s, &q.s.node, 5).await;
    terminate_hook_drained(&q).await;
    let last = q
        .controller
        .until_logged(
            "the last lifecycle heartbeat was sent: the hook now runs out on its own timeout",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(last["level"], "INFO", "{last}");
    let beats = q
        .moto
        .lifecycle_calls()
        .iter()
        .filter(|c| c["action"] == "RecordLifecycleActionHeartbeat")
        .count();
    assert!((1..=2).contains(&beats), "{beats}: {}", q.controller.log());
}

/// The IAM actions in docs/install.md's queue-mode policy: its first JSON block (`block` 1),
/// or the optional statements after it.
fn documented_policy(block: usize) -> std::collections::BTreeSet<String> {
    let install =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/install.md")).unwrap();
    let after = install
        .split("Queue mode (SQS) needs")
        .nth(1)
        .expect("the policy's section");
    let json = after
        .split("```json")
        .nth(block)
        .and_then(|b| b.split("```").next())
        .expect("the policy's JSON");
    let policy: Value = serde_json::from_str(json).expect("the policy is JSON");
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().iter())
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// The policy docs/install.md asks for is exactly what the controller calls, both ways: every
/// request it sent to moto in a terminate-hook drain that spans heartbeats and visibility
/// extensions (the widest path: SQS, EC2, Auto Scaling) needs an action the policy grants, and
/// every action granted was used (batch calls need their single action's permission).
#[tokio::test]
async fn the_documented_iam_policy_is_exactly_what_the_controller_calls() {
    let q = QueueScene::start(&[
        "--heartbeat-interval",
        "1s",
        "--visibility-timeout",
        "2s",
        "--pod-termination-grace-period",
        "3",
    ])
    .await;
    terminate_hook_drained(&q).await;
    let called: std::collections::BTreeSet<String> = q
        .moto
        .iam_actions(CONTROLLER_KEY)
        .into_iter()
        .map(|a| a.trim_end_matches("Batch").to_owned())
        .collect();
    let policy = documented_policy(1);
    assert!(
        called.contains("autoscaling:CompleteLifecycleAction")
            && called.contains("sqs:ChangeMessageVisibility"),
        "the run took the widest path: {called:?}"
    );
    let unused: Vec<&String> = policy.difference(&called).collect();
    let missing: Vec<&String> = called.difference(&policy).collect();
    assert!(
        unused.is_empty() && missing.is_empty(),
        "granted but never called: {unused:?}; called but not granted: {missing:?}"
    );
}

#[tokio::test]
async fn launch_hook_continues_once_ready_and_unknown_instances_are_not_held_up() {
    let q = QueueScene::start(&["--launch-ready-timeout", "2s"]).await;
    group_with_hooks(&q.moto).await;
    let ready = instance_of(&q.s, &q.s.node).await;
    q.send(&with_instance(
        "asg-launch-lifecycle-eventbridge.json",
        &ready,
    ))
    .await;
    // An instance that never joins: ABANDON after the timeout. A terminating instance that is
    // not ours: CONTINUE at once.
    q.send(&with_instance(
        "asg-launch-lifecycle-eventbridge.json",
        "i-00000000000000new",
    ))
    .await;
    q.send(&with_instance(
        "asg-terminate-lifecycle-eventbridge.json",
        "i-0000000000000gone",
    ))
    .await;
    q.until_empty().await;
    until("three completions", Duration::from_secs(10), || async {
        q.moto.lifecycle_calls().len() == 3
    })
    .await;
    let calls = q.moto.lifecycle_calls();
    let result_for = |i: &str| {
        calls
            .iter()
            .find(|c| c["instance"] == i)
            .map(|c| c["result"].as_str().unwrap().to_owned())
    };
    assert_eq!(result_for(&ready).as_deref(), Some("CONTINUE"));
    assert_eq!(
        result_for("i-00000000000000new").as_deref(),
        Some("ABANDON")
    );
    assert_eq!(
        result_for("i-0000000000000gone").as_deref(),
        Some("CONTINUE")
    );
    assert!(!cordoned(&q.s.node().await), "a launch hook never fences");
}

async fn two_replicas_on_one_queue_drain_and_announce_each_notice_once() {
    let (hook, hook_url) = crate::support::Hook::start().await;
    let q = QueueScene::start(&["--webhook-url", &hook_url]).await;
    let (second, _) = controller(&q.s, &q.moto, &q.url, &["--webhook-url", &hook_url]).await;
    let instance = instance_of(&q.s, &q.s.node).await;
    let body = spot_warning(&instance);
    // Three copies of one event, as at-least-once delivery may hand them to both replicas.
    for _ in 0..3 {
        q.send(&body).await;
    }
    q.s.drained().await;
    for _ in 0..200 {
        if q.depth().await == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        q.depth().await,
        (0, 0),
        "{}\n---\n{}",
        q.controller.log(),
        second.log()
    );
    let started = |p: &Proc| {
        p.json_lines()
            .iter()
            .filter(|l| l["message"] == "drain started")
            .count()
    };
    assert_eq!(
        started(&q.controller) + started(&second),
        1,
        "{}\n---\n{}",
        q.controller.log(),
        second.log()
    );
    // One message at detection, one at the drain's end, whichever replica sent them.
    let bodies = hook.until_count(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.bodies().len(), 2, "{bodies:?}");
}

#[tokio::test]
async fn rebalance_taints_only_and_the_message_goes() {
    let q = QueueScene::start(&[]).await;
    let before = q.s.web_on_node().await;
    let instance = instance_of(&q.s, &q.s.node).await;
    q.send(&ec2_event("rebalance-recommendation.json", &instance))
        .await;
    until("rebalance taint", Duration::from_secs(20), || async {
        taints(&q.s.node().await).iter().any(|(k, _, e)| {
            k == "spot-interrupt-handler/rebalance-recommendation" && e == "PreferNoSchedule"
        })
    })
    .await;
    q.until_empty().await;
    assert!(!cordoned(&q.s.node().await));
    assert_eq!(
        q.s.web_on_node().await,
        before,
        "a rebalance recommendation only taints"
    );
}

/// In queue mode nothing more is said about a rebalance after its message: its time to live
/// runs out on a timer, and the fence is undone.
#[tokio::test]
async fn a_rebalance_fence_expires_in_queue_mode_too() {
    let q = QueueScene::start(&["--rebalance-action", "cordon", "--rebalance-ttl", "2s"]).await;
    let instance = instance_of(&q.s, &q.s.node).await;
    q.send(&ec2_event("rebalance-recommendation.json", &instance))
        .await;
    until("fenced", Duration::from_secs(20), || async {
        cordoned(&q.s.node().await)
    })
    .await;
    q.until_empty().await;
    until(
        "unfenced after the time to live",
        Duration::from_secs(10),
        || async {
            let node = q.s.node().await;
            !cordoned(&node) && taints(&node).is_empty()
        },
    )
    .await;
}

/// kill -9 of the replica holding a drain: the other one (another pod name) takes the node
/// over from its record within 10 s of the death, whatever the visibility timeout (the
/// default 20 s here: the message itself stays hidden that long), finishes the drain without a
/// second announcement, says in its drain-finished webhook what the dead replica evicted that
/// was still leaving, and the node's claim is deleted once its retention passes.
async fn a_replica_killed_mid_drain_is_taken_over_within_seconds() {
    let (hook, hook_url) = crate::support::Hook::start().await;
    let args = [
        "--webhook-url",
        &hook_url,
        "--visibility-timeout",
        "20s",
        "--claim-retention",
        "2s",
        "--pod-namespace",
        "kube-system",
    ];
    let mut q = QueueScene::start(&args).await;
    let (mut second, _) = controller(&q.s, &q.moto, &q.url, &args).await;
    // The drain lasts: a pod that takes 15 s to stop, still leaving when its evictor dies.
    slow_pod_on(&q.s, &q.s.node, 15).await;
    let instance = instance_of(&q.s, &q.s.node).await;
    q.send(&spot_warning(&instance)).await;
    let evicted = |p: &Proc| {
        p.json_lines().iter().any(|l| {
            l["message"] == "pod evicted" && l["pod"].as_str().is_some_and(|p| p.contains("slow"))
        })
    };
    until(
        "one replica evicts the slow pod",
        Duration::from_secs(20),
        || async { evicted(&q.controller) || evicted(&second) },
    )
    .await;
    let first_held = evicted(&q.controller);
    let (dead, survivor) = if first_held {
        (&mut q.controller, &second)
    } else {
        (&mut second, &q.controller)
    };
    dead.child.kill().await.unwrap();
    let killed = jiff::Timestamp::now();
    let took_over = survivor
        .until_logged("took the node over", Duration::from_secs(15))
        .await;
    let at: jiff::Timestamp = took_over["timestamp"].as_str().unwrap().parse().unwrap();
    let after = at.duration_since(killed).as_secs_f64();
    eprintln!("taken over {after:.2}s after the kill");
    assert!(
        after <= 10.0,
        "taken over {after:.1}s after the kill:\n{}",
        survivor.log()
    );
    q.s.drained().await;
    survivor
        .until_logged("drain succeeded", Duration::from_secs(30))
        .await;
    assert!(
        !survivor
            .json_lines()
            .iter()
            .any(|l| l["message"] == "notice detected"),
        "a takeover does not announce the notice again:\n{}",
        survivor.log()
    );
    // Detection (by the dead one), then the drain's end (by the survivor), which counts what
    // the dead one evicted that was still leaving.
    let bodies = hook.until_count(2, Duration::from_secs(10)).await;
    assert!(
        bodies[1].contains("evicted before this drain began"),
        "{bodies:?}"
    );
    // The message comes back after its visibility timeout and is deleted by the survivor; then the claim
    // is released and, its retention past, deleted.
    until("the queue is empty", Duration::from_secs(90), || async {
        q.depth().await == (0, 0)
    })
    .await;
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(q.s.client.clone(), "kube-system");
    // Left: the survivor's own heartbeat, nothing of the dead replica, no claim on a node.
    until("no claim is left", Duration::from_secs(20), || async {
        let left: Vec<String> = leases
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|l| l.metadata.labels?.remove(sih_node::claim::ROLE))
            .collect();
        left == ["replica"]
    })
    .await;
}

/// A queue that cannot be read: at start, the controller refuses with a one-line reason; once
/// running, readiness fails with the reason and every failed receive is counted.
#[tokio::test]
async fn a_queue_that_cannot_be_read_is_refused_at_start_and_fails_readiness_later() {
    let q = QueueScene::start(&[]).await;
    let missing = q.url.replace("spot-events", "no-such-queue");
    let args = [
        "queue",
        "--queue-url",
        &missing,
        "--aws-endpoint",
        &q.moto.url,
        "--kubeconfig",
        q.s.kubeconfig.to_str().unwrap(),
        "--admin-listen",
        "127.0.0.1:0",
    ];
    let (mut refused, _out) = Proc::spawn(&args, &AWS_ENV);
    let status = tokio::time::timeout(Duration::from_secs(30), refused.child.wait())
        .await
        .expect("the start is refused, not retried forever")
        .unwrap();
    assert!(!status.success());
    let log = refused.log();
    let reason = log
        .lines()
        .find(|l| l.contains("cannot read the queue"))
        .unwrap_or_else(|| panic!("no reason given:\n{log}"));
    assert!(
        reason.contains("no-such-queue") && reason.contains("ReceiveMessage"),
        "{reason}"
    );

    // Running, then the queue goes away.
    assert_eq!(q.probe("/readyz").await.0, 200);
    q.sqs.delete_queue().queue_url(&q.url).send().await.unwrap();
    until("readiness fails", Duration::from_secs(45), || async {
        q.probe("/readyz").await.0 == 503
    })
    .await;
    let why = q.probe("/readyz").await.1;
    assert!(why.contains("the queue cannot be read"), "{why}");
    let errors = q
        .metric("spot_interrupt_handler_aws_errors_total{service=\"sqs\",operation=\"ReceiveMessage\",class=\"client\"}")
        .await;
    assert!(errors >= 1.0, "{}", q.controller.log());
    // The process keeps trying (a queue re-created comes back to ready), live meanwhile.
    assert_eq!(q.probe("/healthz").await.0, 200);
}

/// AWS Health: a `closed` event is counted as ignored and fences nothing.
#[tokio::test]
async fn a_closed_health_event_is_ignored() {
    let q = QueueScene::start(&[]).await;
    let spot = instance_of(&q.s, &q.s.node).await;
    let mut h: Value = serde_json::from_str(&sample("aws-health-scheduled-change.json")).unwrap();
    h["detail"]["affectedEntities"] = json!([{"entityValue": spot}]);
    h["detail"]["statusCode"] = json!("closed");
    q.send(&h.to_string()).await;
    q.until_empty().await;
    assert_eq!(
        q.metric("spot_interrupt_handler_queue_messages_total{result=\"ignored\"}")
            .await,
        1.0
    );
    let node = q.s.node().await;
    assert!(!cordoned(&node) && taints(&node).is_empty(), "{node:?}");
}

/// The production path: HTTPS, the controller holding the queue manifest's ServiceAccount
/// token, and only the permissions that manifest grants (nodes list/watch for the index,
/// leases in kube-system for the claims). A missing permission fails here.
async fn spot_warning_over_tls_with_the_queue_manifests_rbac() {
    // The manifest's own Deployment runs pods too (30 s grace): cap grace so the drain is quick.
    let q = QueueScene::launch(
        Some((
            "spot-interrupt-handler-queue.yaml",
            "kube-system/spot-interrupt-handler-queue",
        )),
        &[
            "--pod-namespace",
            "kube-system",
            "--pod-termination-grace-period",
            "1",
        ],
        None,
    )
    .await;
    let instance = instance_of(&q.s, &q.s.node).await;
    q.send(&spot_warning(&instance)).await;
    q.s.drained().await;
    for _ in 0..100 {
        if q.depth().await == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = q.controller.log();
    assert_eq!(q.depth().await, (0, 0), "{log}");
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "{log}"
    );
    assert_eq!(q.count_logged("drain succeeded"), 1, "{log}");
    until(
        "SpotInterruption event",
        Duration::from_secs(10),
        || async {
            q.s.event_reasons()
                .await
                .contains(&"SpotInterruption".to_owned())
        },
    )
    .await;
}

/// Nodes are found through EC2's private DNS name by default; with a managed tag, only tagged
/// instances are acted on and the rest are deleted as not ours.
#[tokio::test]
async fn the_managed_tag_limits_which_instances_are_acted_on() {
    let q = QueueScene::launch(None, &["--managed-tag", "team/spot"], Some("team/spot")).await;
    let tagged = instance_of(&q.s, &q.s.node).await;
    let others = other_nodes(&q.s).await;
    let untagged = instance_of(&q.s, &others[0]).await;
    q.send(&spot_warning(&untagged)).await;
    q.send(&spot_warning(&tagged)).await;
    q.s.drained().await;
    q.until_empty().await;
    let other: k8s_openapi::api::core::v1::Node = kube::Api::all(q.s.client.clone())
        .get(&others[0])
        .await
        .unwrap();
    assert!(!cordoned(&other), "an untagged instance is not ours");
    assert_eq!(
        q.metric("spot_interrupt_handler_queue_messages_total{result=\"unmanaged\"}")
            .await,
        1.0
    );
    assert_eq!(
        q.metric("spot_interrupt_handler_queue_messages_total{result=\"done\"}")
            .await,
        1.0
    );
}

/// EC2 unreachable: a message that needs it is kept (it comes back), nothing is fenced on a
/// guess. `--use-provider-id` needs no EC2 at all.
#[tokio::test]
async fn without_ec2_the_message_waits_and_provider_ids_need_none() {
    let mut q = QueueScene::start(&[]).await;
    q.controller.child.kill().await.unwrap();
    let no_ec2 = [("AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:9")];
    let (blind, _) = controller_with_env(&q.s, &q.moto, &q.url, &[], &no_ec2).await;
    let instance = instance_of(&q.s, &q.s.node).await;
    q.send(&spot_warning(&instance)).await;
    blind
        .until_logged(
            "cannot look the instance up; the message comes back",
            Duration::from_secs(20),
        )
        .await;
    assert!(!cordoned(&q.s.node().await));
    let (visible, in_flight) = q.depth().await;
    assert_eq!(visible + in_flight, 1, "the message is kept");
    drop(blind);
    let (by_id, _) =
        controller_with_env(&q.s, &q.moto, &q.url, &["--use-provider-id"], &no_ec2).await;
    // Up to: the rest of the visibility timeout (4 s) + one long poll moto does not cut short.
    until("the queue is empty", Duration::from_secs(40), || async {
        q.depth().await == (0, 0)
    })
    .await;
    q.s.drained().await;
    assert_eq!(
        by_id
            .json_lines()
            .iter()
            .filter(|l| l["message"] == "drain succeeded")
            .count(),
        1,
        "{}",
        by_id.log()
    );
}

/// A terminate hook (the samples' group) whose drain is under way on the spot node, with a pod
/// that takes 30 s to stop already evicted; returns the node's instance.
async fn terminate_hook_draining_a_slow_pod(q: &QueueScene) -> String {
    group_with_hooks(&q.moto).await;
    slow_pod_on(&q.s, &q.s.node, 30).await;
    let instance = instance_of(&q.s, &q.s.node).await;
    q.send(&with_instance(
        "asg-terminate-lifecycle-eventbridge.json",
        &instance,
    ))
    .await;
    q.controller
        .until_logged("pod evicted", Duration::from_secs(20))
        .await;
    instance
}

/// A pod (Deployment `slow`) on `node` that takes `grace` seconds to stop; returns once it runs.
async fn slow_pod_on(s: &Scene, node: &str, grace: u32) {
    let slow: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": {"name": "slow", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "slow"}},
            "template": {"metadata": {"labels": {"app": "slow"}},
                "spec": {"terminationGracePeriodSeconds": grace,
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "containers": [{"name": "slow", "image": "busybox"}]}}}
    }))
    .unwrap();
    kube::Api::namespaced(s.client.clone(), "default")
        .create(&Default::default(), &slow)
        .await
        .unwrap();
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(s.client.clone(), "default");
    until("the slow pod runs", Duration::from_secs(20), || async {
        pods.list(&kube::api::ListParams::default().labels("app=slow"))
            .await
            .unwrap()
            .items
            .iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
}

/// Whether a pod of the Deployment `slow` (running or still stopping) is bound to `node`.
async fn slow_pod_still_on(s: &Scene, node: &str) -> bool {
    kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(s.client.clone(), "default")
        .list(&kube::api::ListParams::default().labels("app=slow"))
        .await
        .unwrap()
        .items
        .iter()
        .any(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
}

/// One worker, a slow drain first: the second message waits for the worker longer than its
/// visibility timeout (4 s) and stays hidden all along (the keeper extends every held
/// message), so it is never handed out twice.
#[tokio::test]
async fn a_message_waiting_for_a_worker_stays_hidden() {
    let q = QueueScene::start(&["--workers", "1"]).await;
    // A pod that takes 7 s to stop, on the node warned first.
    slow_pod_on(&q.s, &q.s.node, 7).await;
    let others = other_nodes(&q.s).await;
    q.send(&spot_warning(&instance_of(&q.s, &q.s.node).await))
        .await;
    q.controller
        .until_logged("drain started", Duration::from_secs(20))
        .await;
    q.send(&spot_warning(&instance_of(&q.s, &others[0]).await))
        .await;
    until(
        "both drained and deleted",
        Duration::from_secs(60),
        || async { q.count_logged("drain succeeded") == 2 && q.depth().await == (0, 0) },
    )
    .await;
    let took: f64 = q
        .controller
        .json_lines()
        .iter()
        .find(|l| l["message"] == "drain succeeded")
        .and_then(|l| l["took_s"].as_f64())
        .unwrap();
    assert!(
        took > 6.0,
        "the first drain waited for the slow pod: {took} s"
    );
    assert_eq!(
        q.count_logged("already being handled; this copy goes with it"),
        0,
        "{}",
        q.controller.log()
    );
    assert_eq!(
        q.metric("spot_interrupt_handler_queue_messages_total{result=\"done\"}")
            .await,
        2.0
    );
}

/// A terminate hook whose controller dies mid-drain: the next controller takes the node over
/// from its record at once; the message comes back, and with it the heartbeats (derived from
/// the message, not from memory); the hook is completed once, at the end.
#[tokio::test]
async fn a_restart_mid_drain_resumes_the_heartbeats_and_completes_the_hook_once() {
    let mut q = QueueScene::start(&["--heartbeat-interval", "1s"]).await;
    // 30 s to stop: the resumed drain outlasts the message's return (visibility 4 s, then a
    // receive that moto may answer late on a loaded machine) by far.
    terminate_hook_draining_a_slow_pod(&q).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    q.controller.child.kill().await.unwrap();
    let before = q.moto.lifecycle_calls().len();
    // Started once the message is visible again, so its first receive gets it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (next, _) = controller(&q.s, &q.moto, &q.url, &["--heartbeat-interval", "1s"]).await;
    until("the queue is empty", Duration::from_secs(60), || async {
        q.depth().await == (0, 0)
    })
    .await;
    let calls = q.moto.lifecycle_calls();
    let after_restart = &calls[before..];
    let beats = after_restart
        .iter()
        .filter(|c| c["action"] == "RecordLifecycleActionHeartbeat")
        .count();
    assert!(
        beats >= 1,
        "no heartbeat after the restart: {calls:?}\n{}",
        next.log()
    );
    let completes: Vec<&Value> = calls
        .iter()
        .filter(|c| c["action"] == "CompleteLifecycleAction")
        .collect();
    assert_eq!(completes.len(), 1, "{calls:?}");
    assert_eq!(calls.last().unwrap()["action"], "CompleteLifecycleAction");
    assert_eq!(completes[0]["result"], "CONTINUE");
    next.until_logged("drain succeeded", Duration::from_secs(5))
        .await;
    assert!(
        !next
            .json_lines()
            .iter()
            .any(|l| l["message"] == "notice detected"),
        "a takeover does not announce the notice again"
    );
}

/// A spot warning and the `stopping` and `shutting-down` state changes that follow it, handed
/// to two replicas: one evacuation of the node, one announcement and one set of Events per
/// notice (the state changes are one notice), every message deleted once it is done.
#[tokio::test]
async fn spot_and_state_changes_of_one_instance_are_one_drain_across_replicas() {
    let (hook, hook_url) = crate::support::Hook::start().await;
    let template = r#"{"kind":"{{ .Kind }}","phase":"{{ .Phase }}","type":"{{ .InstanceType }}","ip":"{{ .LocalIP }}","az":"{{ .AvailabilityZone }}","host":"{{ .LocalHostname }}","provider":"{{ .ProviderID }}"}"#;
    let args = ["--webhook-url", &hook_url, "--webhook-template", template];
    let q = QueueScene::start(&args).await;
    let (second, _) = controller(&q.s, &q.moto, &q.url, &args).await;
    let instance = instance_of(&q.s, &q.s.node).await;
    let state = |s: &str| {
        let mut v: Value = serde_json::from_str(&sample("instance-state-change.json")).unwrap();
        v["detail"]["instance-id"] = json!(instance);
        v["detail"]["state"] = json!(s);
        v["time"] = json!(jiff::Timestamp::now().to_string());
        v.to_string()
    };
    q.send(&spot_warning(&instance)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    q.send(&state("stopping")).await;
    q.send(&state("shutting-down")).await;
    q.s.drained().await;
    q.until_empty().await;
    let drains = |p: &Proc| {
        p.json_lines()
            .iter()
            .filter(|l| l["message"] == "drain started")
            .count()
    };
    assert_eq!(
        drains(&q.controller) + drains(&second),
        1,
        "{}\n---\n{}",
        q.controller.log(),
        second.log()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let detected: Vec<String> = hook
        .bodies()
        .iter()
        .filter_map(|b| serde_json::from_str::<Value>(b).ok())
        .filter(|v| v["phase"] == "detected")
        .map(|v| v["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut kinds = detected.clone();
    kinds.sort();
    assert_eq!(
        kinds,
        ["instance-state-change", "spot-interruption"],
        "one webhook per notice: {detected:?}"
    );
    // What EC2 says of the instance is in every message; the node's own once it is fenced.
    let described = q.moto.instances(std::slice::from_ref(&instance)).await;
    let ec2 = &described[0];
    for v in hook
        .bodies()
        .iter()
        .filter_map(|b| serde_json::from_str::<Value>(b).ok())
    {
        assert_eq!(
            v["type"],
            ec2.instance_type.clone().unwrap().as_str(),
            "{v}"
        );
        assert_eq!(v["ip"], ec2.private_ip.clone().unwrap().as_str(), "{v}");
        assert_eq!(
            v["az"],
            ec2.availability_zone.clone().unwrap().as_str(),
            "{v}"
        );
        assert_eq!(v["host"], q.s.node.as_str(), "{v}");
        if v["phase"] == "drained" {
            assert!(v["provider"].as_str().unwrap().ends_with(&instance), "{v}");
        }
    }
    let reasons = q.s.event_reasons().await;
    for (reason, n) in [
        ("SpotInterruption", 1),
        ("InstanceStateChange", 1),
        ("DrainStarted", 1),
    ] {
        assert_eq!(
            reasons.iter().filter(|r| *r == reason).count(),
            n,
            "{reason}: {reasons:?}"
        );
    }
}

/// `--dry-run` in queue mode writes nothing, deletes no message, and shows what it would do:
/// the fence and the drain's pods, as the agent's dry run does.
#[tokio::test]
async fn a_dry_run_previews_the_fence_and_the_drain_and_writes_nothing() {
    let q = QueueScene::start(&["--dry-run"]).await;
    let before = q.s.web_on_node().await;
    let instance = instance_of(&q.s, &q.s.node).await;
    q.send(&spot_warning(&instance)).await;
    until("the drain preview", Duration::from_secs(20), || async {
        q.controller.json_lines().iter().any(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("dry run: would drain: evict"))
        })
    })
    .await;
    let log = q.controller.log();
    assert!(
        log.contains("dry run: would taint spot-interrupt-handler/spot-interruption="),
        "{log}"
    );
    assert!(!cordoned(&q.s.node().await));
    assert_eq!(q.s.web_on_node().await, before);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        q.depth().await.0 + q.depth().await.1,
        1,
        "the message stays"
    );
}

/// A claim that names a replica which never heard it was written (the create landed, its
/// answer was lost — the soak's seed 62095): another replica's notice for the node is handed
/// to it, and the named replica takes the claim back and acts within seconds, instead of
/// everyone waiting until a message of its own comes for the node.
#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_taken_back_when_a_notice_is_handed_to_it() {
    // The holder reads a queue of its own that stays empty: only the hand-over reaches it.
    let q = QueueScene::start(&["--pod-name", "replica-holder"]).await;
    let own = q.other_queue("receiver-only").await;
    let (receiver, _) = controller(&q.s, &q.moto, &own, &["--pod-name", "replica-receiver"]).await;
    // The claim as the lost write left it: the holder's name on the node, nothing in its memory.
    let lost = sih_node::Claims::new(
        q.s.client.clone(),
        "default",
        "replica-holder",
        Duration::from_secs(6),
        Duration::from_secs(2),
    );
    assert_eq!(
        lost.acquire(&q.s.node).await.unwrap(),
        sih_node::Claim::Acquired
    );
    let instance = instance_of(&q.s, &q.s.node).await;
    q.send_to(&own, &spot_warning(&instance)).await;
    receiver
        .until_logged(
            "another replica is evacuating the node; handed the notice to it",
            Duration::from_secs(20),
        )
        .await;
    q.until_tainted(
        "spot-interrupt-handler/spot-interruption",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        q.count_logged(
            "a claim of this replica's it did not know of (its answer was lost) has notices handed to it: acting on them"
        ),
        1,
        "{}",
        q.controller.log()
    );
    q.s.drained().await;
    // The receiver's copy goes once the node is free and the notice found done.
    until(
        "the receiver's message is deleted",
        Duration::from_secs(30),
        || async { q.depth_of(&own).await == (0, 0) },
    )
    .await;
}

/// Two notices for one node received by two replicas (here two controllers on two queues, as
/// when lifecycle hooks and EventBridge use queues of their own): the one that does not hold
/// the node hands its spot warning over on the node's claim, and the holder's drain follows
/// the nearer hard deadline at once (the slow pod, evicted with its full 30 s grace for the
/// Auto Scaling termination, is asked again to fit the spot deadline and is gone before it).
/// The warning's message is deleted once the node is free and the notice found done.
#[tokio::test]
async fn a_notice_received_by_another_replica_joins_the_holders_drain() {
    let q = QueueScene::start(&[]).await;
    let instance = terminate_hook_draining_a_slow_pod(&q).await;
    let spot_queue = q.other_queue("spot-only").await;
    let (other, _) = controller(&q.s, &q.moto, &spot_queue, &[]).await;
    // A warning sent 100 s ago: 20 s left, less than the slow pod's grace.
    let mut v: Value = serde_json::from_str(&spot_warning(&instance)).unwrap();
    let sent = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(100);
    v["time"] = json!(sent.to_string());
    let deadline = sent + jiff::SignedDuration::from_secs(120);
    q.send_to(&spot_queue, &v.to_string()).await;
    other
        .until_logged(
            "another replica is evacuating the node; handed the notice to it",
            Duration::from_secs(20),
        )
        .await;
    q.controller
        .until_logged(
            "a notice handed over by another replica joins",
            Duration::from_secs(10),
        )
        .await;
    q.until_tainted(
        "spot-interrupt-handler/spot-interruption",
        Duration::from_secs(10),
    )
    .await;
    until("the slow pod is gone", Duration::from_secs(30), || async {
        !slow_pod_still_on(&q.s, &q.s.node).await
    })
    .await;
    assert!(
        jiff::Timestamp::now() < deadline,
        "the slow pod left after the spot deadline:\n{}",
        q.controller.log()
    );
    assert!(
        q.controller
            .json_lines()
            .iter()
            .any(|l| l["message"] == "a nearer deadline: the pod's grace shortened"),
        "{}",
        q.controller.log()
    );
    // Both messages go once their actions are done, each by the controller that received it.
    until("both queues are empty", Duration::from_secs(40), || async {
        q.depth().await == (0, 0) && q.depth_of(&spot_queue).await == (0, 0)
    })
    .await;
}

/// A replica that claims a node for a notice of its own (here a rebalance recommendation, done
/// once fenced) resumes the spot drain a dead replica recorded on the node; it keeps the node's
/// claim until that drain ends, not only until its own notice is done: released earlier, the
/// claim could be taken by another replica that would drain the node a second time (soak seed
/// 6531). The dead replica left no heartbeat at all, so only the notice's claim takes the node
/// over (the survivors' scan would find it only in its next full look, a minute away).
#[tokio::test]
async fn a_claim_is_held_until_a_drain_resumed_from_the_record_ends() {
    let mut q = QueueScene::start(&["--visibility-timeout", "20s"]).await;
    let rebalance_queue = q.other_queue("rebalance-only").await;
    let (survivor, _) = controller(&q.s, &q.moto, &rebalance_queue, &[]).await;
    slow_pod_on(&q.s, &q.s.node, 25).await;
    let instance = instance_of(&q.s, &q.s.node).await;
    q.send(&spot_warning(&instance)).await;
    q.controller
        .until_logged("pod evicted", Duration::from_secs(20))
        .await;
    q.controller.child.kill().await.unwrap();
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(q.s.client.clone(), "default");
    let claim_name = sih_node::claim::lease_name(&q.s.node);
    let holder = |l: &k8s_openapi::api::coordination::v1::Lease| {
        l.spec.as_ref().and_then(|s| s.holder_identity.clone())
    };
    let dead_holder = holder(&leases.get(&claim_name).await.unwrap()).expect("claimed");
    leases
        .delete(
            &sih_node::claim::replica_lease_name(&dead_holder),
            &Default::default(),
        )
        .await
        .unwrap();
    q.send_to(
        &rebalance_queue,
        &ec2_event("rebalance-recommendation.json", &instance),
    )
    .await;
    q.until_tainted(
        "spot-interrupt-handler/rebalance-recommendation",
        Duration::from_secs(20),
    )
    .await;
    // While the resumed drain waits for the slow pod, the claim stays the survivor's.
    let mut looked = 0;
    while slow_pod_still_on(&q.s, &q.s.node).await {
        let now = holder(&leases.get(&claim_name).await.unwrap());
        assert!(
            now.is_some() && now.as_deref() != Some(dead_holder.as_str()),
            "the node's claim is {now:?} while the resumed drain still runs:\n{}",
            survivor.log()
        );
        looked += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        looked >= 4,
        "the slow pod left too soon to tell ({looked} looks)"
    );
    survivor
        .until_logged("drain succeeded", Duration::from_secs(10))
        .await;
    // Then the rebalance message goes and the claim is released.
    until(
        "the rebalance message is deleted",
        Duration::from_secs(30),
        || async { q.depth_of(&rebalance_queue).await == (0, 0) },
    )
    .await;
    until("the claim is released", Duration::from_secs(10), || async {
        holder(&leases.get(&claim_name).await.unwrap()).is_none()
    })
    .await;
}

/// A notice that comes while the claim of a finished one is being given up waits for that
/// release and claims the node afresh: joined to the claim on its way out, it drained with no
/// claim under it once the release landed, and a second replica fenced and drained beside it
/// (soak seed 65950). The release's read of the claim is held back 1.8 s here (under the 2 s
/// API timeout) so the spot warning lands in the middle of it.
#[tokio::test]
async fn a_notice_during_a_claims_release_claims_the_node_afresh() {
    let q = QueueScene::start(&[]).await;
    slow_pod_on(&q.s, &q.s.node, 25).await;
    let instance = instance_of(&q.s, &q.s.node).await;
    let claim_name = sih_node::claim::lease_name(&q.s.node);
    // Nothing reads the node's claim by name before the rebalance's release does (its claim
    // is a create).
    q.s.cluster_control(
        "faults",
        json!({"verb": "get", "resource": "leases", "name": claim_name, "count": 1,
            "latency_ms": 1800}),
    )
    .await;
    q.send(&ec2_event("rebalance-recommendation.json", &instance))
        .await;
    q.until_tainted(
        "spot-interrupt-handler/rebalance-recommendation",
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    q.send(&spot_warning(&instance)).await;
    q.controller
        .until_logged("pod evicted", Duration::from_secs(20))
        .await;
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(q.s.client.clone(), "default");
    let holder = || async {
        let l = leases.get(&claim_name).await.unwrap();
        l.spec.and_then(|s| s.holder_identity)
    };
    // While the spot drain waits for the slow pod, the node's claim is the controller's.
    let mut looked = 0;
    while slow_pod_still_on(&q.s, &q.s.node).await {
        let now = holder().await;
        assert!(
            now.is_some(),
            "the node's claim was released while its spot drain still runs:\n{}",
            q.controller.log()
        );
        looked += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        looked >= 4,
        "the slow pod left too soon to tell ({looked} looks)"
    );
    q.until_empty().await;
    until("the claim is released", Duration::from_secs(10), || async {
        holder().await.is_none()
    })
    .await;
}

/// `demo --mode queue`'s story (its three messages, from the stand-in's crate) against moto:
/// the outcome the stand-in's run is checked for — one drain, the hook answered CONTINUE once
/// after it, every message deleted — holds against the real AWS mock too.
#[tokio::test]
async fn the_queue_demos_story_against_moto() {
    let q = QueueScene::start(&[]).await;
    group_with_hooks(&q.moto).await;
    let instance = instance_of(&q.s, &q.s.node).await;
    let messages = sih_sim_aws::story_messages(&instance, "spot-workers", "drain-before-terminate");
    for (i, (_, body)) in messages.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        q.send(body).await;
    }
    q.s.drained().await;
    until("the queue is empty", Duration::from_secs(40), || async {
        q.depth().await == (0, 0)
    })
    .await;
    let complete: Vec<Value> = q
        .moto
        .lifecycle_calls()
        .into_iter()
        .filter(|c| c["action"] == "CompleteLifecycleAction")
        .collect();
    assert_eq!(complete.len(), 1, "{complete:?}");
    assert_eq!(complete[0]["result"], "CONTINUE");
    let drains = q
        .controller
        .json_lines()
        .iter()
        .filter(|l| l["message"] == "drain started")
        .count();
    assert_eq!(drains, 1, "{}", q.controller.log());
}

/// boto3 (the AWS SDK for Python, not ours) against the queue demo's stand-in: every call
/// queue mode makes answers in the shapes a real SDK reads.
#[tokio::test]
async fn boto3_reads_the_stand_ins_answers() {
    let aws = sih_sim_aws::Aws::new(vec![sih_sim_aws::Instance {
        id: "i-0123456789abcdef0".into(),
        private_dns_name: "ip-10-0-0-10.ec2.internal".into(),
        private_ip: "10.0.0.10".into(),
        availability_zone: "us-east-1a".into(),
        instance_type: "m5.large".into(),
        tags: vec![("aws:autoscaling:groupName".into(), "spot-nodes".into())],
    }]);
    let server = aws.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let script = r#"
import json, sys, boto3
e = sys.argv[1]
kw = dict(endpoint_url=e, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
sqs, ec2, asg = (boto3.client(s, **kw) for s in ("sqs", "ec2", "autoscaling"))
url = sqs.create_queue(QueueName="spot-events")["QueueUrl"]
sqs.send_message(QueueUrl=url, MessageBody='{"hello": 1}')
got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, VisibilityTimeout=5, MaxNumberOfMessages=10,
                          MessageSystemAttributeNames=["All"])["Messages"]
r = got[0]["ReceiptHandle"]
batch = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
    {"Id": "0", "ReceiptHandle": r, "VisibilityTimeout": 10},
    {"Id": "1", "ReceiptHandle": "stale", "VisibilityTimeout": 10}])
attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
sqs.delete_message(QueueUrl=url, ReceiptHandle=r)
after = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
try:
    sqs.receive_message(QueueUrl=url.replace("spot-events", "nope"))
    missing = None
except sqs.exceptions.QueueDoesNotExist as x:
    missing = type(x).__name__
inst = ec2.describe_instances(Filters=[{"Name": "instance-id", "Values": ["i-0123456789abcdef0"]}])
i = inst["Reservations"][0]["Instances"][0]
token = "5f0e7c2a-0000-4000-8000-0000000000aa"
asg.record_lifecycle_action_heartbeat(AutoScalingGroupName="spot-nodes", LifecycleHookName="h",
    LifecycleActionToken=token, InstanceId="i-0123456789abcdef0")
asg.complete_lifecycle_action(AutoScalingGroupName="spot-nodes", LifecycleHookName="h",
    LifecycleActionToken=token, LifecycleActionResult="CONTINUE", InstanceId="i-0123456789abcdef0")
print(json.dumps({"body": got[0]["Body"], "receives": got[0]["Attributes"]["ApproximateReceiveCount"],
    "ok": [s["Id"] for s in batch.get("Successful", [])],
    "failed": [(f["Id"], f["SenderFault"]) for f in batch.get("Failed", [])],
    "hidden": attrs["ApproximateNumberOfMessagesNotVisible"], "left": after["ApproximateNumberOfMessages"],
    "missing": missing, "dns": i["PrivateDnsName"], "zone": i["Placement"]["AvailabilityZone"],
    "tags": i["Tags"]}))
"#;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = tokio::process::Command::new(python)
        .args(["-c", script, &server.url()])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .await
        .expect("python3 runs (./scripts/test installs boto3 with moto)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["body"], r#"{"hello": 1}"#);
    assert_eq!(got["receives"], "1");
    assert_eq!(got["ok"], json!(["0"]));
    assert_eq!(got["failed"], json!([["1", true]]));
    assert_eq!(got["hidden"], "1");
    assert_eq!(got["left"], "0");
    assert_eq!(got["missing"], "QueueDoesNotExist");
    assert_eq!(got["dns"], "ip-10-0-0-10.ec2.internal");
    assert_eq!(got["zone"], "us-east-1a");
    assert_eq!(
        got["tags"],
        json!([{"Key": "aws:autoscaling:groupName", "Value": "spot-nodes"}])
    );
    let calls = aws.lifecycle_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1]["result"], "CONTINUE");
}

/// A queue URL that names no region, with no region configured anywhere, stops the start at
/// once with that reason (it used to say only "no AWS region configured", from deep inside).
#[tokio::test]
async fn a_queue_url_without_a_region_and_no_region_configured_is_refused_with_the_reason() {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(BIN)
            .args(["queue", "--queue-url", "https://example.com/123/q"])
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("KUBECONFIG")
            .env("SIH_KUBECONFIG", "/nonexistent")
            .output(),
    )
    .await
    .expect("the start is refused at once")
    .expect("the binary runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no AWS region") && err.contains("names none"),
        "{err}"
    );
}

/// A fatal error is one line with its causes joined, in the log's format, and no backtrace
/// even with RUST_BACKTRACE=1 (it printed 30 frames, in plain text under `--log-format json`).
#[tokio::test]
async fn a_fatal_error_is_one_line_in_the_logs_format_without_a_backtrace() {
    for format in ["text", "json"] {
        let out = tokio::process::Command::new(BIN)
            .args([
                "--log-format",
                format,
                "drain",
                "some-node",
                "--deadline",
                "60s",
            ])
            .env("SIH_KUBECONFIG", "/nonexistent")
            .env("RUST_BACKTRACE", "1")
            // Colour is for terminals: none into this pipe, without being asked.
            .env_remove("NO_COLOR")
            .output()
            .await
            .expect("the binary runs");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{format}: {err}");
        assert!(
            !err.contains('\x1b'),
            "{format}: colour codes in a pipe: {err:?}"
        );
        assert!(
            err.contains("/nonexistent"),
            "{format}: the cause is kept: {err}"
        );
        if format == "json" {
            let v: Value = serde_json::from_str(lines[0]).expect("a JSON log line");
            assert_eq!(v["level"], "ERROR", "{v}");
            assert!(
                v["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("/nonexistent"),
                "{v}"
            );
        }
    }
}

/// Webhook mistakes are refused at start, in both modes, before anything else happens (no
/// metadata read, no cluster connection): a URL without a scheme, a template with an unknown
/// field, a template or headers given without a URL. They used to fail only during an
/// interruption, or once the metadata service answered.
#[tokio::test]
async fn webhook_mistakes_are_refused_before_anything_else_in_both_modes() {
    let metadata = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let imds_url = format!("http://{}", metadata.local_addr().unwrap());
    let contacted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = contacted.clone();
    tokio::spawn(async move {
        while let Ok((_conn, _)) = metadata.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let mistakes: [(&[&str], &str); 4] = [
        (
            &["--webhook-url", "hooks.slack.com/services/T/B/x"],
            "has no scheme",
        ),
        (
            &[
                "--webhook-url",
                "https://hooks.example/x",
                "--webhook-template",
                "{{ .Nope }}",
            ],
            "is not a field",
        ),
        (
            &["--webhook-template", "{{ .Kind }}"],
            "--webhook-template is set but no --webhook-url",
        ),
        (
            &["--webhook-headers", "X-A: 1"],
            "--webhook-headers is set but no --webhook-url",
        ),
    ];
    for (extra, says) in mistakes {
        for mode in ["imds", "queue"] {
            let mut args = vec![mode];
            if mode == "imds" {
                args.extend(["--node-name", "n1", "--imds-endpoint", &imds_url]);
            } else {
                args.extend(["--queue-url", "https://sqs.us-east-1.amazonaws.com/1/q"]);
            }
            args.extend(extra);
            let out = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::process::Command::new(BIN)
                    .args(&args)
                    .env("SIH_KUBECONFIG", "/nonexistent")
                    .env("NO_COLOR", "1")
                    .env_remove("WEBHOOK_URL")
                    .output(),
            )
            .await
            .expect("refused at once")
            .expect("the binary runs");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?}");
            assert!(err.contains(says), "{args:?}: {err}");
            assert!(!err.contains("/nonexistent"), "before the cluster: {err}");
            assert!(
                !err.contains("services/T/B"),
                "the URL's secret part: {err}"
            );
        }
    }
    assert_eq!(
        contacted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the metadata service was not asked"
    );
}

/// `drain` of a node the API server cannot be reached for: one line that says what failed and
/// why, each cause once (it printed kube's own error line too, and "client error (Connect)"
/// twice); a mistyped node is named as not found.
#[tokio::test]
async fn a_drain_that_cannot_reach_the_api_says_why_in_one_line() {
    let kubeconfig =
        std::env::temp_dir().join(format!("sih-unreachable-{}.yaml", std::process::id()));
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'http://127.0.0.1:1'}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\nusers:\n- name: u\n  user: {}\n",
    )
    .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(BIN)
            .args(["drain", "nosuch", "--api-timeout", "2s"])
            .env("SIH_KUBECONFIG", &kubeconfig)
            .output(),
    )
    .await
    .expect("it gives up")
    .expect("the binary runs");
    let _ = std::fs::remove_file(&kubeconfig);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        err.contains("nosuch") && err.contains("Connection refused"),
        "{err}"
    );
    assert_eq!(err.matches("client error (Connect)").count(), 1, "{err}");
}

/// With `--lb-target-health`, Service endpoints on the node: a Service `web` over the scene's
/// web pods, a target group holding the spot node's instance (registered, so `healthy`), and a
/// pod of no Service pinned to the spot node. Returns the target group's ARN.
async fn load_balanced(q: &QueueScene) -> String {
    q.s.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n\
         ---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: worker, namespace: default}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: worker}}\n  template:\n    metadata: {labels: {app: worker}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      nodeSelector: {lifecycle: Ec2Spot}\n      containers: [{name: w, image: busybox}]\n",
    )
    .await;
    let group = q.moto.target_group("web").await;
    let instance = instance_of(&q.s, &q.s.node).await;
    q.moto.set_target(&group, &instance, true).await;
    until(
        "the worker runs on the spot node",
        Duration::from_secs(20),
        || async { q.s.pods_on_node("app=worker").await == 1 },
    )
    .await;
    // The endpoints controller lists the web pods once they run.
    until(
        "the Service has endpoints",
        Duration::from_secs(20),
        || async {
            kube::Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::default_namespaced(
                q.s.client.clone(),
            )
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|s| !s.endpoints.is_empty())
        },
    )
    .await;
    group
}

/// A spot warning sent `ago` after EventBridge's time: its deadline is two minutes after that.
fn spot_warning_sent(instance: &str, ago: Duration) -> String {
    let mut v: Value = serde_json::from_str(&spot_warning(instance)).unwrap();
    let at = jiff::Timestamp::now() - jiff::SignedDuration::try_from(ago).unwrap();
    v["time"] = json!(at.to_string());
    v.to_string()
}

/// `--lb-target-health` in queue mode, on moto's ELBv2: Service endpoints stay until the node's
/// instance is deregistered from its target group, other pods leave at once, and the
/// controller calls exactly the ELBv2 actions docs/install.md grants for it.
#[tokio::test]
async fn endpoints_leave_once_the_load_balancer_no_longer_sends_the_node_requests() {
    let q = QueueScene::start(&["--lb-target-health"]).await;
    let group = load_balanced(&q).await;
    let web_here = q.s.web_on_node().await;
    assert!(web_here > 0, "the spot node has web pods");
    let instance = instance_of(&q.s, &q.s.node).await;
    q.send(&spot_warning(&instance)).await;
    until("the worker is evicted", Duration::from_secs(10), || async {
        q.s.pods_on_node("app=worker").await == 0
    })
    .await;
    // The target stays healthy: the endpoints stay, for as long as the test lets them.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(q.s.web_on_node().await, web_here, "{}", q.controller.log());
    let deregistered = std::time::Instant::now();
    q.moto.set_target(&group, &instance, false).await;
    q.s.drained().await;
    let took = deregistered.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "endpoints left {took:?} after the deregistration"
    );
    let lb: Vec<Value> = q
        .controller
        .json_lines()
        .into_iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("load balancers:"))
        })
        .collect();
    assert!(
        lb.iter().any(|l| l["message"]
            .as_str()
            .unwrap()
            .contains("no load balancer sends the node new requests")),
        "{lb:?}"
    );
    q.until_empty().await;
    let events = q.s.events().await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("LoadBalancers")
                && e.type_.as_deref() == Some("Normal")),
        "{events:?}"
    );
    let elb: std::collections::BTreeSet<String> = q
        .moto
        .iam_actions(CONTROLLER_KEY)
        .into_iter()
        .filter(|a| a.starts_with("elasticloadbalancing:"))
        .collect();
    assert_eq!(
        elb,
        documented_policy(2),
        "the optional statement's actions"
    );
}

/// The deadline always wins: a target never deregistered holds the endpoints only until the
/// last moment their grace still fits, and the node is empty before the instance's end.
#[tokio::test]
async fn a_target_that_stays_healthy_never_holds_endpoints_past_the_deadline() {
    let q = QueueScene::start(&["--lb-target-health"]).await;
    load_balanced(&q).await;
    let web_here = q.s.web_on_node().await;
    let instance = instance_of(&q.s, &q.s.node).await;
    // 16 s left: the endpoints' last moment is 2 s before it (1 s grace, 1 s margin).
    let sent = tokio::time::Instant::now();
    let deadline = std::time::Instant::now() + Duration::from_secs(16);
    q.send(&spot_warning_sent(&instance, Duration::from_secs(104)))
        .await;
    until("the worker is evicted", Duration::from_secs(10), || async {
        q.s.pods_on_node("app=worker").await == 0
    })
    .await;
    // Well before the endpoints' last moment (14 s after the notice), they are still here.
    tokio::time::sleep_until(sent + Duration::from_secs(6)).await;
    assert_eq!(q.s.web_on_node().await, web_here, "{}", q.controller.log());
    until(
        "the endpoints are gone",
        Duration::from_secs(14),
        || async { q.s.web_on_node().await == 0 },
    )
    .await;
    assert!(
        std::time::Instant::now() < deadline,
        "the node was empty only after the deadline"
    );
    let done = q
        .controller
        .until_logged("drain succeeded", Duration::from_secs(5))
        .await;
    assert!(done["slack_s"].as_f64().unwrap() >= 0.0, "{done}");
}

/// ELBv2 cannot be reached: endpoints wait `--lb-drain-delay` instead, and a Warning Event
/// says why.
#[tokio::test]
async fn load_balancers_that_cannot_be_asked_fall_back_to_the_drain_delay() {
    let closed = format!("http://127.0.0.1:{}", crate::support::free_port());
    let q = QueueScene::launch_with(
        None,
        &["--lb-target-health", "--lb-drain-delay", "3s"],
        None,
        &[("AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2", &closed)],
    )
    .await;
    load_balanced(&q).await;
    let web_here = q.s.web_on_node().await;
    let instance = instance_of(&q.s, &q.s.node).await;
    let sent = std::time::Instant::now();
    q.send(&spot_warning(&instance)).await;
    until("the worker is evicted", Duration::from_secs(10), || async {
        q.s.pods_on_node("app=worker").await == 0
    })
    .await;
    assert_eq!(q.s.web_on_node().await, web_here, "{}", q.controller.log());
    q.s.drained().await;
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(15),
        "drained {took:?} after the notice"
    );
    let events = q.s.events().await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("LoadBalancers")
                && e.type_.as_deref() == Some("Warning")
                && e.message
                    .as_deref()
                    .is_some_and(|m| m.contains("--lb-drain-delay"))),
        "{events:?}"
    );
    // Counted as the SDK clients' failures are.
    let series = "spot_interrupt_handler_aws_errors_total{service=\"elasticloadbalancing\",operation=\"DescribeTargetGroups\",class=\"network\"}";
    assert!(q.metric(series).await >= 1.0, "{series} missing");
}

/// Issue 32 (11): started without NAMESPACE, the controller's Leases went to `default`, where
/// the shipped Role grants nothing: every message met a 403 and came back, forever. Now it
/// takes the namespace of its service-account mount, and refuses to start, with the reason,
/// when its Lease cannot be written.
#[tokio::test]
async fn a_controller_that_cannot_write_its_lease_refuses_to_start_with_the_reason() {
    let moto = Moto::start().await;
    let ids = moto.run_instances(3, None).await;
    let instances = moto.instances(&ids).await;
    let s = Scene::start_full(
        &[],
        Some((
            "spot-interrupt-handler-queue.yaml",
            "kube-system/spot-interrupt-handler-queue",
        )),
        Some(&nodes_yaml(&instances, 1)),
    )
    .await;
    let url = moto
        .sqs()
        .await
        .create_queue()
        .queue_name("spot-events")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let (mut proc, _out) = Proc::spawn(
        &[
            "--log-format",
            "json",
            "queue",
            "--queue-url",
            &url,
            "--aws-endpoint",
            &moto.url,
            "--kubeconfig",
            s.kubeconfig.to_str().unwrap(),
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &AWS_ENV,
    );
    let status = tokio::time::timeout(Duration::from_secs(30), proc.child.wait())
        .await
        .expect("it stops by itself")
        .unwrap();
    assert!(!status.success());
    // The last line may reach the reader a moment after the process has ended.
    let said = |log: &str| {
        log.contains("cannot write this replica's Lease") && log.contains("set NAMESPACE")
    };
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while !said(&proc.log()) && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = proc.log();
    assert!(said(&log), "{log}");
}
