//! What this process may do, asked once at start with SelfSubjectAccessReviews (what
//! `kubectl auth can-i` asks), so that a ClusterRole short of a rule is found before a notice
//! comes, said once with the rule to add, and the feature that needs it turned off: never a
//! silent retry loop on 403 (aws-node-termination-handler's ClusterRole, kept by an operator
//! who swapped only the image, lacks `replicasets get`, `pods delete`, `deployments patch`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::error::NodeError;

/// One RBAC rule: a verb on a resource (with its subresource) of an API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// `""` for the core group.
    pub group: &'static str,
    pub resource: &'static str,
    /// `""` for none (`eviction` of `pods`).
    pub subresource: &'static str,
    pub verb: &'static str,
}

impl Rule {
    pub const fn new(group: &'static str, resource: &'static str, verb: &'static str) -> Self {
        Self {
            group,
            resource,
            subresource: "",
            verb,
        }
    }

    pub const fn sub(
        group: &'static str,
        resource: &'static str,
        subresource: &'static str,
        verb: &'static str,
    ) -> Self {
        Self {
            group,
            resource,
            subresource,
            verb,
        }
    }

    /// As a ClusterRole writes it, to be pasted under `rules:`.
    pub fn to_yaml(&self) -> String {
        let resource = if self.subresource.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        format!(
            "{{apiGroups: [\"{}\"], resources: [{resource}], verbs: [{}]}}",
            self.group, self.verb
        )
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        if self.subresource.is_empty() {
            write!(f, "{} {} ({group})", self.verb, self.resource)
        } else {
            write!(
                f,
                "{} {}/{} ({group})",
                self.verb, self.resource, self.subresource
            )
        }
    }
}

/// Which of `rules` this process may not use, cluster-wide. Asked all at once, each bounded by
/// `timeout`; an answer that cannot be had is an error (the caller keeps every feature on and
/// lets a refusal speak when it happens).
pub async fn refused(
    client: &kube::Client,
    rules: &[Rule],
    timeout: std::time::Duration,
) -> Result<Vec<Rule>, NodeError> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let asks = rules.iter().map(|rule| {
        let api = api.clone();
        async move {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        group: Some(rule.group.to_owned()),
                        resource: Some(rule.resource.to_owned()),
                        subresource: (!rule.subresource.is_empty())
                            .then(|| rule.subresource.to_owned()),
                        verb: Some(rule.verb.to_owned()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let answer = crate::bounded(
                timeout,
                "create selfsubjectaccessreview",
                api.create(&PostParams::default(), &review),
            )
            .await?
            .map_err(NodeError::Api)?;
            Ok::<_, NodeError>((*rule, answer.status.is_some_and(|s| s.allowed)))
        }
    });
    let answers = futures_util::future::try_join_all(asks).await?;
    Ok(answers
        .into_iter()
        .filter(|(_, allowed)| !allowed)
        .map(|(rule, _)| rule)
        .collect())
}

/// What can be turned off when a permission it needs is missing; the rest of the work goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Deleting a pod its budget still protects at a hard deadline (`pods delete`).
    DeadlineDeletion,
    /// Raising a Deployment before its pods leave (`deployments get, patch`, ...).
    Surge,
    /// Watching the evicted workloads become whole again (`replicasets get`).
    Recovery,
    /// Kubernetes Events (`events.k8s.io events create`).
    Events,
    /// Capacity placeholders (`pods create`).
    Reserve,
    /// Finishing an eviction its budget granted but never carried out
    /// (`poddisruptionbudgets list`).
    GrantedEvictions,
}

impl Feature {
    pub const ALL: [Feature; 6] = [
        Self::DeadlineDeletion,
        Self::Surge,
        Self::Recovery,
        Self::Events,
        Self::Reserve,
        Self::GrantedEvictions,
    ];

    /// The metric label and the log's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::DeadlineDeletion => "deadline-deletion",
            Self::Surge => "surge",
            Self::Recovery => "recovery-watch",
            Self::Events => "kubernetes-events",
            Self::Reserve => "reserve-capacity",
            Self::GrantedEvictions => "granted-evictions",
        }
    }
}

/// Which features are off, shared by everything that would use them: set once the start's
/// look at the permissions is answered (which nothing waits for), read at each use.
#[derive(Debug, Clone, Default)]
pub struct Switches(Arc<[AtomicBool; Feature::ALL.len()]>);

impl Switches {
    pub fn is_off(&self, f: Feature) -> bool {
        self.0[f as usize].load(Ordering::Relaxed)
    }

    pub fn turn_off(&self, f: Feature) {
        self.0[f as usize].store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_reads_as_a_cluster_role_writes_it() {
        assert_eq!(
            Rule::new("apps", "replicasets", "get").to_yaml(),
            r#"{apiGroups: ["apps"], resources: [replicasets], verbs: [get]}"#
        );
        assert_eq!(
            Rule::sub("", "pods", "eviction", "create").to_yaml(),
            r#"{apiGroups: [""], resources: [pods/eviction], verbs: [create]}"#
        );
        assert_eq!(
            Rule::sub("", "pods", "eviction", "create").to_string(),
            "create pods/eviction (core)"
        );
    }

    #[test]
    fn switches_are_shared_and_start_on() {
        let a = Switches::default();
        let b = a.clone();
        assert!(Feature::ALL.iter().all(|f| !a.is_off(*f)));
        b.turn_off(Feature::Surge);
        assert!(a.is_off(Feature::Surge));
        assert!(!a.is_off(Feature::Recovery));
    }
}
