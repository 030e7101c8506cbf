//! Which node an instance is, when the agent is not told (`NODE_NAME` unset): the node named
//! as the cloud names the instance (GCE's instance name, Azure's computer name, EC2's private
//! DNS name), else the one whose `spec.providerID` is the instance's.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

use crate::{NodeError, bounded};

/// The name of the node that is this instance, if there is one. Every call bounded.
pub async fn find_node(
    client: &kube::Client,
    names: &[String],
    provider_id: Option<&str>,
    timeout: std::time::Duration,
) -> Result<Option<String>, NodeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    for name in names.iter().filter(|n| !n.is_empty()) {
        if let Some(n) = bounded(timeout, "get node", nodes.get_opt(name))
            .await?
            .map_err(NodeError::Api)?
        {
            return Ok(n.metadata.name);
        }
    }
    let Some(wanted) = provider_id.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    // No field selector serves spec.providerID: pages of names and provider ids only.
    let mut params = ListParams::default().limit(500);
    loop {
        let page = bounded(timeout, "list nodes", nodes.list(&params))
            .await?
            .map_err(NodeError::Api)?;
        if let Some(n) = page.items.iter().find(|n| {
            // AKS writes the resource group in lower case: compared as such.
            n.spec
                .as_ref()
                .and_then(|s| s.provider_id.as_deref())
                .is_some_and(|p| p.eq_ignore_ascii_case(wanted))
        }) {
            return Ok(n.metadata.name.clone());
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(next) => params = params.continue_token(&next),
            None => return Ok(None),
        }
    }
}
