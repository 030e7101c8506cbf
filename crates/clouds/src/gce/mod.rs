//! Google Compute Engine's metadata server: `http://metadata.google.internal/computeMetadata/v1/`
//! with `Metadata-Flavor: Google` on every request.
//!
//! Values are watched, not polled: `?wait_for_change=true&last_etag=E&timeout_sec=N` answers
//! as soon as the value differs from the one `E` names (at once if it already does), or with
//! the same value after `N` seconds. A watch dropped half-way loses nothing: the next one,
//! with the same ETag, answers at once if the value changed meanwhile.

pub mod items;
pub mod notices;

use std::time::Duration;

use crate::CloudError;
use crate::http::Http;
pub use items::{GceIdentity, Maintenance};

pub const PREEMPTED: &str = "instance/preempted";
pub const MAINTENANCE_EVENT: &str = "instance/maintenance-event";
const ROOT: &str = "/computeMetadata/v1/";

/// Where the metadata server is: `GCE_METADATA_HOST` (host and port, as Google's client
/// libraries read it), else `metadata.google.internal`.
pub fn default_endpoint() -> String {
    match std::env::var("GCE_METADATA_HOST") {
        Ok(host) if !host.trim().is_empty() => format!("http://{}", host.trim()),
        _ => "http://metadata.google.internal".into(),
    }
}

#[derive(Debug, Clone)]
pub struct GceConfig {
    pub endpoint: String,
    /// Per plain read, and added to a watch's own timeout.
    pub request_timeout: Duration,
    /// How long one watch waits for a change (`timeout_sec`).
    pub watch_timeout: Duration,
}

/// One read: the value and the ETag that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub body: String,
    pub etag: Option<String>,
}

pub struct GceClient {
    http: Http,
    config: GceConfig,
}

impl GceClient {
    pub fn new(config: GceConfig) -> Result<Self, CloudError> {
        Ok(Self {
            http: Http::new("GCE", &config.endpoint, ("Metadata-Flavor", "Google"))?,
            config,
        })
    }

    pub fn config(&self) -> &GceConfig {
        &self.config
    }

    /// The value of `item` now.
    pub async fn read(&self, item: &str) -> Result<Value, CloudError> {
        let a = self
            .http
            .get(&format!("{ROOT}{item}"), self.config.request_timeout)
            .await?;
        Ok(Value {
            body: a.body,
            etag: a.etag,
        })
    }

    /// The value of `item` once it differs from the one `last_etag` names, or after the
    /// watch timeout.
    pub async fn watch(&self, item: &str, last_etag: &str) -> Result<Value, CloudError> {
        let secs = self.config.watch_timeout.as_secs().max(1);
        let path = format!(
            "{ROOT}{item}?wait_for_change=true&last_etag={}&timeout_sec={secs}",
            // ETags are hex on GCE; anything else is not sent as is.
            last_etag
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
        );
        let a = self
            .http
            .get(
                &path,
                self.config.watch_timeout + self.config.request_timeout,
            )
            .await?;
        Ok(Value {
            body: a.body,
            etag: a.etag,
        })
    }

    /// Who this instance is: every item at once.
    pub async fn identity(&self) -> Result<GceIdentity, CloudError> {
        let read = |item: &'static str| async move { self.read(item).await.map(|v| v.body) };
        let optional =
            |item: &'static str| async move { self.read(item).await.ok().map(|v| v.body) };
        let (id, name, zone, project, machine, preemptible, hostname, ip) = tokio::join!(
            read("instance/id"),
            read("instance/name"),
            read("instance/zone"),
            read("project/project-id"),
            optional("instance/machine-type"),
            optional("instance/scheduling/preemptible"),
            optional("instance/hostname"),
            optional("instance/network-interfaces/0/ip"),
        );
        let id = id?.trim().to_owned();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(CloudError::Malformed {
                service: "GCE",
                path: "instance/id".into(),
                reason: format!(
                    "expected a number, got {:?}",
                    id.chars().take(40).collect::<String>()
                ),
            });
        }
        Ok(GceIdentity {
            id,
            name: name?.trim().to_owned(),
            zone: items::last_segment(&zone?).to_owned(),
            project_id: project?.trim().to_owned(),
            machine_type: machine
                .as_deref()
                .map(items::last_segment)
                .unwrap_or_default()
                .to_owned(),
            preemptible: preemptible.as_deref().map(str::trim) == Some("TRUE"),
            hostname: hostname.unwrap_or_default().trim().to_owned(),
            ip: ip.unwrap_or_default().trim().to_owned(),
        })
    }
}
