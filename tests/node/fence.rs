//! The fence against a live API server: one optimistic write that loses nothing under
//! concurrent writers, and an undo that leaves other people's changes alone.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sih_core::{Notice, NoticeKind};
use sih_node::{FenceSpec, LB_EXCLUSION_LABEL, NOTICE_ANNOTATION, fence, unfence};

use crate::support::{cluster, node_name};

fn spec(kind: NoticeKind, id: &str, cordon: bool) -> FenceSpec {
    FenceSpec {
        notice: Notice {
            kind,
            id: id.into(),
            instance_id: None,
            node: node_name(0),
            detected: Timestamp::now(),
            deadline: None,
        },
        effect: kind.default_taint_effect().into(),
        cordon,
    }
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

    let first = fence(&nodes, &n, &spec(NoticeKind::SpotInterruption, "i-1", true))
        .await
        .unwrap();
    assert!(first.changed);
    let rv = nodes.get(&n).await.unwrap().metadata.resource_version;
    let again = fence(&nodes, &n, &spec(NoticeKind::SpotInterruption, "i-1", true))
        .await
        .unwrap();
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
    unfence(&nodes, &n, None).await.unwrap();
    let after = nodes.get(&n).await.unwrap();
    assert_eq!(
        after.spec.as_ref().unwrap().unschedulable,
        Some(true),
        "still cordoned: it was before us"
    );
    assert!(after.spec.unwrap().taints.unwrap_or_default().is_empty());
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
    let (rebalance, spot) = (
        spec(NoticeKind::RebalanceRecommendation, "r-1", false),
        spec(NoticeKind::SpotInterruption, "i-1", true),
    );
    let (a, b) = tokio::join!(fence(&nodes, &n, &rebalance), fence(&nodes, &n, &spot));
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
