//! NTH's IMDS conformance scenarios, run as a user would: `simulate cluster`, `simulate imds`
//! and `imds` as three processes.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use crate::support::{Hook, Proxy, Scene, annotation, cordoned, label, taints, until};

const SPOT_TAINT: &str = "spot-interrupt-handler/spot-interruption";
const REBALANCE_TAINT: &str = "spot-interrupt-handler/rebalance-recommendation";
const SCHEDULED_TAINT: &str = "spot-interrupt-handler/scheduled-maintenance";
const LB: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
const NOTICE: &str = "spot-interrupt-handler/notice";

// The same bodies against the simulator and against the real control plane.
crate::on_both_backends!(
    spot_interruption_fences_drains_and_tells,
    cordon_only_never_evicts,
    dry_run_writes_nothing_anywhere,
    scheduled_maintenance_drains_and_its_cancellation_unfences,
    a_reboot_after_the_fence_unfences_on_restart,
    rebalance_taints_then_the_spot_notice_drains,
    a_withdrawn_rebalance_recommendation_is_undone,
    asg_target_state_terminated_drains,
    an_invalid_eviction_choice_is_an_event_on_the_pod_and_an_opted_out_pod_stays,
    rebalance_drain_when_asked,
    a_rebalance_fence_is_undone_after_its_time_to_live_unless_an_interruption_followed,
    spot_interruption_over_tls_with_the_manifests_rbac,
);

