//! Instance → node without listing every node per message: a watched index of the cluster's
//! nodes (kube-runtime's reflector), matched by the instance's private DNS name (the node's
//! name or its `kubernetes.io/hostname` label, full or short) or by `spec.providerID`
//! (`aws:///<az>/<instance>`).

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
    /// A fixed index of these nodes (no watch): for tests and tools.
    pub fn from_nodes(nodes: impl IntoIterator<Item = Node>) -> Self {
        let (reader, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        for n in nodes {
            writer.apply_watcher_event(&watcher::Event::InitApply(n));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        Self { store: reader }
    }

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

    /// The node an instance with this private DNS name runs as: named so (EKS's default), or
    /// labelled so in `kubernetes.io/hostname`, or named or labelled by its short form
    /// (`ip-10-0-0-12`, as some distributions register nodes).
    pub fn by_dns_name(&self, dns: &str) -> Option<String> {
        if dns.is_empty() {
            return None;
        }
        if self.store.get(&reflector::ObjectRef::new(dns)).is_some() {
            return Some(dns.to_owned());
        }
        let short = dns.split('.').next().unwrap_or(dns);
        self.store.state().iter().find_map(|n| {
            let name = n.metadata.name.as_deref()?;
            let hostname = n
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/hostname"))
                .map(String::as_str);
            (name == short || hostname == Some(dns) || hostname == Some(short))
                .then(|| name.to_owned())
        })
    }

    /// Whether the node exists and its `Ready` condition is `True`.
    pub fn is_ready(&self, node: &str) -> bool {
        self.store
            .get(&reflector::ObjectRef::new(node))
            .is_some_and(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
    }

    pub fn len(&self) -> usize {
        self.store.state().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn index(nodes: &[serde_json::Value]) -> NodeIndex {
        NodeIndex::from_nodes(
            nodes
                .iter()
                .map(|n| serde_json::from_value(n.clone()).unwrap()),
        )
    }

    fn node(name: &str, hostname: &str, provider: &str, ready: bool) -> serde_json::Value {
        json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": hostname}},
            "spec": {"providerID": provider},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
    }

    #[test]
    fn matches_by_name_hostname_short_name_and_provider_id() {
        let idx = index(&[
            node(
                "ip-10-0-0-1.ec2.internal",
                "ip-10-0-0-1.ec2.internal",
                "aws:///us-east-1a/i-01",
                true,
            ),
            node(
                "worker-b",
                "ip-10-0-0-2.ec2.internal",
                "aws:///us-east-1b/i-02",
                false,
            ),
            node("worker-c", "ip-10-0-0-3", "aws:///us-east-1c/i-03", true),
            node("ip-10-0-0-4", "ip-10-0-0-4", "aws:///us-east-1a/i-04", true),
        ]);
        assert_eq!(idx.len(), 4);
        let by = |d: &str| idx.by_dns_name(d);
        assert_eq!(
            by("ip-10-0-0-1.ec2.internal").as_deref(),
            Some("ip-10-0-0-1.ec2.internal")
        );
        assert_eq!(by("ip-10-0-0-2.ec2.internal").as_deref(), Some("worker-b"));
        assert_eq!(by("ip-10-0-0-3.ec2.internal").as_deref(), Some("worker-c"));
        assert_eq!(
            by("ip-10-0-0-4.ec2.internal").as_deref(),
            Some("ip-10-0-0-4")
        );
        assert_eq!(by("ip-10-0-0-9.ec2.internal"), None);
        assert_eq!(by(""), None);
        assert_eq!(idx.by_instance("i-03").as_deref(), Some("worker-c"));
        assert_eq!(
            idx.by_instance("i-0"),
            None,
            "a prefix of an id is not the id"
        );
        assert!(idx.is_ready("worker-c") && !idx.is_ready("worker-b") && !idx.is_ready("gone"));
    }
}
