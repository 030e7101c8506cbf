//! Everything spot-interrupt-handler writes to Kubernetes about a node: the fence (taint,
//! cordon, load-balancer exclusion, notice record, in one optimistic write), its undo, and the
//! deadline-aware drain with its stream of progress events.
#![forbid(unsafe_code)]

pub mod access;
pub mod claim;
pub mod drain;
pub mod error;
pub mod fence;
pub mod find;
pub mod index;
pub mod lb;
pub mod progress;
pub mod reserve;
pub mod surge;

pub use claim::{Claim, Claims};
pub use drain::{DrainConfig, DrainReport, PodRef, Progress, drain};
pub use error::{ApiClass, NodeError, classify};
pub use fence::{
    FenceOutcome, LB_EXCLUSION_LABEL, LB_EXCLUSION_VALUE, NOTICE_ANNOTATION, NodeFacts, NodeRecord,
    OUT_OF_SERVICE_TAINT, fence, mark_out_of_service, record_of, unfence,
};
pub use find::find_node;
pub use index::{NodeIndex, watch_nodes};

/// The default bound on one Kubernetes call (`--api-timeout`): a real API server answers in
/// milliseconds, and gives up on its own side after a minute.
pub const API_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs one outside call with a time limit: a server that accepts and never answers must not
/// hold anything up past `timeout`.
pub async fn bounded<T>(
    timeout: std::time::Duration,
    what: &'static str,
    call: impl std::future::Future<Output = T>,
) -> Result<T, NodeError> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| NodeError::Timeout {
            what,
            after: timeout,
        })
}

/// A kube client configured for node actions: kube 5 retries 429/503/504 by itself by
/// default, which would hide PodDisruptionBudget refusals from the drain's own deadline-aware
/// retries, so that is switched off.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, NodeError> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| NodeError::Config(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| NodeError::Config(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| NodeError::Config(e.to_string()))?,
    };
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| NodeError::Config(e.to_string()))
}