async fn spot_interruption_fences_drains_and_tells() {
    let s = Scene::start(&[]).await;
    let (hook, url) = Hook::start().await;
    let before = s.web_on_node().await;
    assert!(before >= 1, "the spot node runs web pods");
    let agent = s
        .agent(&[
            "--webhook-url",
            &url,
            "--cluster-name",
            "prod-east",
            "--out-of-service-taint",
        ])
        .await;
    assert_eq!(agent.get("/readyz").await.0, 200);
    s.spot(60).await;
    s.drained().await;

    let node = s.node().await;
    let t = taints(&node);
    assert!(
        t.iter()
            .any(|(k, v, e)| k == SPOT_TAINT && v.contains("-spot-") && e == "NoSchedule"),
        "{t:?}"
    );
    assert!(cordoned(&node));
    assert_eq!(label(&node, LB).as_deref(), Some("spot-interrupt-handler"));
    let record: Value = serde_json::from_str(&annotation(&node, NOTICE).unwrap()).unwrap();
    assert_eq!(record["notices"][0]["kind"], "spot-interruption");
    assert!(record["notices"][0]["deadline"].is_string());

    // Events: the notice, the fence, the drain and each eviction.
    until("DrainSucceeded event", Duration::from_secs(10), || async {
        s.event_reasons()
            .await
            .contains(&"DrainSucceeded".to_owned())
    })
    .await;
    let reasons = s.event_reasons().await;
    for r in ["SpotInterruption", "Fenced", "DrainStarted", "PodEvicted"] {
        assert!(
            reasons.contains(&r.to_owned()),
            "{r} missing from {reasons:?}"
        );
    }
    // Where an operator looks first: `kubectl describe node` selects Events by the node's uid
    // (or, by the kubelet's convention, its name), so each of ours must name it.
    let described = s.describe("node", &s.node);
    for r in [
        "SpotInterruption",
        "Fenced",
        "DrainStarted",
        "DrainSucceeded",
    ] {
        assert!(
            described.contains(r),
            "kubectl describe node lacks {r}:\n{described}"
        );
    }
    // After a successful drain the out-of-service taint lets volumes detach at once.
    until("out-of-service taint", Duration::from_secs(5), || async {
        taints(&s.node().await)
            .iter()
            .any(|(k, _, e)| k == "node.kubernetes.io/out-of-service" && e == "NoExecute")
    })
    .await;

    // Metrics: bounded labels, counted once per notice.
    assert_eq!(
        agent
            .metric(
                "spot_interrupt_handler_notices_total{kind=\"spot-interruption\",source=\"imds\"}"
            )
            .await,
        1.0
    );
    assert_eq!(
        agent
            .metric("spot_interrupt_handler_evictions_total{result=\"evicted\"}")
            .await,
        before as f64
    );
    assert_eq!(
        agent
            .metric("spot_interrupt_handler_fence_latency_seconds_count")
            .await,
        1.0
    );
    assert_eq!(
        agent
            .metric("spot_interrupt_handler_actions_total{action=\"drain\",result=\"ok\"}")
            .await,
        1.0
    );
    // The numbers that show it worked: where the interruption landed, notice to node empty,
    // each pod's eviction to gone (the slowest named in the log).
    assert_eq!(
        agent
            .metric("spot_interrupt_handler_interruptions_total{kind=\"spot-interruption\",instance_type=\"m5.large\",zone=\"us-east-1a\"}")
            .await,
        1.0
    );
    assert_eq!(
        agent
            .metric(
                "spot_interrupt_handler_notice_to_empty_seconds_count{kind=\"spot-interruption\"}"
            )
            .await,
        1.0
    );
    assert_eq!(
        agent
            .metric(
                "spot_interrupt_handler_notice_to_fenced_seconds_count{kind=\"spot-interruption\"}"
            )
            .await,
        1.0
    );
    assert_eq!(
        agent
            .metric("spot_interrupt_handler_pod_exit_seconds_count")
            .await,
        before as f64
    );
    // Time to recover: the evicted replicas Ready again elsewhere.
    agent
        .proc
        .until_logged(
            "every evicted workload has its replicas Ready again",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        agent
            .metric("spot_interrupt_handler_notice_to_recovered_seconds_count{kind=\"spot-interruption\"}")
            .await,
        1.0
    );
    let done = agent
        .proc
        .until_logged("drain succeeded", Duration::from_secs(5))
        .await;
    assert!(
        done["slowest_pod"]
            .as_str()
            .is_some_and(|p| p.starts_with("default/web-"))
            && done["slowest_s"].as_f64().is_some_and(|t| t > 0.0),
        "{done}"
    );
    assert_eq!(agent.get("/healthz").await.0, 200);

    // Webhooks: one at detection, one at the drain's end, Slack-shaped, with the cluster name.
    let bodies = hook.until_count(2, Duration::from_secs(10)).await;
    let texts: Vec<String> = bodies
        .iter()
        .map(|b| {
            serde_json::from_str::<Value>(b).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        texts[0].contains("prod-east") && texts[0].contains(&s.node),
        "{texts:?}"
    );
    assert!(texts[0].contains("spot-interruption notice"), "{texts:?}");
    assert!(
        texts[1].contains("drain of node") && texts[1].contains("succeeded"),
        "{texts:?}"
    );
    // Polling on: no duplicate notice, no third message.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(hook.bodies().len(), 2);
}

#[tokio::test]
async fn imdsv2_required_still_sees_the_notice() {
    let s = Scene::start(&["--imdsv2", "required"]).await;
    let agent = s.agent(&[]).await;
    s.spot(60).await;
    s.drained().await;
    assert!(cordoned(&s.node().await));
    // Every metadata read carried a token.
    let log: Vec<Value> = reqwest::get(format!("{}/_sim/requests", s.imds_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let gets: Vec<&Value> = log.iter().filter(|e| e["method"] == "GET").collect();
    assert!(!gets.is_empty());
    assert!(
        gets.iter()
            .all(|e| e["status"] != 401 && e["token"].as_str().is_some_and(|t| !t.is_empty())),
        "{gets:?}"
    );
    drop(agent);
}

async fn cordon_only_never_evicts() {
    let s = Scene::start(&[]).await;
    let before = s.web_on_node().await;
    let agent = s.agent_with(&[], &[("CORDON_ONLY", "true")]).await;
    s.spot(60).await;
    until("cordoned", Duration::from_secs(10), || async {
        cordoned(&s.node().await)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(s.web_on_node().await, before, "nothing was evicted");
    assert!(
        taints(&s.node().await)
            .iter()
            .any(|(k, _, _)| k == SPOT_TAINT)
    );
    assert_eq!(
        agent
            .metric("spot_interrupt_handler_evictions_total{result=\"evicted\"}")
            .await,
        0.0
    );
}

async fn dry_run_writes_nothing_anywhere() {
    let s = Scene::start(&[]).await;
    let (hook, url) = Hook::start().await;
    let before = s.node().await;
    let pods = s.web_on_node().await;
    let agent = s.agent(&["--dry-run", "--webhook-url", &url]).await;
    s.spot(60).await;
    let line = agent
        .proc
        .until_logged("dry run: would drain", Duration::from_secs(10))
        .await;
    assert!(line["notice_id"].as_str().unwrap().contains("-spot-"));
    let fence_line = agent.proc.json_lines().into_iter().find(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("dry run: would taint"))
    });
    assert!(fence_line.is_some(), "{}", agent.proc.log());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = s.node().await;
    assert_eq!(
        before.metadata.resource_version, after.metadata.resource_version,
        "the node was not written"
    );
    // Said once, however often the plan is recomputed (issue 32: it was said twice).
    let said = |what: &str| {
        agent
            .proc
            .json_lines()
            .iter()
            .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with(what)))
            .count()
    };
    assert_eq!(said("dry run: would taint"), 1, "{}", agent.proc.log());
    assert_eq!(s.web_on_node().await, pods);
    assert!(s.events().await.is_empty(), "no Events were written");
    assert!(hook.bodies().is_empty(), "no webhook was sent");
    // What would have been sent is logged instead.
    let logged = agent
        .proc
        .until_logged("dry run: webhook message not sent", Duration::from_secs(5))
        .await;
    assert!(
        logged["body"]
            .as_str()
            .is_some_and(|b| b.contains("spot-interruption") && b.contains(&s.node)),
        "{logged}"
    );
    assert_eq!(
        agent
            .metric(
                "spot_interrupt_handler_notices_total{kind=\"spot-interruption\",source=\"imds\"}"
            )
            .await,
        1.0
    );
}

async fn scheduled_event(s: &Scene) -> String {
    let v = s
        .control(
            "scheduled-event",
            json!({"code": "system-reboot", "not_before_seconds": 600}),
        )
        .await;
    v["EventId"]
        .as_str()
        .or_else(|| v["event_id"].as_str())
        .unwrap_or_else(|| panic!("no EventId in {v}"))
        .to_owned()
}

async fn scheduled_maintenance_drains_and_its_cancellation_unfences() {
    let s = Scene::start(&[]).await;
    let agent = s.agent(&[]).await;
    let id = scheduled_event(&s).await;
    s.drained().await;
    let node = s.node().await;
    assert!(cordoned(&node));
    assert!(
        taints(&node)
            .iter()
            .any(|(k, v, _)| k == SCHEDULED_TAINT && v == &id)
    );

    s.control(&format!("scheduled-event/{id}/cancel"), json!({}))
        .await;
    until(
        "unfenced after the cancellation",
        Duration::from_secs(10),
        || async {
            let n = s.node().await;
            !cordoned(&n)
                && taints(&n).is_empty()
                && label(&n, LB).is_none()
                && annotation(&n, NOTICE).is_none()
        },
    )
    .await;
    until("Unfenced event", Duration::from_secs(5), || async {
        s.event_reasons().await.contains(&"Unfenced".to_owned())
    })
    .await;
    // The node takes pods again: scale up and some land on it.
    let deploy: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::default_namespaced(s.client.clone());
    deploy
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": 9}})),
        )
        .await
        .unwrap();
    until(
        "pods come back to the node",
        Duration::from_secs(10),
        || async { s.web_on_node().await > 0 },
    )
    .await;
    drop(agent);
}

