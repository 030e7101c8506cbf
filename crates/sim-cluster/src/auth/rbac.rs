//! RBAC as the real authorizer decides it (rbac.authorization.k8s.io/v1): a request is allowed
//! when some rule of a role bound to the user (a ClusterRole through a ClusterRoleBinding, or
//! a Role or ClusterRole through a RoleBinding in the request's namespace) matches its verb,
//! API group, resource (with subresource) and name. Pure: it reads the objects it is given.
//!
//! Not modelled: aggregated ClusterRoles, escalation checks on writing roles, impersonation.

use serde_json::Value;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// What is asked, as the authorizer sees a resource request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

impl Attributes {
    /// `pods/eviction` or `pods`.
    pub fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The real API server's denial message.
    pub fn forbidden_message(&self, user: &str) -> String {
        let resource = qualified(&self.resource, &self.group);
        let object = if self.name.is_empty() {
            resource
        } else {
            format!("{resource} \"{}\"", self.name)
        };
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace \"{}\"", self.namespace)
        };
        format!(
            "{object} is forbidden: User \"{user}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            self.verb,
            self.resource_path(),
            self.group
        )
    }
}

fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

fn strings<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a str> {
    v.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn has(list: &Value, key: &str, want: &str) -> bool {
    strings(list, key).any(|s| s == "*" || s == want)
}

/// Whether one PolicyRule allows the request.
pub fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    if !has(rule, "verbs", &a.verb) || !has(rule, "apiGroups", &a.group) {
        return false;
    }
    let path = a.resource_path();
    let resource_ok = strings(rule, "resources").any(|r| {
        r == "*"
            || r == path
            || (a.subresource.is_empty() && r == a.resource)
            || r == format!("{}/*", a.resource)
            || (!a.subresource.is_empty() && r == format!("*/{}", a.subresource))
    });
    if !resource_ok {
        return false;
    }
    let mut names = strings(rule, "resourceNames").peekable();
    names.peek().is_none() || (!a.name.is_empty() && names.any(|n| n == a.name))
}

/// Whether a binding's subjects include the user. `binding_ns` is the RoleBinding's namespace
/// (a ServiceAccount subject without a namespace means that one).
pub fn subject_matches(binding: &Value, binding_ns: &str, user: &UserInfo) -> bool {
    binding
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|s| {
            let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
            match s.get("kind").and_then(Value::as_str) {
                Some("User") => user.name == name,
                Some("Group") => user.groups.iter().any(|g| g == name),
                Some("ServiceAccount") => {
                    let ns = s
                        .get("namespace")
                        .and_then(Value::as_str)
                        .filter(|n| !n.is_empty())
                        .unwrap_or(binding_ns);
                    user.name == format!("system:serviceaccount:{ns}:{name}")
                }
                _ => false,
            }
        })
}

/// The role a binding points at: `(kind, name)`.
pub fn role_ref(binding: &Value) -> Option<(&str, &str)> {
    let r = binding.get("roleRef")?;
    Some((r.get("kind")?.as_str()?, r.get("name")?.as_str()?))
}

/// The objects the decision reads, borrowed from the store (nothing is copied per request).
pub struct Policy<'a> {
    pub cluster_roles: &'a dyn Fn(&str) -> Option<&'a Value>,
    /// `(namespace, name)`.
    pub roles: &'a dyn Fn(&str, &str) -> Option<&'a Value>,
    pub cluster_role_bindings: Vec<&'a Value>,
    /// RoleBindings of the request's namespace.
    pub role_bindings: Vec<&'a Value>,
}

