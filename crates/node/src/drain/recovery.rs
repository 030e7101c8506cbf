//! After a drain: whether the workloads it evicted from are whole again.

use std::time::Duration;

use kube::api::Api;
use tokio::time::Instant;

use super::GONE_POLL;

/// Waits until every ReplicaSet in `owners` has as many Ready replicas as it wants (the
/// evicted pods' replacements run elsewhere), polling, for at most `within`. `true` once they
/// have; `false` if they had not by then (or could not be read).
pub async fn recovered(
    client: &kube::Client,
    owners: &[(String, String)],
    timeout: Duration,
    within: Duration,
) -> bool {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    let end = Instant::now() + within;
    let mut waiting: Vec<&(String, String)> = owners.iter().collect();
    while Instant::now() < end {
        let mut still = Vec::new();
        for owner in waiting {
            let api: Api<ReplicaSet> = Api::namespaced(client.clone(), &owner.0);
            let read = crate::bounded(timeout, "get replicaset", api.get(&owner.1)).await;
            // A refusal does not pass with time: said once, and the watch ends (it used to
            // ask again every second for ten minutes, silently).
            if let Ok(Err(e)) = &read
                && crate::classify(e) == crate::ApiClass::Forbidden
            {
                tracing::warn!(
                    replicaset = %format!("{}/{}", owner.0, owner.1),
                    error = %e,
                    add = %crate::access::Rule::new("apps", "replicasets", "get").to_yaml(),
                    "cannot read the evicted pods' ReplicaSets: the recovery watch stops"
                );
                return false;
            }
            let ready = read.ok().and_then(Result::ok).is_some_and(|rs| {
                let want = rs.spec.and_then(|s| s.replicas).unwrap_or(1);
                rs.status.and_then(|s| s.ready_replicas).unwrap_or(0) >= want
            });
            if !ready {
                still.push(owner);
            }
        }
        if still.is_empty() {
            return true;
        }
        waiting = still;
        tokio::time::sleep(GONE_POLL).await;
    }
    false
}