async fn a_reboot_after_the_fence_unfences_on_restart() {
    let s = Scene::start(&[]).await;
    let mut agent = s.agent(&[]).await;
    let id = scheduled_event(&s).await;
    s.drained().await;
    // The instance reboots: the agent stops, and comes back with a fresh uptime while the
    // event is still listed.
    assert!(agent.proc.sigterm().await.success());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::write(&s.uptime_file, "0.50 0.10\n").unwrap();
    let agent = s.agent(&[]).await;
    until(
        "unfenced after the reboot",
        Duration::from_secs(10),
        || async {
            let n = s.node().await;
            !cordoned(&n) && taints(&n).is_empty()
        },
    )
    .await;
    // And it stays so: the event that caused the reboot is over.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!cordoned(&s.node().await));
    assert!(
        agent.proc.log().contains("the instance rebooted"),
        "{}",
        agent.proc.log()
    );
    assert!(!id.is_empty());
}

async fn rebalance_taints_then_the_spot_notice_drains() {
    let s = Scene::start(&[]).await;
    let before = s.web_on_node().await;
    let _agent = s.agent(&[]).await;
    s.control("rebalance-recommendation", json!({})).await;
    until("rebalance taint", Duration::from_secs(10), || async {
        taints(&s.node().await)
            .iter()
            .any(|(k, _, e)| k == REBALANCE_TAINT && e == "PreferNoSchedule")
    })
    .await;
    let node = s.node().await;
    assert!(!cordoned(&node), "a rebalance recommendation only taints");
    assert!(label(&node, LB).is_none());
    assert_eq!(s.web_on_node().await, before);

    s.spot(60).await;
    s.drained().await;
    let node = s.node().await;
    assert!(cordoned(&node));
    let keys: Vec<String> = taints(&node).into_iter().map(|(k, _, _)| k).collect();
    assert!(keys.contains(&SPOT_TAINT.to_owned()) && keys.contains(&REBALANCE_TAINT.to_owned()));
}

