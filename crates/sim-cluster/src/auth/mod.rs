//! Security as a production API server has it, switched on by `--tls`: HTTPS with a
//! self-signed CA, bearer-token authentication (401 without a valid token) and RBAC
//! authorization (403 with the real message). Off by default: plain HTTP, everyone may do
//! everything.

pub mod rbac;
pub mod tls;
pub mod tokens;

use axum::http::{HeaderMap, Method, header};

use crate::api::Query;
use crate::api::route::{Route, Target};
use crate::error::ApiError;
use crate::resources::{RESOURCES, find};
use crate::store::Store;
pub use rbac::{Attributes, UserInfo};
pub use tls::TlsMaterial;
pub use tokens::{Holder, Tokens};

pub const ADMIN_USER: &str = "kubernetes-admin";

/// What `--tls` switches on: the certificates and the admin's token (issued from the
/// server's token registry, which exists either way so `kubectl create token` always works).
#[derive(Debug)]
pub struct Security {
    pub tls: TlsMaterial,
    pub admin_token: String,
}

impl Security {
    pub fn new(tokens: &Tokens) -> Result<Self, String> {
        Ok(Self {
            tls: TlsMaterial::generate()?,
            admin_token: tokens.issue(Holder::Admin),
        })
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The groups every service account is in.
pub fn service_account_user(namespace: &str, name: &str) -> UserInfo {
    UserInfo {
        name: format!("system:serviceaccount:{namespace}:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
    }
}

/// Who sent the request, from its bearer token.
pub fn authenticate(
    tokens: &Tokens,
    store: &Store,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
    match tokens.lookup(token).ok_or_else(ApiError::unauthorized)? {
        Holder::Admin => Ok(UserInfo {
            name: ADMIN_USER.into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }),
        Holder::ServiceAccount {
            namespace,
            name,
            uid,
            expires,
        } => {
            if expires.is_some_and(|t| t <= jiff::Timestamp::now()) {
                return Err(ApiError::unauthorized());
            }
            let sa = find("", "v1", "serviceaccounts").ok_or_else(ApiError::unauthorized)?;
            let current = store.read(|i| {
                i.get(sa, &namespace, &name)
                    .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
            });
            // Deleted, or deleted and created again: the old token is dead.
            if current.as_deref() != Some(uid.as_str()) {
                return Err(ApiError::unauthorized());
            }
            Ok(service_account_user(&namespace, &name))
        }
    }
}

/// The verb a request means, as RBAC names it.
pub fn verb(method: &Method, target: &Target, query: &Query) -> &'static str {
    match (method, target.name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if query.watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "unknown",
    }
}

pub fn attributes(method: &Method, target: &Target, query: &Query) -> Attributes {
    let res = &RESOURCES[target.resource];
    Attributes {
        verb: verb(method, target, query).into(),
        group: res.group.into(),
        resource: res.plural.into(),
        subresource: target.subresource.clone().unwrap_or_default(),
        namespace: target.namespace.clone().unwrap_or_default(),
        name: target.name.clone().unwrap_or_default(),
    }
}

/// RBAC's decision over the roles and bindings in the store.
pub fn decide(store: &Store, user: &UserInfo, a: &Attributes) -> bool {
    let idx = |plural| find("rbac.authorization.k8s.io", "v1", plural);
    let (Some(cr), Some(r), Some(crb), Some(rb)) = (
        idx("clusterroles"),
        idx("roles"),
        idx("clusterrolebindings"),
        idx("rolebindings"),
    ) else {
        return user.is_admin();
    };
    store.read(|i| {
        let cluster_roles = |name: &str| i.get(cr, "", name).map(|o| &**o);
        let roles = |ns: &str, name: &str| i.get(r, ns, name).map(|o| &**o);
        let policy = rbac::Policy {
            cluster_roles: &cluster_roles,
            roles: &roles,
            cluster_role_bindings: i.list(crb, None).map(|o| &**o).collect(),
            role_bindings: if a.namespace.is_empty() {
                Vec::new()
            } else {
                i.list(rb, Some(&a.namespace)).map(|o| &**o).collect()
            },
        };
        rbac::allowed(user, a, &policy)
    })
}

/// RBAC's decision as the API server answers it: nothing, or a 403 with the real message.
fn check(store: &Store, user: &UserInfo, a: &Attributes) -> Result<(), ApiError> {
    if decide(store, user, a) {
        return Ok(());
    }
    Err(ApiError::forbidden(
        a.forbidden_message(&user.name),
        &a.name,
        &a.group,
        &a.resource,
    ))
}

/// Authorizes one request: discovery, OpenAPI and health are open to every authenticated
/// user (as `system:discovery` grants), and so is asking what one may do
/// (`selfsubjectaccessreviews`, as `system:basic-user` grants).
pub fn authorize(
    store: &Store,
    user: &UserInfo,
    method: &Method,
    route: &Route,
    query: &Query,
) -> Result<(), ApiError> {
    let Route::Resource(target) = route else {
        return Ok(());
    };
    let a = attributes(method, target, query);
    if a.resource == "selfsubjectaccessreviews" && a.verb == "create" {
        return Ok(());
    }
    check(store, user, &a)
}

/// Authorizes a request for a path the simulator does not serve, as a real server would before
/// routing: the path is read as the API server's request-info parser reads it (a resource
/// request under `/api/v1` or `/apis/GROUP/VERSION`, else a non-resource URL, which only
/// admins may reach here), and RBAC decides. Allowed means 404 follows; denied is 403.
pub fn authorize_unrouted(
    store: &Store,
    user: &UserInfo,
    method: &Method,
    path: &str,
    query: &Query,
) -> Result<(), ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => (
            "",
            &[][..], // a non-resource URL
        ),
    };
    if rest.is_empty() {
        if user.is_admin() {
            return Ok(());
        }
        let verb = method.as_str().to_ascii_lowercase();
        return Err(ApiError::forbidden(
            format!(
                "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
                user.name
            ),
            "",
            "",
            "",
        ));
    }
    let (namespace, rest) = match rest {
        ["namespaces", ns, more @ ..] if !more.is_empty() => (*ns, more),
        _ => ("", rest),
    };
    let name = rest.get(1).copied().unwrap_or_default();
    let target = Target {
        resource: 0,
        namespace: None,
        name: (!name.is_empty()).then(|| name.to_owned()),
        subresource: None,
    };
    let a = Attributes {
        verb: verb(method, &target, query).into(),
        group: group.into(),
        resource: rest[0].into(),
        subresource: rest.get(2).copied().unwrap_or_default().into(),
        namespace: namespace.into(),
        name: name.into(),
    };
    check(store, user, &a)
}
