//! The resource types the simulator serves, as discovery describes them.

/// One served resource (e.g. `pods` in core/v1).
#[derive(Debug)]
pub struct Resource {
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub subresources: &'static [&'static str],
    /// Writes to the main resource keep the stored status (it has a `status` subresource).
    pub has_status: bool,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `pods` or `deployments.apps`, as error messages name resources.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub fn verbs() -> &'static [&'static str] {
    &VERBS
}

macro_rules! res {
    ($group:expr, $version:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr, $short:expr, $sub:expr, $status:expr) => {
        Resource {
            group: $group,
            version: $version,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: $short,
            subresources: $sub,
            has_status: $status,
        }
    };
}

/// Index constants into [`RESOURCES`], for code that names a resource directly.
pub const NAMESPACES: usize = 0;
pub const NODES: usize = 1;
pub const PODS: usize = 2;
pub const EVENTS: usize = 3;
pub const DEPLOYMENTS: usize = 4;
pub const REPLICASETS: usize = 5;
pub const DAEMONSETS: usize = 6;
pub const PDBS: usize = 7;
pub const EVENTS_V1: usize = 8;
pub const LEASES: usize = 9;
pub const SERVICE_ACCOUNTS: usize = 10;
pub const SELF_SUBJECT_ACCESS_REVIEWS: usize = 15;
pub const SERVICES: usize = 16;
pub const CONFIG_MAPS: usize = 17;
pub const ENDPOINT_SLICES: usize = 18;
pub const HPAS: usize = 19;
pub const PRIORITY_CLASSES: usize = 22;

#[rustfmt::skip]
pub static RESOURCES: [Resource; 23] = [
    //    group                  version plural                  singular               kind                   namespaced short       subresources                          has status
    res!("",                    "v1", "namespaces",           "namespace",           "Namespace",           false, &["ns"],     &["status"],                           true),
    res!("",                    "v1", "nodes",                "node",                "Node",                false, &["no"],     &["status"],                           true),
    res!("",                    "v1", "pods",                 "pod",                 "Pod",                 true,  &["po"],     &["status", "eviction", "binding"],    true),
    res!("",                    "v1", "events",               "event",               "Event",               true,  &["ev"],     &[],                                   false),
    res!("apps",                "v1", "deployments",          "deployment",          "Deployment",          true,  &["deploy"], &["status", "scale"],                  true),
    res!("apps",                "v1", "replicasets",          "replicaset",          "ReplicaSet",          true,  &["rs"],     &["status", "scale"],                  true),
    res!("apps",                "v1", "daemonsets",           "daemonset",           "DaemonSet",           true,  &["ds"],     &["status"],                           true),
    res!("policy",              "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", true,  &["pdb"],    &["status"],                           true),
    res!("events.k8s.io",       "v1", "events",               "event",               "Event",               true,  &["ev"],     &[],                                   false),
    res!("coordination.k8s.io", "v1", "leases",               "lease",               "Lease",               true,  &[],         &[],                                   false),
    res!("",                    "v1", "serviceaccounts",      "serviceaccount",      "ServiceAccount",      true,  &["sa"],     &["token"],                            false),
    res!("rbac.authorization.k8s.io", "v1", "clusterroles",   "clusterrole",         "ClusterRole",         false, &[],         &[],                                   false),
    res!("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", false, &[],     &[],                                   false),
    res!("rbac.authorization.k8s.io", "v1", "roles",          "role",                "Role",                true,  &[],         &[],                                   false),
    res!("rbac.authorization.k8s.io", "v1", "rolebindings",   "rolebinding",         "RoleBinding",         true,  &[],         &[],                                   false),
    // Answered, never stored: "may I?" for the caller (`kubectl auth can-i`).
    res!("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "selfsubjectaccessreview", "SelfSubjectAccessReview", false, &[], &[],               false),
    // A Service's selector is kept in an EndpointSlice (no proxying, no cluster IPs).
    res!("",                    "v1", "services",             "service",             "Service",             true,  &["svc"],    &["status"],                           true),
    res!("",                    "v1", "configmaps",           "configmap",           "ConfigMap",           true,  &["cm"],     &[],                                   false),
    res!("discovery.k8s.io",    "v1", "endpointslices",       "endpointslice",       "EndpointSlice",       true,  &[],         &[],                                   false),
    // Stored, not acted on: a drain reads them to leave the Deployments they scale alone.
    res!("autoscaling",         "v1", "horizontalpodautoscalers", "horizontalpodautoscaler", "HorizontalPodAutoscaler", true, &["hpa"], &["status"],              true),
    // Stored, never enforced (the manifests ship one; the real control plane's tests prove it
    // confines each agent to its node: docs/reliability.md).
    res!("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", "validatingadmissionpolicy", "ValidatingAdmissionPolicy", false, &[], &["status"], true),
    res!("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings", "validatingadmissionpolicybinding", "ValidatingAdmissionPolicyBinding", false, &[], &[], false),
    // A pod's priority and preemption policy come from its class at create (the scheduler
    // preempts by them).
    res!("scheduling.k8s.io",   "v1", "priorityclasses",      "priorityclass",       "PriorityClass",       false, &["pc"],     &[],                                   false),
];

/// The API groups besides core, in discovery order.
pub const GROUPS: [&str; 10] = [
    "apps",
    "autoscaling",
    "policy",
    "discovery.k8s.io",
    "events.k8s.io",
    "coordination.k8s.io",
    "rbac.authorization.k8s.io",
    "authorization.k8s.io",
    "admissionregistration.k8s.io",
    "scheduling.k8s.io",
];

/// Finds the resource served at `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by its object's `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.kind == kind && r.api_version() == api_version)
}

/// The store a resource's objects live in: core/v1 and events.k8s.io/v1 Events are one set of
/// objects seen through two APIs, as on a real server.
pub fn storage_of(index: usize) -> usize {
    if index == EVENTS_V1 { EVENTS } else { index }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_point_at_their_resources() {
        assert_eq!(RESOURCES[NAMESPACES].plural, "namespaces");
        assert_eq!(RESOURCES[NODES].plural, "nodes");
        assert_eq!(RESOURCES[PODS].plural, "pods");
        assert_eq!(RESOURCES[EVENTS].plural, "events");
        assert_eq!(RESOURCES[DEPLOYMENTS].plural, "deployments");
        assert_eq!(RESOURCES[REPLICASETS].plural, "replicasets");
        assert_eq!(RESOURCES[DAEMONSETS].plural, "daemonsets");
        assert_eq!(RESOURCES[PDBS].plural, "poddisruptionbudgets");
        assert_eq!(RESOURCES[EVENTS_V1].group, "events.k8s.io");
        assert_eq!(RESOURCES[LEASES].plural, "leases");
        assert_eq!(RESOURCES[SERVICE_ACCOUNTS].plural, "serviceaccounts");
        assert_eq!(RESOURCES[SERVICES].plural, "services");
        assert_eq!(RESOURCES[CONFIG_MAPS].plural, "configmaps");
        assert_eq!(
            RESOURCES[SELF_SUBJECT_ACCESS_REVIEWS].plural,
            "selfsubjectaccessreviews"
        );
        assert_eq!(find("apps", "v1", "daemonsets"), Some(DAEMONSETS));
        assert_eq!(by_kind("policy/v1", "PodDisruptionBudget"), Some(PDBS));
        assert_eq!(storage_of(EVENTS_V1), EVENTS);
        assert_eq!(RESOURCES[PRIORITY_CLASSES].plural, "priorityclasses");
    }
}