async fn a_withdrawn_rebalance_recommendation_is_undone() {
    let s = Scene::start(&[]).await;
    let _agent = s.agent(&[]).await;
    s.control("rebalance-recommendation", json!({})).await;
    until("rebalance taint", Duration::from_secs(10), || async {
        !taints(&s.node().await).is_empty()
    })
    .await;
    s.control("reset", json!({})).await;
    until("taint removed", Duration::from_secs(10), || async {
        let n = s.node().await;
        taints(&n).is_empty() && annotation(&n, NOTICE).is_none()
    })
    .await;
}

async fn asg_target_state_terminated_drains() {
    let s = Scene::start(&[]).await;
    let agent = s.agent(&[]).await;
    s.control("asg-lifecycle", json!({"state": "Terminated"}))
        .await;
    s.drained().await;
    assert!(
        taints(&s.node().await)
            .iter()
            .any(|(k, _, _)| k == "spot-interrupt-handler/asg-termination")
    );
    assert_eq!(
        agent
            .metric(
                "spot_interrupt_handler_notices_total{kind=\"asg-termination\",source=\"imds\"}"
            )
            .await,
        1.0
    );
}

#[tokio::test]
async fn webhook_goes_through_an_http_proxy_with_a_custom_template() {
    let s = Scene::start(&[]).await;
    let (hook, url) = Hook::start().await;
    let (proxy, proxy_url) = Proxy::start().await;
    let _agent = s
        .agent(&[
            "--spot-interruption-action",
            "notify",
            "--webhook-url",
            &url,
            "--webhook-proxy",
            &proxy_url,
            "--webhook-headers",
            r#"{"X-Team":"infra"}"#,
            "--webhook-template",
            r#"{"msg":"{{ .Kind }} {{ .InstanceID }} on {{ .NodeName }} in {{ .ClusterName }}"}"#,
            "--cluster-name",
            "c1",
        ])
        .await;
    s.spot(60).await;
    let bodies = hook.until_count(1, Duration::from_secs(10)).await;
    let v: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(
        v["msg"],
        format!("spot-interruption i-0123456789abcdef0 on {} in c1", s.node)
    );
    assert_eq!(hook.got.lock().unwrap()[0].0["x-team"], "infra");
    assert_eq!(*proxy.seen.lock().unwrap(), vec![url.clone()]);
    // `notify` only tells: the node is untouched.
    assert!(taints(&s.node().await).is_empty());
}

