//! `kube::Error` classified in exactly one place; callers decide from the class.

/// What an API error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiClass {
    NotFound,
    /// Stale resourceVersion or failed precondition.
    Conflict,
    /// 429: for an eviction, a PodDisruptionBudget says not now.
    TooManyRequests,
    Forbidden,
    /// 5xx, timeouts, connection errors: may work if tried again.
    Transient,
    Other,
}

pub fn classify(e: &kube::Error) -> ApiClass {
    match e {
        kube::Error::Api(s) => match s.code {
            404 => ApiClass::NotFound,
            409 => ApiClass::Conflict,
            429 => ApiClass::TooManyRequests,
            401 | 403 => ApiClass::Forbidden,
            500..=599 => ApiClass::Transient,
            _ => ApiClass::Other,
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::HttpError(_) => {
            ApiClass::Transient
        }
        _ => ApiClass::Other,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot build a Kubernetes client: {0}")]
    Config(String),
    #[error("node {0:?} not found")]
    NodeNotFound(String),
    #[error("node {node:?} kept changing under us: gave up after {attempts} conflicting writes")]
    Conflict { node: String, attempts: u32 },
    #[error("Kubernetes API: {0}")]
    Api(#[source] kube::Error),
    /// The API server accepted the request and did not answer in time (a hung server, a
    /// broken proxy): the call is abandoned, and may be tried again.
    #[error("Kubernetes API: {what} did not answer within {after:?}")]
    Timeout {
        what: &'static str,
        after: std::time::Duration,
    },
}

impl NodeError {
    /// Whether the same call may work later. A 429 is retryable here: outside an eviction it
    /// is the API server's flow control asking to come back (`Retry-After`), never a refusal;
    /// the eviction path reads a 429 as a budget's "not now" before it asks this.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Conflict { .. } | Self::Timeout { .. } => true,
            Self::Api(e) => matches!(classify(e), ApiClass::Transient | ApiClass::TooManyRequests),
            Self::Config(_) | Self::NodeNotFound(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> NodeError {
        NodeError::Api(kube::Error::Api(Box::new(kube::core::Status {
            code,
            ..Default::default()
        })))
    }

    #[test]
    fn throttling_and_server_errors_are_retried_refusals_are_not() {
        // Seed 51502 of the soak: a 429 on listing the node's pods ended the drain for good.
        assert!(api(429).is_retryable(), "flow control: come back later");
        assert!(api(503).is_retryable());
        assert!(api(500).is_retryable());
        assert!(
            !api(403).is_retryable(),
            "no retry cures a missing permission"
        );
        assert!(!api(404).is_retryable());
        assert!(!api(400).is_retryable());
    }
}
