//! The fence against a live API server: one optimistic write that loses nothing under
//! concurrent writers, and an undo that leaves other people's changes alone.

use std::collections::BTreeMap;

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sih_core::{Carried, Notice, NoticeKind, PlanRules, Source};
use sih_node::{FenceOutcome, LB_EXCLUSION_LABEL, NOTICE_ANNOTATION, NodeError};

use crate::support::{cluster, node_name};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A notice of `kind` as `source` reports it.
fn notice(kind: NoticeKind, source: Source) -> Carried {
    let now = Timestamp::now();
    let n = node_name(0);
    Carried::new(match kind {
        NoticeKind::RebalanceRecommendation => Notice::rebalance("i-1", &n, now, source),
        _ => Notice::spot_interruption("i-1", &n, now, now, source),
    })
}

/// `source` writes exactly `ours` onto the node.
async fn fence(
    nodes: &Api<Node>,
    n: &str,
    source: Source,
    ours: &[Carried],
) -> Result<FenceOutcome, NodeError> {
    sih_node::fence(nodes, n, source, ours, &PlanRules::default(), TIMEOUT).await
}

async fn unfence(nodes: &Api<Node>, n: &str) -> Result<FenceOutcome, NodeError> {
    sih_node::unfence(nodes, n, None, &PlanRules::default(), TIMEOUT).await
}

#[tokio::test]
async fn fence_is_idempotent_and_unfence_restores_a_node_cordoned_before_us() {
    let (_c, client) = cluster(1, 110, "").await;
    let nodes: Api<Node> = Api::all(client);
    let n = node_name(0);
    nodes
        .patch(
            &n,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    // The node lifecycle controller (the simulator's too) taints a cordoned node a moment
    // later: let it, so that its write does not land between ours.
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while !nodes
        .get(&n)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .iter()
        .any(|t| t.key == "node.kubernetes.io/unschedulable")
    {
        assert!(
            tokio::time::Instant::now() < end,
            "never tainted unschedulable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let spot = [notice(NoticeKind::SpotInterruption, Source::Agent)];
    let first = fence(&nodes, &n, Source::Agent, &spot).await.unwrap();
    assert!(first.changed);
    let rv = nodes.get(&n).await.unwrap().metadata.resource_version;
    let again = fence(&nodes, &n, Source::Agent, &spot).await.unwrap();
    assert!(!again.changed);
    assert_eq!(
        nodes.get(&n).await.unwrap().metadata.resource_version,
        rv,
        "no write at all the second time"
    );

    let fenced = nodes.get(&n).await.unwrap();
    assert!(
        fenced.metadata.annotations.as_ref().unwrap()[NOTICE_ANNOTATION]
            .contains("\"wasCordoned\":true")
    );
    unfence(&nodes, &n).await.unwrap();
    let after = nodes.get(&n).await.unwrap();
    assert_eq!(
        after.spec.as_ref().unwrap().unschedulable,
        Some(true),
        "still cordoned: it was before us"
    );
    // None of ours; the controller's unschedulable taint stays with the cordon.
    let left: Vec<String> = after
        .spec
        .unwrap()
        .taints
        .unwrap_or_default()
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert_eq!(left, ["node.kubernetes.io/unschedulable"], "{left:?}");
    assert!(
        !after
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key(LB_EXCLUSION_LABEL)
    );
}

#[tokio::test]
async fn concurrent_writers_lose_nothing_during_fences() {
    let (_c, client) = cluster(1, 110, "").await;
    let nodes: Api<Node> = Api::all(client);
    let n = node_name(0);
    // Twenty other writers add labels and a taint while two kinds of notice fence the node.
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (nodes, n) = (nodes.clone(), n.clone());
        writers.spawn(async move {
            let patch = json!({"metadata": {"labels": {format!("writer-{i}"): "yes"}}});
            nodes
                .patch(&n, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap();
        });
    }
    // Two writers (an agent and the queue controller), each with its own notice.
    let (rebalance, spot) = (
        [notice(NoticeKind::RebalanceRecommendation, Source::Agent)],
        [notice(NoticeKind::SpotInterruption, Source::Queue)],
    );
    let (a, b) = tokio::join!(
        fence(&nodes, &n, Source::Agent, &rebalance),
        fence(&nodes, &n, Source::Queue, &spot)
    );
    a.unwrap();
    b.unwrap();
    while writers.join_next().await.is_some() {}
    let node = nodes.get(&n).await.unwrap();
    let labels: BTreeMap<String, String> = node.metadata.labels.unwrap();
    assert_eq!(
        (0..20)
            .filter(|i| labels.contains_key(&format!("writer-{i}")))
            .count(),
        20,
        "every writer's label is there"
    );
    let keys: Vec<String> = node
        .spec
        .as_ref()
        .unwrap()
        .taints
        .clone()
        .unwrap()
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert!(keys.contains(&NoticeKind::SpotInterruption.taint_key()));
    assert!(keys.contains(&NoticeKind::RebalanceRecommendation.taint_key()));
    assert_eq!(node.spec.unwrap().unschedulable, Some(true));
    assert_eq!(labels[LB_EXCLUSION_LABEL], "spot-interrupt-handler");
}