/// Every field a template may use is filled where the source knows it: the instance's facts
/// from the metadata service (public address, Auto Scaling group from its tags, ...), the
/// node's own (providerID, labels) from the fence write, and the pods the drain moved.
#[tokio::test]
async fn webhook_messages_fill_every_field_their_sources_know() {
    let s = Scene::start(&[]).await;
    let (hook, url) = Hook::start().await;
    let template = format!(
        "{{{}}}",
        sih_report::webhook::fields()
            .iter()
            .map(|f| format!("\"{f}\":\"{{{{ .{f} }}}}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    let _agent = s
        .agent(&[
            "--webhook-url",
            &url,
            "--webhook-template",
            &template,
            "--cluster-name",
            "c1",
        ])
        .await;
    let web = s.web_on_node().await;
    assert!(web > 0);
    s.spot(60).await;
    let bodies = hook.until_count(2, Duration::from_secs(20)).await;
    let detected: Value = serde_json::from_str(&bodies[0]).unwrap();
    let drained: Value = serde_json::from_str(&bodies[1]).unwrap();
    assert_eq!(detected["Phase"], "detected");
    assert_eq!(drained["Phase"], "drained");
    for m in [&detected, &drained] {
        for (field, want) in [
            ("Kind", "spot-interruption"),
            ("Monitor", "imds"),
            ("InstanceID", "i-0123456789abcdef0"),
            ("InstanceType", "m5.large"),
            ("AvailabilityZone", "us-east-1a"),
            ("Region", "us-east-1"),
            ("AccountId", "123456789012"),
            ("InstanceLifeCycle", "spot"),
            ("LocalIP", "10.0.0.10"),
            ("PublicIP", "203.0.113.10"),
            ("PublicHostname", "ec2-203-0-113-10.compute-1.amazonaws.com"),
            ("AutoScalingGroupName", "spot-nodes"),
            ("ClusterName", "c1"),
        ] {
            assert_eq!(m[field], want, "{field} in {m}");
        }
        for field in [
            "EventID",
            "StartTime",
            "EndTime",
            "Deadline",
            "Description",
            "LocalHostname",
        ] {
            assert!(
                m[field].as_str().is_some_and(|v| !v.is_empty()),
                "{field} in {m}"
            );
        }
    }
    // The node's facts are learned from its fence write, the pods from the drain.
    let node = s.node().await;
    let provider_id = node
        .spec
        .as_ref()
        .and_then(|s| s.provider_id.clone())
        .unwrap();
    assert_eq!(drained["ProviderID"], provider_id.as_str());
    assert!(
        drained["NodeLabels"]
            .as_str()
            .unwrap()
            .contains(&format!("kubernetes.io/hostname={}", s.node)),
        "{drained}"
    );
    let pods: Vec<&str> = drained["Pods"].as_str().unwrap().split(',').collect();
    assert_eq!(pods.len(), web, "{drained}");
    assert!(
        pods.iter().all(|p| p.starts_with("default/web-")),
        "{pods:?}"
    );
    assert_eq!(drained["State"], "drained");
}

/// A pod whose `spot-interrupt-handler/eviction` annotation is not a choice is told so by a
/// Warning Event on it, and leaves as by default; a pod that opted out stays.
async fn an_invalid_eviction_choice_is_an_event_on_the_pod_and_an_opted_out_pod_stays() {
    let s = Scene::start(&[]).await;
    let pinned = |name: &str, choice: &str, grace: u32| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}, annotations: {{spot-interrupt-handler/eviction: \"{choice}\"}}}}\n    spec:\n      nodeSelector: {{kubernetes.io/hostname: {}}}\n      terminationGracePeriodSeconds: {grace}\n      containers: [{{name: c, image: nginx}}]",
            s.node
        )
    };
    // The typo pod takes 20 s to stop, so it is still there to be described after its Event.
    s.apply(&format!(
        "{}\n---\n{}",
        pinned("typo", "soon", 20),
        pinned("keeper", "never", 1)
    ))
    .await;
    until("both pinned pods run", Duration::from_secs(10), || async {
        let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
        let list = pods.list(&ListParams::default()).await.unwrap().items;
        ["typo-", "keeper-"].iter().all(|p| {
            list.iter().any(|x| {
                x.metadata
                    .name
                    .as_deref()
                    .unwrap_or_default()
                    .starts_with(p)
                    && x.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
        })
    })
    .await;
    let _agent = s.agent(&[]).await;
    s.spot(60).await;
    s.drained().await;
    until("the Event on the pod", Duration::from_secs(10), || async {
        s.events().await.iter().any(|e| {
            e.reason.as_deref() == Some("InvalidEvictionChoice")
                && e.involved_object
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("typo-"))
                && e.message.as_deref().is_some_and(|n| n.contains("\"soon\""))
        })
    })
    .await;
    // `kubectl describe pod` selects Events by the pod's uid: ours must carry it.
    let typo = s
        .events()
        .await
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("InvalidEvictionChoice"))
        .and_then(|e| e.involved_object.name)
        .unwrap();
    let described = s.describe("pod", &typo);
    assert!(
        described.contains("InvalidEvictionChoice") && described.contains("PodEvicted"),
        "kubectl describe pod lacks our Events:\n{described}"
    );
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let on_node: Vec<String> = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={}", s.node)))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(
        on_node.iter().any(|n| n.starts_with("keeper-")),
        "{on_node:?}"
    );
    assert!(
        !on_node.iter().any(|n| n.starts_with("typo-")),
        "{on_node:?}"
    );
}

async fn rebalance_drain_when_asked() {
    let s = Scene::start(&[]).await;
    let _agent = s.agent(&["--rebalance-action", "drain"]).await;
    s.control("rebalance-recommendation", json!({})).await;
    s.drained().await;
    let node = s.node().await;
    assert!(cordoned(&node));
    assert!(taints(&node).iter().any(|(k, _, _)| k == REBALANCE_TAINT));
}

/// An agent with a 2 s rebalance time to live, its node fenced by a rebalance recommendation.
async fn rebalance_fenced_with_a_time_to_live() -> (Scene, crate::support::Agent) {
    let s = Scene::start(&[]).await;
    let agent = s
        .agent(&["--rebalance-action", "cordon", "--rebalance-ttl", "2s"])
        .await;
    s.control("rebalance-recommendation", json!({})).await;
    until("fenced", Duration::from_secs(10), || async {
        cordoned(&s.node().await)
    })
    .await;
    (s, agent)
}

/// A rebalance fence is undone after `--rebalance-ttl` when no interruption followed, with an
/// Event that says so, and not put back while the recommendation stays visible (IMDS keeps it
/// for hours); when a spot interruption follows, the fence stays.
async fn a_rebalance_fence_is_undone_after_its_time_to_live_unless_an_interruption_followed() {
    let (s, agent) = rebalance_fenced_with_a_time_to_live().await;
    until(
        "unfenced after the time to live",
        Duration::from_secs(10),
        || async {
            let node = s.node().await;
            !cordoned(&node) && !taints(&node).iter().any(|(k, _, _)| k == REBALANCE_TAINT)
        },
    )
    .await;
    let events = s.events().await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Unfenced")
                && e.message
                    .as_deref()
                    .is_some_and(|m| m.contains("--rebalance-ttl"))),
        "{:?}",
        events.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    // Still visible in IMDS: it stays undone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!cordoned(&s.node().await));
    drop(agent);

    // A spot interruption follows a rebalance: the fence stays past the time to live.
    let (s, _agent) = rebalance_fenced_with_a_time_to_live().await;
    s.spot(60).await;
    s.drained().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let node = s.node().await;
    assert!(cordoned(&node));
    assert!(taints(&node).iter().any(|(k, _, _)| k == REBALANCE_TAINT));
}

