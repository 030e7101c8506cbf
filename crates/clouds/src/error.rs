//! Every way a read from another cloud's metadata service can fail, classified once.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("invalid {service} metadata endpoint {endpoint:?}: {reason}")]
    Config {
        service: &'static str,
        endpoint: String,
        reason: String,
    },

    #[error("{service} metadata request for {path} timed out after {timeout:?}")]
    Timeout {
        service: &'static str,
        path: String,
        timeout: Duration,
    },

    #[error("{service} metadata unreachable for {path}: {reason}")]
    Transport {
        service: &'static str,
        path: String,
        reason: String,
    },

    #[error("{service} metadata answered HTTP {status} for {path}{}", if .body.is_empty() { String::new() } else { format!(": {}", .body) })]
    Status {
        service: &'static str,
        path: String,
        status: u16,
        /// The start of the answer's body (the services say why in it), one line.
        body: String,
    },

    #[error("{service} metadata body for {path} is larger than the {limit}-byte cap")]
    BodyTooLarge {
        service: &'static str,
        path: String,
        limit: usize,
    },

    #[error("{service} metadata item {path} is malformed: {reason}")]
    Malformed {
        service: &'static str,
        path: String,
        reason: String,
    },
}

impl CloudError {
    /// Whether the same request may succeed a moment later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::Config { .. } | Self::BodyTooLarge { .. } | Self::Malformed { .. } => false,
        }
    }

    /// A short, bounded name for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config { .. } => "config",
            Self::Timeout { .. } => "timeout",
            Self::Transport { .. } => "transport",
            Self::Status { .. } => "status",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::Malformed { .. } => "malformed",
        }
    }
}
