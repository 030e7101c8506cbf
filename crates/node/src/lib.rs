//! Everything spot-interrupt-handler writes to Kubernetes about a node: the fence (taint,
//! cordon, load-balancer exclusion, notice record, in one optimistic write), its undo, and the
//! deadline-aware drain with its stream of progress events.
#![forbid(unsafe_code)]

pub mod claim;
pub mod drain;
pub mod error;
pub mod fence;
pub mod index;

pub use claim::{Claim, Claims};
pub use drain::{DrainConfig, DrainReport, PodRef, Progress, drain};
pub use error::{ApiClass, NodeError, classify};
pub use fence::{
    FenceOutcome, FenceRecord, FenceSpec, LB_EXCLUSION_LABEL, LB_EXCLUSION_VALUE,
    NOTICE_ANNOTATION, OUT_OF_SERVICE_TAINT, fence, mark_out_of_service, unfence,
};
pub use index::{NodeIndex, watch_nodes};

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