/// The production path: HTTPS, the agent's own service-account token, and only the
/// permissions `deploy/manifests` grants. A missing permission would show as a 403 here.
async fn spot_interruption_over_tls_with_the_manifests_rbac() {
    let s = Scene::start_with(&[], true).await;
    let (hook, url) = Hook::start().await;
    let agent = s
        .agent(&["--webhook-url", &url, "--out-of-service-taint"])
        .await;
    s.spot(60).await;
    s.drained().await;
    let log = agent.proc.log();
    until("DrainSucceeded event", Duration::from_secs(10), || async {
        s.event_reasons()
            .await
            .contains(&"DrainSucceeded".to_owned())
    })
    .await;
    let reasons = s.event_reasons().await;
    for r in ["SpotInterruption", "Fenced", "DrainStarted", "PodEvicted"] {
        assert!(
            reasons.contains(&r.to_owned()),
            "{r} missing from {reasons:?}; log:\n{log}"
        );
    }
    hook.until_count(2, Duration::from_secs(10)).await;
    let log = agent.proc.log();
    // A 403 shows as "is forbidden" / reason "Forbidden" in the agent's error lines.
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "{log}"
    );
    assert!(cordoned(&s.node().await));
    // The out-of-service taint follows the drain's end (its own write, after the report that
    // the drain is done): wait for it rather than race it (seen under qemu-user).
    until(
        "the out-of-service taint",
        Duration::from_secs(10),
        || async {
            taints(&s.node().await)
                .iter()
                .any(|(k, _, _)| k == "node.kubernetes.io/out-of-service")
        },
    )
    .await;
}

