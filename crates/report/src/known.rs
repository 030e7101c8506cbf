//! What messages and metrics say beyond the notice, learned as it becomes known: the
//! cluster's name, and each instance's facts (the agent's own from the metadata service; in
//! queue mode each instance EC2 described). Shared by the reporters that use it (webhooks,
//! metrics) and filled in by the sources.

use std::collections::HashMap;
use std::sync::Arc;

/// What the instance's source knows of it (the metadata service; EC2 in queue mode).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceFacts {
    /// `aws`, `gce` or `azure`.
    pub cloud: String,
    /// The instance's name where the cloud names instances (GCE, Azure: the node's name).
    pub instance_name: String,
    /// GCE's project id, Azure's subscription id.
    #[serde(rename = "ProjectID")]
    pub project_id: String,
    /// Azure's resource group.
    pub resource_group: String,
    pub instance_type: String,
    pub availability_zone: String,
    pub region: String,
    pub account_id: String,
    pub instance_life_cycle: String,
    pub local_hostname: String,
    #[serde(rename = "LocalIP")]
    pub local_ip: String,
    pub public_hostname: String,
    #[serde(rename = "PublicIP")]
    pub public_ip: String,
    pub auto_scaling_group_name: String,
}

/// The cluster's name and the instances' facts known so far.
#[derive(Debug, Default)]
pub struct Known {
    pub cluster_name: String,
    instances: HashMap<String, InstanceFacts>,
}

/// Instances remembered at most (queue mode describes every instance it is told of).
const KNOWN_INSTANCES: usize = 4096;

impl Known {
    pub fn remember(&mut self, instance_id: &str, facts: InstanceFacts) {
        if self.instances.len() >= KNOWN_INSTANCES && !self.instances.contains_key(instance_id) {
            self.instances.clear();
        }
        self.instances.insert(instance_id.to_owned(), facts);
    }

    pub fn instance(&self, instance_id: &str) -> Option<&InstanceFacts> {
        self.instances.get(instance_id)
    }
}

/// Settable after start, read for every message.
pub type SharedFacts = Arc<std::sync::RwLock<Known>>;
