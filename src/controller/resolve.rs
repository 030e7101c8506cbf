//! Instance → node: EC2's private DNS name matched against the watched node index (name or
//! hostname label), or the providerID with `--use-provider-id`; the managed-tag filter.
//! EC2 is asked only when the answer needs it (not with `--use-provider-id` alone).

use sih_node::NodeIndex;
use sih_queue::{Directory, Ec2Error, Instance};
use sih_report::SharedFacts;
use sih_report::webhook::InstanceFacts;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Node(String),
    /// EC2 does not know it, or no node of this cluster is it.
    NotInCluster,
    /// `--managed-tag` is set and the instance does not carry it.
    Unmanaged,
}

pub struct Resolver {
    pub index: NodeIndex,
    /// `None` when nothing needs EC2.
    pub directory: Option<Directory>,
    pub use_provider_id: bool,
    pub managed_tag: Option<String>,
    /// Where what EC2 says of an instance goes, for the messages about it.
    pub facts: Option<SharedFacts>,
    /// The region the instances are in (the queue's).
    pub region: String,
}

/// What webhook messages say of an instance EC2 described.
fn facts_of(i: &Instance, region: &str) -> InstanceFacts {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    InstanceFacts {
        cloud: "aws".into(),
        instance_type: text(&i.instance_type),
        availability_zone: text(&i.availability_zone),
        region: region.to_owned(),
        local_hostname: text(&i.private_dns_name),
        local_ip: text(&i.private_ip),
        public_hostname: text(&i.public_dns_name),
        public_ip: text(&i.public_ip),
        auto_scaling_group_name: i
            .tag("aws:autoscaling:groupName")
            .unwrap_or_default()
            .to_owned(),
        ..InstanceFacts::default()
    }
}

impl Resolver {
    /// Whether these settings need `ec2:DescribeInstances`.
    pub fn needs_ec2(use_provider_id: bool, managed_tag: Option<&str>) -> bool {
        !use_provider_id || managed_tag.is_some()
    }

    pub async fn resolve(&self, instance_id: &str) -> Result<Resolved, Ec2Error> {
        let instance = match &self.directory {
            Some(d) => d.lookup(instance_id).await?,
            None => None,
        };
        if let (Some(facts), Some(i)) = (&self.facts, &instance) {
            facts
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remember(instance_id, facts_of(i, &self.region));
        }
        if let Some(tag) = &self.managed_tag
            && !instance.as_ref().is_some_and(|i| i.has_tag(tag))
        {
            return Ok(Resolved::Unmanaged);
        }
        let by_name = if self.use_provider_id {
            None
        } else {
            instance
                .as_ref()
                .and_then(|i| i.private_dns_name.as_deref())
                .and_then(|dns| self.index.by_dns_name(dns))
        };
        if let Some(node) = by_name {
            tracing::debug!(instance_id, node = %node, by = "private-dns-name", "instance resolved");
            return Ok(Resolved::Node(node));
        }
        // The providerID names the instance whatever the node is called: a cheap second try
        // (the index is in memory) for clusters that name nodes their own way.
        Ok(match self.index.by_instance(instance_id) {
            Some(node) => {
                tracing::debug!(instance_id, node = %node, by = "provider-id", "instance resolved");
                Resolved::Node(node)
            }
            None => Resolved::NotInCluster,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sih_queue::{Describe, Instance};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// EC2 as the tests need it: i-a is ip-10-0-0-1 (tagged), i-b is ip-10-0-0-2 (untagged),
    /// i-c is a real instance of another cluster.
    #[derive(Clone, Default)]
    struct Fake {
        calls: Arc<Mutex<usize>>,
    }

    impl Describe for Fake {
        async fn describe(&self, ids: Vec<String>) -> Result<Vec<Instance>, Ec2Error> {
            *self.calls.lock().unwrap() += 1;
            let known = [
                ("i-a", "ip-10-0-0-1.ec2.internal", true),
                ("i-b", "ip-10-0-0-2.ec2.internal", false),
                ("i-c", "ip-10-9-9-9.ec2.internal", true),
            ];
            Ok(known
                .iter()
                .filter(|(id, _, _)| ids.iter().any(|i| i == id))
                .map(|(id, dns, tagged)| Instance {
                    id: (*id).into(),
                    private_dns_name: Some((*dns).into()),
                    tags: if *tagged {
                        vec![("team/spot".into(), String::new())]
                    } else {
                        vec![]
                    },
                    ..Default::default()
                })
                .collect())
        }
    }

    fn index() -> NodeIndex {
        let nodes = [
            json!({"metadata": {"name": "ip-10-0-0-1.ec2.internal"}, "spec": {"providerID": "aws:///us-east-1a/i-a"}}),
            // Named its own way, found by its providerID.
            json!({"metadata": {"name": "worker-2"}, "spec": {"providerID": "aws:///us-east-1a/i-b"}}),
        ];
        NodeIndex::from_nodes(nodes.map(|n| serde_json::from_value(n).unwrap()))
    }

    fn resolver(fake: &Fake, use_provider_id: bool, tag: Option<&str>) -> Resolver {
        Resolver {
            index: index(),
            directory: Resolver::needs_ec2(use_provider_id, tag)
                .then(|| Directory::spawn(fake.clone(), Duration::from_secs(60))),
            use_provider_id,
            managed_tag: tag.map(str::to_owned),
            facts: Some(sih_report::SharedFacts::default()),
            region: "us-east-1".into(),
        }
    }

    #[tokio::test]
    async fn by_dns_name_then_provider_id() {
        let fake = Fake::default();
        let r = resolver(&fake, false, None);
        let node = |n: &str| Ok(Resolved::Node(n.into()));
        assert_eq!(r.resolve("i-a").await, node("ip-10-0-0-1.ec2.internal"));
        assert_eq!(r.resolve("i-b").await, node("worker-2"));
        assert_eq!(r.resolve("i-c").await, Ok(Resolved::NotInCluster));
        assert_eq!(r.resolve("i-unknown").await, Ok(Resolved::NotInCluster));
        // What EC2 said of each instance it knows is kept for the messages about it.
        let known = r.facts.as_ref().unwrap().read().unwrap();
        let a = known.instance("i-a").unwrap();
        assert_eq!(a.local_hostname, "ip-10-0-0-1.ec2.internal");
        assert_eq!(a.region, "us-east-1");
        assert!(known.instance("i-unknown").is_none());
    }

    #[tokio::test]
    async fn provider_id_alone_never_asks_ec2() {
        let fake = Fake::default();
        let r = resolver(&fake, true, None);
        assert_eq!(
            r.resolve("i-b").await,
            Ok(Resolved::Node("worker-2".into()))
        );
        assert_eq!(r.resolve("i-c").await, Ok(Resolved::NotInCluster));
        assert_eq!(*fake.calls.lock().unwrap(), 0);
    }

    #[tokio::test]
    async fn the_managed_tag_filters_before_matching() {
        let fake = Fake::default();
        let r = resolver(&fake, true, Some("team/spot"));
        assert_eq!(
            r.resolve("i-a").await,
            Ok(Resolved::Node("ip-10-0-0-1.ec2.internal".into()))
        );
        assert_eq!(r.resolve("i-b").await, Ok(Resolved::Unmanaged));
        assert_eq!(r.resolve("i-unknown").await, Ok(Resolved::Unmanaged));
        assert_eq!(r.resolve("i-c").await, Ok(Resolved::NotInCluster));
    }
}
