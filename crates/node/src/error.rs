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
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Conflict { .. } | Self::Timeout { .. } => true,
            Self::Api(e) => classify(e) == ApiClass::Transient,
            Self::Config(_) | Self::NodeNotFound(_) => false,
        }
    }
}
