//! The HTTP surface of the simulated API server: one dispatcher that parses the path, then
//! discovery, OpenAPI, or the resource handlers.

pub mod control;
pub mod defaults;
pub mod discovery;
pub mod events;
pub mod objects;
pub mod openapi;
pub mod pods;
pub mod protobuf;
pub mod review;
pub mod route;
pub mod table;
pub mod watch;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::store::Store;
use crate::{auth, resources};
use route::Route;

/// Kubernetes' own limit on a request body.
const MAX_BODY: usize = 3 * 1024 * 1024;

pub struct ApiState {
    pub store: Arc<Store>,
    /// `host:port` as clients reach the server.
    pub server: String,
    pub tokens: Arc<crate::auth::Tokens>,
    /// Authentication and RBAC on (`--tls`).
    pub secure: bool,
    /// Faults on demand (`/_sim/faults`, `--fault`).
    pub faults: Arc<crate::faults::Faults>,
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

/// Query parameters the server understands.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub watch: bool,
    pub resource_version: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub dry_run: bool,
}

impl Query {
    fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
        let mut q = Query::default();
        let num = |k: &str, v: &str| {
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("{k}: {v:?} is not a number")))
        };
        for (k, v) in pairs {
            match k.as_str() {
                "labelSelector" => q.label_selector = Some(v),
                "fieldSelector" => q.field_selector = Some(v),
                "watch" => q.watch = v == "true" || v == "1",
                "resourceVersion" => q.resource_version = Some(v).filter(|v| !v.is_empty()),
                "timeoutSeconds" => q.timeout_seconds = Some(num(&k, &v)?),
                "limit" => q.limit = Some(num(&k, &v)? as usize).filter(|&l| l > 0),
                "continue" => q.continue_token = Some(v).filter(|v| !v.is_empty()),
                "gracePeriodSeconds" => {
                    q.grace_period_seconds = Some(v.parse().map_err(|_| {
                        ApiError::bad_request("gracePeriodSeconds must be an integer")
                    })?)
                }
                "propagationPolicy" => q.propagation_policy = Some(v),
                "dryRun" => q.dry_run = v == "All",
                _ => {}
            }
        }
        Ok(q)
    }
}

async fn dispatch(
    State(st): State<Arc<ApiState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let arrived = jiff::Timestamp::now();
    let started = tokio::time::Instant::now();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return ApiError::too_large().into_response(),
    };
    let path = uri.path();
    if path == "/_sim" || path.starts_with("/_sim/") {
        if st.secure
            && let Err(e) = auth::authenticate(&st.tokens, &st.store, &headers).and_then(|u| {
                if u.is_admin() {
                    Ok(())
                } else {
                    Err(ApiError::unauthorized())
                }
            })
        {
            return e.into_response();
        }
        return control::handle(&st, &method, path, &body).await;
    }
    let query = Query::parse(uri.query()).unwrap_or_default();
    let route = route::parse(path);
    let target = match &route {
        Some(Route::Resource(t)) => Some(t.clone()),
        _ => None,
    };
    let verb = target
        .as_ref()
        .map_or("get", |t| auth::verb(&method, t, &query));
    let resource = target.as_ref().map(|t| {
        (
            resources::RESOURCES[t.resource].plural,
            t.subresource.as_deref(),
        )
    });
    let info = crate::faults::RequestInfo {
        verb,
        resource,
        namespace: target.as_ref().and_then(|t| t.namespace.as_deref()),
        name: target.as_ref().and_then(|t| t.name.as_deref()),
    };
    let fault = st.faults.pick(&info);
    let mut record = crate::journal::RequestRecord {
        seq: st.store.journal.next_seq(),
        at: arrived,
        duration_ms: 0,
        method: method.to_string(),
        path: path.to_owned(),
        verb: verb.to_owned(),
        resource: resource.map(|(p, _)| p.to_owned()),
        subresource: resource.and_then(|(_, s)| s.map(str::to_owned)),
        namespace: info.namespace.map(str::to_owned),
        name: info.name.map(str::to_owned),
        status: 0,
        fault: fault.as_ref().map(|f| f.effect.label().to_owned()),
        grace_seconds: asked_grace(resource, &method, &query, &body),
    };
    let response = answer(&st, method, uri, headers, body, route, query, fault).await;
    record.duration_ms = started.elapsed().as_millis() as u64;
    record.status = response.as_ref().map_or(0, |r| r.status().as_u16());
    st.store.journal.request(record);
    response.unwrap_or_else(unanswered)
}

/// The grace period a pod deletion or eviction asks for, for the journal.
fn asked_grace(
    resource: Option<(&str, Option<&str>)>,
    method: &Method,
    query: &Query,
    body: &[u8],
) -> Option<i64> {
    let parsed = || serde_json::from_slice::<serde_json::Value>(body).ok();
    match (resource, method) {
        (Some(("pods", Some("eviction"))), &Method::POST) => {
            parsed()?["deleteOptions"]["gracePeriodSeconds"].as_i64()
        }
        (Some(("pods", None)), &Method::DELETE) => query
            .grace_period_seconds
            .or_else(|| parsed()?["gracePeriodSeconds"].as_i64()),
        _ => None,
    }
}

