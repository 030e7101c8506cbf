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
