//! The HTTP side of the metadata client: tokens, timeouts, retries, size caps.
//!
//! Deliberately not here: deciding what a notice means or what to do about it. This module
//! returns typed items and typed errors; the agent's planner decides.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::ImdsError;
use crate::items::{self, MalformedItem};
use crate::token::{TokenDecision, TokenState};
use crate::{
    InstanceIdentity, InterruptionSnapshot, RebalanceRecommendation, ScheduledEvents,
    SpotInstanceAction, TargetLifecycleState,
};

pub const TOKEN_PATH: &str = "/latest/api/token";
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
pub const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";

/// EC2's bounds on a token's TTL.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(21_600);

pub mod paths {
    pub const SPOT_INSTANCE_ACTION: &str = "/latest/meta-data/spot/instance-action";
    pub const SPOT_TERMINATION_TIME: &str = "/latest/meta-data/spot/termination-time";
    pub const REBALANCE: &str = "/latest/meta-data/events/recommendations/rebalance";
    pub const SCHEDULED_EVENTS: &str = "/latest/meta-data/events/maintenance/scheduled";
    pub const SCHEDULED_EVENTS_HISTORY: &str = "/latest/meta-data/events/maintenance/history";
    pub const TARGET_LIFECYCLE_STATE: &str = "/latest/meta-data/autoscaling/target-lifecycle-state";
    pub const INSTANCE_ID: &str = "/latest/meta-data/instance-id";
    pub const INSTANCE_TYPE: &str = "/latest/meta-data/instance-type";
    pub const AVAILABILITY_ZONE: &str = "/latest/meta-data/placement/availability-zone";
    pub const REGION: &str = "/latest/meta-data/placement/region";
    pub const INSTANCE_LIFE_CYCLE: &str = "/latest/meta-data/instance-life-cycle";
    pub const LOCAL_HOSTNAME: &str = "/latest/meta-data/local-hostname";
    pub const LOCAL_IPV4: &str = "/latest/meta-data/local-ipv4";
    /// Absent (404) on an instance without a public address.
    pub const PUBLIC_IPV4: &str = "/latest/meta-data/public-ipv4";
    pub const PUBLIC_HOSTNAME: &str = "/latest/meta-data/public-hostname";
    /// Present only when the instance's tags are allowed into the metadata.
    pub const ASG_NAME_TAG: &str = "/latest/meta-data/tags/instance/aws:autoscaling:groupName";
    pub const IDENTITY_DOCUMENT: &str = "/latest/dynamic/instance-identity/document";
}

#[derive(Debug, Clone)]
pub struct ImdsConfig {
    /// Base URL, e.g. `http://169.254.169.254`.
    pub endpoint: String,
    /// Per request, body included. The metadata service answers in microseconds when healthy;
    /// a slow answer is throttling, and waiting longer only delays the next poll.
    pub request_timeout: Duration,
    /// Attempts per read, the first included (NTH's `METADATA_TRIES`).
    pub attempts: u32,
    /// Refuse IMDSv1: without a token, reads fail instead of going tokenless.
    pub v2_only: bool,
    pub token_ttl: Duration,
    /// Bodies larger than this are refused; the largest real item is a few KiB.
    pub max_body_bytes: usize,
    /// After no token could be had, how long to read without one before trying again.
    pub v1_retry_after: Duration,
    /// First retry delay; doubles per attempt up to `MAX_BACKOFF`.
    pub backoff_base: Duration,
}

impl Default for ImdsConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://169.254.169.254".into(),
            request_timeout: Duration::from_secs(1),
            attempts: 3,
            v2_only: false,
            token_ttl: MAX_TOKEN_TTL,
            max_body_bytes: 64 * 1024,
            v1_retry_after: Duration::from_secs(60),
            backoff_base: Duration::from_millis(50),
        }
    }
}

/// Retry delays stay short: the whole notice is two minutes and we poll every second, so a
/// read that has not worked after a few hundred milliseconds is better left to the next poll.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// An answer's body (`None`: 404) parsed, a malformed one named by its path.
fn parsed<T>(
    path: &str,
    body: Option<&str>,
    parse: fn(&str) -> Result<T, MalformedItem>,
) -> Result<Option<T>, ImdsError> {
    body.map(parse)
        .transpose()
        .map_err(|source| ImdsError::Malformed {
            path: path.into(),
            source,
        })
}

