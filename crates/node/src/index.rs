//! Instance → node without listing every node per message: a watched index of the cluster's
//! nodes (kube-runtime's reflector), matched by `spec.providerID` (`aws:///<az>/<instance>`).

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::task::JoinHandle;

#[derive(Clone)]
pub struct NodeIndex {
    store: reflector::Store<Node>,
}

/// Starts watching nodes; returns once the first list is in.
pub async fn watch_nodes(client: kube::Client) -> (NodeIndex, JoinHandle<()>) {
    use futures_util::StreamExt;
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(Api::<Node>::all(client), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                tracing::warn!(error = %e, "node watch interrupted; resuming");
            }
        }
    });
    let _ = reader.wait_until_ready().await;
    (NodeIndex { store: reader }, task)
}

impl NodeIndex {
    /// The node whose providerID names this instance.
    pub fn by_instance(&self, instance_id: &str) -> Option<String> {
        let suffix = format!("/{instance_id}");
        self.store.state().iter().find_map(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.provider_id.as_deref())
                .filter(|p| p.ends_with(&suffix))
                .and(n.metadata.name.clone())
        })
    }

    /// The node of this instance and whether it is Ready.
    pub fn readiness(&self, instance_id: &str) -> Option<(String, bool)> {
        let name = self.by_instance(instance_id)?;
        let ready = self.store.state().iter().any(|n| {
            n.metadata.name.as_deref() == Some(name.as_str())
                && n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        Some((name, ready))
    }

    pub fn len(&self) -> usize {
        self.store.state().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
