//! Finding the node that is an instance when the agent is not told its name: by the names the
//! cloud gives it, then by `spec.providerID`, page by page.

use std::time::Duration;

use sih_node::find_node;

use crate::support::{cluster, node_name};

const GKE_NODE: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: gke-pool-1-abcd, labels: {cloud.google.com/gke-spot: "true"}}
spec: {providerID: "gce://rehearsal-project/us-central1-a/gke-pool-1-abcd"}
"#;

#[tokio::test]
async fn a_node_is_found_by_its_name_or_else_by_its_provider_id() {
    let (_c, client) = cluster(2, 10, GKE_NODE).await;
    let t = Duration::from_secs(5);
    let first = node_name(0);
    // By name: the first name that is a node.
    assert_eq!(
        find_node(&client, &["nope".into(), first.clone()], None, t)
            .await
            .unwrap(),
        Some(first)
    );
    // By providerID, when no name matches (compared without regard to case, as AKS writes it).
    assert_eq!(
        find_node(
            &client,
            &["other-name".into()],
            Some("GCE://rehearsal-project/us-central1-a/gke-pool-1-abcd"),
            t
        )
        .await
        .unwrap()
        .as_deref(),
        Some("gke-pool-1-abcd")
    );
    assert_eq!(
        find_node(&client, &["x".into()], Some("gce://p/z/none"), t)
            .await
            .unwrap(),
        None
    );
}