/// A connection closed without an answer (or with half of one): hyper aborts the connection
/// when a body fails. (The fault proxy in front of a real server answers its hangs so too.)
pub fn unanswered() -> Response {
    let failed = futures_util::stream::once(async {
        Err::<axum::body::Bytes, std::io::Error>(std::io::Error::other("connection reset by fault"))
    });
    Response::builder()
        .status(200)
        .header(header::CONTENT_LENGTH, "1")
        .body(Body::from_stream(failed))
        .unwrap_or_default()
}

/// The answer's first half, then a broken connection.
async fn cut_short(resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    let chunks = futures_util::stream::iter([
        Ok(half),
        Err(std::io::Error::other("connection reset by fault")),
    ]);
    let mut resp = Response::from_parts(parts, Body::from_stream(chunks));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, bytes.len().max(1).into());
    resp
}

/// `None` when the request is never answered (a hang, a reset).
#[allow(clippy::too_many_arguments)]
async fn answer(
    st: &Arc<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
    route: Option<Route>,
    query: Query,
    fault: Option<crate::faults::Chosen>,
) -> Option<Response> {
    use crate::faults::Effect;
    if let Some(f) = &fault {
        if !f.latency.is_zero() {
            tokio::time::sleep(f.latency).await;
        }
        match &f.effect {
            Effect::Hang => {
                st.faults.until_gone(f.id).await;
                return None;
            }
            Effect::Status {
                code,
                retry_after,
                message,
            } => {
                let mut e = crate::faults::status_error(*code, message.as_deref());
                if let Some(s) = retry_after {
                    e = e.with_retry_after(*s);
                }
                return Some(e.into_response());
            }
            _ => {}
        }
    }
    let effect = fault.map(|f| f.effect);
    if effect == Some(Effect::Expire) && !query.watch {
        return Some(
            ApiError::gone(format!(
                "too old resource version: {} ({})",
                query.resource_version.as_deref().unwrap_or("0"),
                st.store.read(|i| i.rv())
            ))
            .into_response(),
        );
    }
    let resp = route_request(
        st,
        method,
        uri,
        headers,
        body,
        route,
        query,
        effect.as_ref(),
    )
    .await;
    if effect == Some(Effect::Reset) {
        return Some(cut_short(resp).await);
    }
    Some(resp)
}

#[allow(clippy::too_many_arguments)]
async fn route_request(
    st: &Arc<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
    route: Option<Route>,
    query: Query,
    effect: Option<&crate::faults::Effect>,
) -> Response {
    if let Err(e) = Query::parse(uri.query()) {
        return e.into_response();
    }
    let Some(route) = route else {
        // Authorization runs before routing on a real server: an unknown path is 403 for whom
        // RBAC does not allow it, 404 only for who may ask.
        if st.secure {
            let checked = auth::authenticate(&st.tokens, &st.store, &headers).and_then(|user| {
                auth::authorize_unrouted(&st.store, &user, &method, uri.path(), &query)
            });
            if let Err(e) = checked {
                return e.into_response();
            }
        }
        return ApiError::path_not_found().into_response();
    };
    if !matches!(route, Route::Resource(_)) && method != Method::GET {
        return ApiError::method_not_allowed().into_response();
    }
    let user = if st.secure {
        let checked = auth::authenticate(&st.tokens, &st.store, &headers).and_then(|user| {
            auth::authorize(&st.store, &user, &method, &route, &query).map(|()| user)
        });
        match checked {
            Ok(user) => Some(user),
            Err(e) => return e.into_response(),
        }
    } else {
        None
    };
    match route {
        Route::Version => Json(discovery::version()).into_response(),
        Route::Health => ([(header::CONTENT_TYPE, "text/plain")], "ok").into_response(),
        Route::CoreVersions => Json(discovery::core_versions(&st.server)).into_response(),
        Route::Groups => Json(discovery::groups()).into_response(),
        Route::Group(g) => Json(discovery::api_group(&g)).into_response(),
        Route::GroupVersion { group, version } => {
            Json(discovery::resource_list(&group, &version)).into_response()
        }
        Route::OpenApiV2 => Json(openapi::v2_document()).into_response(),
        Route::OpenApiV3Index => Json(openapi::v3_index()).into_response(),
        Route::OpenApiV3 { group, version } => match openapi::v3_document(&group, &version) {
            Some(doc) => Json(doc).into_response(),
            None => ApiError::path_not_found().into_response(),
        },
        Route::Resource(target)
            if target.resource == resources::SELF_SUBJECT_ACCESS_REVIEWS
                && method == Method::POST =>
        {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            review::self_subject_access_review(st, user.as_ref(), ct, &body)
                .unwrap_or_else(|e| e.into_response())
        }
        Route::Resource(target)
            if target.resource == resources::SERVICE_ACCOUNTS
                && target.subresource.as_deref() == Some("token")
                && method == Method::POST =>
        {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            review::token_request(st, &target, ct, &body).unwrap_or_else(|e| e.into_response())
        }
        Route::Resource(target) => {
            let request = objects::Request {
                method,
                target,
                query,
                headers,
                body,
                watch_fault: effect.cloned(),
            };
            match objects::handle(st, request).await {
                Ok(resp) => resp,
                Err(e) => e.into_response(),
            }
        }
    }
}
