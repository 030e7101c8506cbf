//! Azure's instance metadata service: the VM's identity (`/metadata/instance/compute`) and
//! Scheduled Events (`/metadata/scheduledevents`), with `Metadata: true` on every request.
//!
//! The first Scheduled Events call of a VM enables the service and may take up to two
//! minutes; [`AzureClient::warm_up`] makes it once, apart, while the polls go on with their
//! own short timeout (they fail until the service answers, and are said to fail).

pub mod items;
pub mod notices;

use std::time::Duration;

use serde::Deserialize;

use crate::CloudError;
use crate::http::Http;
pub use items::{Document, Event, EventStatus, EventType};

pub const EVENTS_PATH: &str = "/metadata/scheduledevents?api-version=2020-07-01";
pub const COMPUTE_PATH: &str = "/metadata/instance/compute?api-version=2021-02-01";

#[derive(Debug, Clone)]
pub struct AzureConfig {
    pub endpoint: String,
    pub request_timeout: Duration,
    /// How long the first Scheduled Events call may take (the service starts on it).
    pub first_call_timeout: Duration,
}

/// Who this VM is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AzureIdentity {
    /// What scheduled events list in `Resources`.
    pub name: String,
    pub vm_id: String,
    pub location: String,
    pub zone: String,
    pub vm_size: String,
    pub subscription_id: String,
    pub resource_group_name: String,
    pub vm_scale_set_name: String,
    /// `Spot` or `Regular`.
    pub priority: String,
    pub os_profile: OsProfile,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OsProfile {
    /// The VM's host name: the node's name on AKS (`aks-pool-123-vmss000000`, where `name`
    /// is `aks-pool-123-vmss_0`).
    pub computer_name: String,
}

impl AzureIdentity {
    /// The node's `spec.providerID` on AKS: a scale set's instance (`name` ends `_N`) or a VM.
    pub fn provider_id(&self) -> String {
        let base = format!(
            "azure:///subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute",
            self.subscription_id, self.resource_group_name
        );
        match self.name.rsplit_once('_') {
            Some((_, n)) if !self.vm_scale_set_name.is_empty() => format!(
                "{base}/virtualMachineScaleSets/{}/virtualMachines/{n}",
                self.vm_scale_set_name
            ),
            _ => format!("{base}/virtualMachines/{}", self.name),
        }
    }
}

pub struct AzureClient {
    http: Http,
    config: AzureConfig,
}

impl AzureClient {
    pub fn new(config: AzureConfig) -> Result<Self, CloudError> {
        Ok(Self {
            http: Http::new("Azure", &config.endpoint, ("Metadata", "true"))?,
            config,
        })
    }

    pub async fn identity(&self) -> Result<AzureIdentity, CloudError> {
        let a = self
            .http
            .get(COMPUTE_PATH, self.config.request_timeout)
            .await?;
        let id: AzureIdentity =
            serde_json::from_str(&a.body).map_err(|e| CloudError::Malformed {
                service: "Azure",
                path: COMPUTE_PATH.into(),
                reason: e.to_string(),
            })?;
        if id.name.is_empty() || id.vm_id.is_empty() {
            return Err(CloudError::Malformed {
                service: "Azure",
                path: COMPUTE_PATH.into(),
                reason: "no name or vmId".into(),
            });
        }
        Ok(id)
    }

    /// The first Scheduled Events call, with its long timeout.
    pub async fn warm_up(&self) -> Result<(), CloudError> {
        self.http
            .get(EVENTS_PATH, self.config.first_call_timeout)
            .await
            .map(|_| ())
    }

    pub async fn events(&self) -> Result<Document, CloudError> {
        let a = self
            .http
            .get(EVENTS_PATH, self.config.request_timeout)
            .await?;
        items::parse_document(&a.body).map_err(|reason| CloudError::Malformed {
            service: "Azure",
            path: EVENTS_PATH.into(),
            reason,
        })
    }

    /// Lets Azure start these events now.
    pub async fn acknowledge(&self, event_ids: &[String]) -> Result<(), CloudError> {
        self.http
            .post_json(
                EVENTS_PATH,
                items::start_requests(event_ids),
                self.config.request_timeout,
            )
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_provider_id_as_aks_writes_them() {
        let id: AzureIdentity = serde_json::from_str(
            r#"{"name":"aks-spot-123-vmss_4","vmId":"v","vmScaleSetName":"aks-spot-123-vmss",
                "subscriptionId":"s","resourceGroupName":"mc_rg","priority":"Spot",
                "osProfile":{"computerName":"aks-spot-123-vmss000004"},"unknown":1}"#,
        )
        .unwrap();
        assert_eq!(id.os_profile.computer_name, "aks-spot-123-vmss000004");
        assert_eq!(
            id.provider_id(),
            "azure:///subscriptions/s/resourceGroups/mc_rg/providers/Microsoft.Compute/virtualMachineScaleSets/aks-spot-123-vmss/virtualMachines/4"
        );
        let vm = AzureIdentity {
            vm_scale_set_name: String::new(),
            name: "vm1".into(),
            ..id
        };
        assert!(vm.provider_id().ends_with("/virtualMachines/vm1"));
    }
}