pub struct ImdsClient {
    http: reqwest::Client,
    config: ImdsConfig,
    endpoint: String,
    /// Held across a token fetch so that concurrent reads wait for one fetch, not five.
    token: Mutex<TokenState>,
    /// The identity items read so far (404 included): an instance keeps them for its life, so
    /// a retry of [`Self::identity`] asks only for those that failed. Without this, a service
    /// failing half its answers made a restarted agent wait seconds for eight reads to succeed
    /// together while a spot notice stood unread (soak seed 61317).
    fixed: std::sync::Mutex<HashMap<&'static str, Option<String>>>,
}

impl ImdsClient {
    pub fn new(config: ImdsConfig) -> Result<Self, ImdsError> {
        let endpoint = config.endpoint.trim_end_matches('/').to_owned();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(ImdsError::Config(format!(
                "endpoint {endpoint:?} must start with http:// or https://"
            )));
        }
        if config.token_ttl < Duration::from_secs(1) || config.token_ttl > MAX_TOKEN_TTL {
            return Err(ImdsError::Config(format!(
                "token TTL {:?} must be between 1 s and 6 h",
                config.token_ttl
            )));
        }
        if config.attempts == 0 {
            return Err(ImdsError::Config("attempts must be at least 1".into()));
        }
        let http = reqwest::Client::builder()
            // A proxy from the environment must never see metadata requests (or tokens).
            .no_proxy()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ImdsError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            config,
            endpoint,
            token: Mutex::new(TokenState::default()),
            fixed: std::sync::Mutex::default(),
        })
    }

    pub fn config(&self) -> &ImdsConfig {
        &self.config
    }

    /// Reads every interruption item at once, each request on its own pooled keep-alive
    /// connection. One item's failure does not hide the others.
    pub async fn poll(&self) -> InterruptionSnapshot {
        let (spot_instance_action, spot_termination_time, rebalance, scheduled_events, target) = tokio::join!(
            self.spot_instance_action(),
            self.spot_termination_time(),
            self.rebalance_recommendation(),
            self.scheduled_events(),
            self.target_lifecycle_state(),
        );
        InterruptionSnapshot {
            spot_instance_action,
            spot_termination_time,
            rebalance,
            scheduled_events,
            target_lifecycle_state: target,
        }
    }

    pub async fn spot_instance_action(&self) -> Result<Option<SpotInstanceAction>, ImdsError> {
        self.item(paths::SPOT_INSTANCE_ACTION, items::parse_instance_action)
            .await
    }

    pub async fn spot_termination_time(&self) -> Result<Option<jiff::Timestamp>, ImdsError> {
        Ok(self
            .get(paths::SPOT_TERMINATION_TIME)
            .await?
            .and_then(|body| items::parse_termination_time(&body)))
    }

    pub async fn rebalance_recommendation(
        &self,
    ) -> Result<Option<RebalanceRecommendation>, ImdsError> {
        self.item(paths::REBALANCE, items::parse_rebalance).await
    }

    /// Pending maintenance; an absent item is the same as `[]`.
    pub async fn scheduled_events(&self) -> Result<ScheduledEvents, ImdsError> {
        Ok(self
            .item(paths::SCHEDULED_EVENTS, items::parse_scheduled_events)
            .await?
            .unwrap_or_default())
    }

    pub async fn scheduled_events_history(&self) -> Result<ScheduledEvents, ImdsError> {
        Ok(self
            .item(
                paths::SCHEDULED_EVENTS_HISTORY,
                items::parse_scheduled_events,
            )
            .await?
            .unwrap_or_default())
    }

    /// `None` when the instance is not in an Auto Scaling group.
    pub async fn target_lifecycle_state(&self) -> Result<Option<TargetLifecycleState>, ImdsError> {
        self.item(
            paths::TARGET_LIFECYCLE_STATE,
            items::parse_target_lifecycle_state,
        )
        .await
    }

    /// Who this instance is. The region comes from `placement/region`, else from the identity
    /// document (older instances lack the former).
    pub async fn identity(&self) -> Result<InstanceIdentity, ImdsError> {
        let (id, ty, az, region, life_cycle, hostname, ipv4, doc) = tokio::join!(
            self.required(paths::INSTANCE_ID),
            self.required(paths::INSTANCE_TYPE),
            self.required(paths::AVAILABILITY_ZONE),
            self.fixed(paths::REGION),
            self.fixed(paths::INSTANCE_LIFE_CYCLE),
            self.fixed(paths::LOCAL_HOSTNAME),
            self.fixed(paths::LOCAL_IPV4),
            self.fixed_item(paths::IDENTITY_DOCUMENT, items::parse_identity_document),
        );
        // Only for messages: an error reading one of these costs the message a field, not
        // the agent its start.
        let (public_ipv4, public_hostname, asg) = tokio::join!(
            self.get(paths::PUBLIC_IPV4),
            self.get(paths::PUBLIC_HOSTNAME),
            self.get(paths::ASG_NAME_TAG),
        );
        let document = doc?.ok_or_else(|| ImdsError::Missing {
            path: paths::IDENTITY_DOCUMENT.into(),
        })?;
        let region = match (region?, &document.region) {
            (Some(r), _) => r,
            (None, Some(r)) => r.clone(),
            (None, None) => {
                return Err(ImdsError::Missing {
                    path: paths::REGION.into(),
                });
            }
        };
        Ok(InstanceIdentity {
            instance_id: id?,
            instance_type: ty?,
            availability_zone: az?,
            region,
            life_cycle: life_cycle?,
            local_hostname: hostname?,
            local_ipv4: ipv4?,
            public_ipv4: public_ipv4.ok().flatten(),
            public_hostname: public_hostname.ok().flatten(),
            auto_scaling_group: asg.ok().flatten(),
            document,
        })
    }

    async fn required(&self, path: &'static str) -> Result<String, ImdsError> {
        self.fixed(path)
            .await?
            .ok_or_else(|| ImdsError::Missing { path: path.into() })
    }

    async fn fixed(&self, path: &'static str) -> Result<Option<String>, ImdsError> {
        self.fixed_item(path, |body| Ok(body.to_owned())).await
    }

    /// An item the instance keeps for its life: read until one read works (and parses), then
    /// remembered. A malformed answer is not remembered: the next try asks again.
    async fn fixed_item<T>(
        &self,
        path: &'static str,
        parse: fn(&str) -> Result<T, MalformedItem>,
    ) -> Result<Option<T>, ImdsError> {
        let known = self
            .fixed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned();
        let (body, fresh) = match known {
            Some(body) => (body, false),
            None => (self.get(path).await?, true),
        };
        let parsed = parsed(path, body.as_deref(), parse)?;
        if fresh {
            self.fixed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path, body);
        }
        Ok(parsed)
    }

    async fn item<T>(
        &self,
        path: &'static str,
        parse: fn(&str) -> Result<T, MalformedItem>,
    ) -> Result<Option<T>, ImdsError> {
        parsed(path, self.get(path).await?.as_deref(), parse)
    }

    /// GET a path: `Ok(None)` on 404, the body on 200, a classified error otherwise.
    pub async fn get(&self, path: &str) -> Result<Option<String>, ImdsError> {
        self.with_retries(|| self.get_once(path)).await
    }

    /// One logical GET: a 401 gets one more try with a fresh token (the token may have expired
    /// on the server's clock, or the service restarted), which is not a retry of the transport.
    async fn get_once(&self, path: &str) -> Result<Option<String>, ImdsError> {
        let token = self.token().await?;
        let resp = self.send(Method::GET, path, token.as_ref(), None).await?;
        let resp = if resp.status() == StatusCode::UNAUTHORIZED {
            debug!(path, "IMDS answered 401; fetching a fresh token");
            self.token.lock().await.invalidate(token.as_ref());
            let fresh = self.token().await?;
            let again = self.send(Method::GET, path, fresh.as_ref(), None).await?;
            if again.status() == StatusCode::UNAUTHORIZED {
                return Err(ImdsError::Unauthorized { path: path.into() });
            }
            again
        } else {
            resp
        };
        match resp.status() {
            StatusCode::OK => self.read_body(resp, path).await.map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(ImdsError::Status {
                path: path.into(),
                status: other.as_u16(),
            }),
        }
    }

    /// The token to send, fetching one when needed. `None` means read as IMDSv1.
    async fn token(&self) -> Result<Option<HeaderValue>, ImdsError> {
        let mut state = self.token.lock().await;
        match state.decide(Instant::now()) {
            TokenDecision::Use(value) => return Ok(Some(value)),
            TokenDecision::GoWithout => return Ok(None),
            TokenDecision::Fetch => {}
        }
        match self.with_retries(|| self.fetch_token()).await {
            Ok((value, ttl)) => {
                *state = TokenState::fetched(value.clone(), ttl, Instant::now());
                Ok(Some(value))
            }
            Err(e) if self.config.v2_only => Err(ImdsError::TokenUnavailable {
                reason: e.to_string(),
            }),
            Err(e) => {
                warn!(error = %e, retry_in = ?self.config.v1_retry_after,
                    "no IMDSv2 token; reading metadata with IMDSv1");
                *state = TokenState::V1Until {
                    retry_at: Instant::now() + self.config.v1_retry_after,
                };
                Ok(None)
            }
        }
    }

    async fn fetch_token(&self) -> Result<(HeaderValue, Duration), ImdsError> {
        let requested = self.config.token_ttl.as_secs();
        let resp = self
            .send(Method::PUT, TOKEN_PATH, None, Some(requested))
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(ImdsError::Status {
                path: TOKEN_PATH.into(),
                status: resp.status().as_u16(),
            });
        }
        // The service echoes the TTL it granted; trust that over what we asked for.
        let granted = resp
            .headers()
            .get(TOKEN_TTL_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&s| s >= 1)
            .unwrap_or(requested);
        let body = self.read_body(resp, TOKEN_PATH).await?;
        let value = HeaderValue::from_str(body.trim())
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ImdsError::Malformed {
                path: TOKEN_PATH.into(),
                source: MalformedItem {
                    what: "token",
                    reason: "empty or not a valid header value".into(),
                },
            })?;
        Ok((value, Duration::from_secs(granted)))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&HeaderValue>,
        ttl_secs: Option<u64>,
    ) -> Result<reqwest::Response, ImdsError> {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.endpoint, path));
        if let Some(token) = token {
            req = req.header(TOKEN_HEADER, token.clone());
        }
        if let Some(ttl) = ttl_secs {
            req = req.header(TOKEN_TTL_HEADER, ttl);
        }
        req.send().await.map_err(|e| self.transport_error(path, e))
    }

    async fn read_body(
        &self,
        mut resp: reqwest::Response,
        path: &str,
    ) -> Result<String, ImdsError> {
        let limit = self.config.max_body_bytes;
        let too_large = || ImdsError::BodyTooLarge {
            path: path.into(),
            limit,
        };
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport_error(path, e))?
        {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| ImdsError::Malformed {
            path: path.into(),
            source: MalformedItem {
                what: "body",
                reason: "not UTF-8".into(),
            },
        })
    }

    fn transport_error(&self, path: &str, e: reqwest::Error) -> ImdsError {
        if e.is_timeout() {
            ImdsError::Timeout {
                path: path.into(),
                timeout: self.config.request_timeout,
            }
        } else {
            ImdsError::Transport {
                path: path.into(),
                source: e,
            }
        }
    }

    async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T, ImdsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ImdsError>>,
    {
        let mut tried = 1;
        loop {
            match attempt().await {
                Err(e) if e.is_retryable() && tried < self.config.attempts => {
                    let delay = backoff(self.config.backoff_base, tried);
                    debug!(error = %e, attempt = tried, ?delay, "IMDS read failed; retrying");
                    tokio::time::sleep(delay).await;
                    tried += 1;
                }
                result => return result,
            }
        }
    }
}

/// Exponential backoff without jitter: each node has its own metadata service, so there is no
/// herd of clients to spread out.
fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1 << (attempt - 1).min(16))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(50);
        assert_eq!(backoff(base, 1), Duration::from_millis(50));
        assert_eq!(backoff(base, 2), Duration::from_millis(100));
        assert_eq!(backoff(base, 3), Duration::from_millis(200));
        assert_eq!(backoff(base, 5), MAX_BACKOFF);
        assert_eq!(backoff(base, 200), MAX_BACKOFF);
    }

    #[test]
    fn config_is_validated() {
        let bad_scheme = ImdsClient::new(ImdsConfig {
            endpoint: "169.254.169.254".into(),
            ..Default::default()
        });
        assert!(matches!(bad_scheme, Err(ImdsError::Config(_))));
        let bad_ttl = ImdsClient::new(ImdsConfig {
            token_ttl: Duration::from_secs(21_601),
            ..Default::default()
        });
        assert!(matches!(bad_ttl, Err(ImdsError::Config(_))));
        let ok = ImdsClient::new(ImdsConfig {
            endpoint: "http://127.0.0.1:1338/".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.endpoint, "http://127.0.0.1:1338");
    }
}