fn any_rule(role: Option<&Value>, a: &Attributes) -> bool {
    role.and_then(|r| r.get("rules"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|rule| rule_allows(rule, a))
}

/// The decision. A binding whose role does not exist grants nothing (and is not an error).
pub fn allowed(user: &UserInfo, a: &Attributes, p: &Policy<'_>) -> bool {
    if user.is_admin() {
        return true;
    }
    for b in p.cluster_role_bindings.iter().copied() {
        if subject_matches(b, "", user)
            && let Some(("ClusterRole", name)) = role_ref(b)
            && any_rule((p.cluster_roles)(name), a)
        {
            return true;
        }
    }
    if a.namespace.is_empty() {
        return false;
    }
    for b in p.role_bindings.iter().copied() {
        if !subject_matches(b, &a.namespace, user) {
            continue;
        }
        let role = match role_ref(b) {
            Some(("ClusterRole", name)) => (p.cluster_roles)(name),
            Some(("Role", name)) => (p.roles)(&a.namespace, name),
            _ => None,
        };
        if any_rule(role, a) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn sa(ns: &str, name: &str) -> UserInfo {
        UserInfo {
            name: format!("system:serviceaccount:{ns}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_subresources_and_names() {
        let rule = json!({"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]});
        assert!(rule_allows(
            &rule,
            &attrs("create", "", "pods", "eviction", "default", "p")
        ));
        assert!(!rule_allows(
            &rule,
            &attrs("create", "", "pods", "", "default", "p")
        ));
        assert!(!rule_allows(
            &rule,
            &attrs("delete", "", "pods", "eviction", "default", "p")
        ));
        let pods = json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]});
        assert!(
            !rule_allows(&pods, &attrs("get", "", "pods", "eviction", "default", "p")),
            "a subresource needs its own rule"
        );
        assert!(!rule_allows(
            &pods,
            &attrs("list", "apps", "pods", "", "", "")
        ));
        let star = json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]});
        assert!(rule_allows(
            &star,
            &attrs("delete", "apps", "deployments", "scale", "x", "y")
        ));
        let named = json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"], "resourceNames": ["n1"]});
        assert!(rule_allows(
            &named,
            &attrs("patch", "", "nodes", "", "", "n1")
        ));
        assert!(!rule_allows(
            &named,
            &attrs("patch", "", "nodes", "", "", "n2")
        ));
        assert!(!rule_allows(
            &named,
            &attrs("patch", "", "nodes", "", "", "")
        ));
        let any_sub = json!({"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["update"]});
        assert!(rule_allows(
            &any_sub,
            &attrs("update", "apps", "deployments", "scale", "d", "x")
        ));
        assert!(!rule_allows(
            &json!({}),
            &attrs("get", "", "pods", "", "", "")
        ));
    }

    #[test]
    fn bindings_grant_through_cluster_and_namespaced_roles() {
        let cr = json!({"rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]});
        let role =
            json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}]});
        let crb = json!({"roleRef": {"kind": "ClusterRole", "name": "sih"},
            "subjects": [{"kind": "ServiceAccount", "name": "sih", "namespace": "kube-system"}]});
        let rb = json!({"roleRef": {"kind": "Role", "name": "pods"},
            "subjects": [{"kind": "ServiceAccount", "name": "sih"}]});
        let missing = json!({"roleRef": {"kind": "ClusterRole", "name": "nope"},
            "subjects": [{"kind": "Group", "name": "system:authenticated"}]});
        let cluster_roles = |n: &str| (n == "sih").then_some(&cr);
        let roles = |ns: &str, n: &str| (ns == "kube-system" && n == "pods").then_some(&role);
        let policy = Policy {
            cluster_roles: &cluster_roles,
            roles: &roles,
            cluster_role_bindings: vec![&crb, &missing],
            role_bindings: vec![&rb],
        };
        let me = sa("kube-system", "sih");
        assert!(allowed(
            &me,
            &attrs("get", "", "nodes", "", "", "n1"),
            &policy
        ));
        assert!(!allowed(
            &me,
            &attrs("delete", "", "nodes", "", "", "n1"),
            &policy
        ));
        assert!(allowed(
            &me,
            &attrs("delete", "", "pods", "", "kube-system", "p"),
            &policy
        ));
        assert!(!allowed(
            &sa("default", "sih"),
            &attrs("get", "", "nodes", "", "", "n1"),
            &policy
        ));
        let admin = UserInfo {
            name: "admin".into(),
            groups: vec!["system:masters".into()],
        };
        assert!(allowed(
            &admin,
            &attrs("delete", "", "nodes", "", "", "n1"),
            &policy
        ));
    }

    #[test]
    fn denial_messages_read_like_the_real_server() {
        let user = "system:serviceaccount:kube-system:sih";
        assert_eq!(
            attrs("create", "", "pods", "eviction", "default", "web-1").forbidden_message(user),
            "pods \"web-1\" is forbidden: User \"system:serviceaccount:kube-system:sih\" cannot create resource \"pods/eviction\" in API group \"\" in the namespace \"default\""
        );
        assert_eq!(
            attrs("list", "", "nodes", "", "", "").forbidden_message(user),
            "nodes is forbidden: User \"system:serviceaccount:kube-system:sih\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        );
        assert_eq!(
            attrs("delete", "apps", "deployments", "", "web", "api").forbidden_message(user),
            "deployments.apps \"api\" is forbidden: User \"system:serviceaccount:kube-system:sih\" cannot delete resource \"deployments\" in API group \"apps\" in the namespace \"web\""
        );
    }
}
