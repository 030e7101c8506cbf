//! Request paths to routes: discovery documents, OpenAPI, or a resource (collection, object,
//! subresource) in a namespace or across the cluster.

use crate::resources::{self, RESOURCES};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    GroupVersion { group: String, version: String },
    OpenApiV2,
    OpenApiV3Index,
    OpenApiV3 { group: String, version: String },
    Resource(Target),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index into [`RESOURCES`] of the API the request came through.
    pub resource: usize,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

pub fn parse(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["version"] => Some(Route::Version),
        ["healthz"] | ["readyz"] | ["livez"] => Some(Route::Health),
        ["api"] => Some(Route::CoreVersions),
        ["api", "v1"] => Some(Route::GroupVersion {
            group: String::new(),
            version: "v1".into(),
        }),
        ["api", "v1", rest @ ..] => resource("", "v1", rest),
        ["apis"] => Some(Route::Groups),
        ["apis", g] if resources::GROUPS.contains(g) => Some(Route::Group((*g).to_owned())),
        ["apis", g, v] if resources::GROUPS.contains(g) && *v == "v1" => {
            Some(Route::GroupVersion {
                group: (*g).to_owned(),
                version: (*v).to_owned(),
            })
        }
        ["apis", g, v, rest @ ..] => resource(g, v, rest),
        ["openapi", "v2"] => Some(Route::OpenApiV2),
        ["openapi", "v3"] => Some(Route::OpenApiV3Index),
        ["openapi", "v3", "api", "v1"] => Some(Route::OpenApiV3 {
            group: String::new(),
            version: "v1".into(),
        }),
        ["openapi", "v3", "apis", g, v] => Some(Route::OpenApiV3 {
            group: (*g).to_owned(),
            version: (*v).to_owned(),
        }),
        _ => None,
    }
}

fn resource(group: &str, version: &str, rest: &[&str]) -> Option<Route> {
    let namespaced_path = rest.len() >= 3
        && rest[0] == "namespaces"
        && resources::find(group, version, rest[2]).is_some_and(|i| RESOURCES[i].namespaced);
    let (namespace, rest) = if namespaced_path {
        (Some(rest[1].to_owned()), &rest[2..])
    } else {
        (None, rest)
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(*n), None),
        [p, n, s] => (*p, Some(*n), Some(*s)),
        _ => return None,
    };
    let index = resources::find(group, version, plural)?;
    let res = &RESOURCES[index];
    if let Some(s) = sub
        && !res.subresources.contains(&s)
    {
        return None;
    }
    // A namespaced object is only addressed inside its namespace.
    if res.namespaced && namespace.is_none() && name.is_some() {
        return None;
    }
    Some(Route::Resource(Target {
        resource: index,
        namespace,
        name: name.map(str::to_owned),
        subresource: sub.map(str::to_owned),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{DEPLOYMENTS, NAMESPACES, NODES, PODS};

    fn target(path: &str) -> Target {
        match parse(path) {
            Some(Route::Resource(t)) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn resource_paths() {
        let t = target("/api/v1/namespaces/default/pods/web-1/eviction");
        assert_eq!(
            (
                t.resource,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            (PODS, Some("default"), Some("web-1"), Some("eviction"))
        );
        let t = target("/api/v1/pods");
        assert_eq!((t.resource, t.namespace, t.name), (PODS, None, None));
        let t = target("/api/v1/namespaces/kube-system");
        assert_eq!(
            (t.resource, t.name.as_deref()),
            (NAMESPACES, Some("kube-system"))
        );
        let t = target("/api/v1/nodes/n1/status");
        assert_eq!(
            (t.resource, t.subresource.as_deref()),
            (NODES, Some("status"))
        );
        let t = target("/apis/apps/v1/namespaces/web/deployments/api/scale");
        assert_eq!(
            (t.resource, t.subresource.as_deref()),
            (DEPLOYMENTS, Some("scale"))
        );
        assert_eq!(
            parse("/api/v1/pods/web-1"),
            None,
            "namespaced objects need their namespace"
        );
        assert_eq!(parse("/api/v1/namespaces/default/pods/p/exec"), None);
        assert_eq!(parse("/apis/apps/v2/deployments"), None);
        assert_eq!(parse("/api/v1/widgets"), None);
        assert_eq!(
            parse("/apis/apps/v1"),
            Some(Route::GroupVersion {
                group: "apps".into(),
                version: "v1".into()
            })
        );
    }
}
