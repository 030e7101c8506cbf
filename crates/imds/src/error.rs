//! Every way a metadata read can fail, classified once. Callers ask `is_retryable` and never
//! look inside a transport error themselves.

use std::time::Duration;

use crate::items::MalformedItem;

#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("invalid IMDS client configuration: {0}")]
    Config(String),

    #[error("IMDS request for {path} timed out after {timeout:?}")]
    Timeout { path: String, timeout: Duration },

    #[error("IMDS unreachable for {path}: {source}")]
    Transport {
        path: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("IMDS answered HTTP {status} for {path}")]
    Status { path: String, status: u16 },

    #[error("IMDS refused the token for {path} (401) even after fetching a fresh one")]
    Unauthorized { path: String },

    #[error("no IMDSv2 token could be had and IMDSv1 is not allowed (--imds-v2-only): {reason}")]
    TokenUnavailable { reason: String },

    #[error("IMDS has no {path} (404), which every EC2 instance has")]
    Missing { path: String },

    #[error("IMDS body for {path} is larger than the {limit}-byte cap")]
    BodyTooLarge { path: String, limit: usize },

    #[error("IMDS item {path} is malformed: {source}")]
    Malformed {
        path: String,
        #[source]
        source: MalformedItem,
    },
}

impl ImdsError {
    /// Whether trying the same request again may succeed. Throttling and restarts of the
    /// metadata service show up as timeouts, resets and 5xx; a 4xx or a bad body will not
    /// change on a retry a few milliseconds later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            Self::Config(_)
            | Self::Unauthorized { .. }
            | Self::TokenUnavailable { .. }
            | Self::Missing { .. }
            | Self::BodyTooLarge { .. }
            | Self::Malformed { .. } => false,
        }
    }

    /// A short, bounded name for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Timeout { .. } => "timeout",
            Self::Transport { .. } => "transport",
            Self::Status { .. } => "status",
            Self::Unauthorized { .. } => "unauthorized",
            Self::TokenUnavailable { .. } => "token_unavailable",
            Self::Missing { .. } => "missing",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::Malformed { .. } => "malformed",
        }
    }
}