/// Issue 31: an agent with `--reserve-capacity` makes a placeholder for each pod its drain
/// moves (the `api` pods, which ask for CPU; `web`'s ask for nothing and get none), says so
/// on the node, and removes them when the notice is withdrawn while the drain still runs (a
/// budget that allows nothing holds it).
#[tokio::test]
async fn reserved_capacity_goes_when_its_notice_is_withdrawn() {
    let s = Scene::start(&[]).await;
    let class = include_str!("../../deploy/manifests/reserve-capacity.yaml")
        .split("\n---\n")
        .next()
        .unwrap()
        .to_owned();
    s.apply(&format!(
        "{class}\n---\n{}\n---\n{}",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: default}\nspec:\n  replicas: 6\n  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers: [{name: api, image: nginx, resources: {requests: {cpu: 100m}}}]",
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: api, namespace: default}\nspec:\n  maxUnavailable: 0\n  selector: {matchLabels: {app: api}}"
    ))
    .await;
    until(
        "api pods on the spot node",
        Duration::from_secs(20),
        || async { s.pods_on_node("app=api").await > 0 },
    )
    .await;
    let on_node = s.pods_on_node("app=api").await;
    let placeholders = || async {
        Api::<Pod>::all(s.client.clone())
            .list(&ListParams::default().labels(&sih_node::reserve::selector(Some(&s.node))))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count()
    };
    let agent = s.agent(&["--reserve-capacity=true"]).await;
    let id = scheduled_event(&s).await;
    until(
        "a placeholder per api pod",
        Duration::from_secs(15),
        || async { placeholders().await == on_node },
    )
    .await;
    until(
        "the CapacityReserved Event",
        Duration::from_secs(5),
        || async {
            s.event_reasons()
                .await
                .contains(&"CapacityReserved".to_owned())
        },
    )
    .await;
    assert_eq!(
        s.pods_on_node("app=api").await,
        on_node,
        "the budget holds them"
    );

    s.control(&format!("scheduled-event/{id}/cancel"), json!({}))
        .await;
    until(
        "the placeholders are gone",
        Duration::from_secs(10),
        || async { placeholders().await == 0 },
    )
    .await;
    drop(agent);
}
