//! The HTTP surface of the simulated API server: one dispatcher that parses the path, then
//! discovery, OpenAPI, or the resource handlers.

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
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return ApiError::too_large().into_response(),
    };
    let query = match Query::parse(uri.query()) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let Some(route) = route::parse(uri.path()) else {
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
            review::self_subject_access_review(&st, user.as_ref(), ct, &body)
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
            review::token_request(&st, &target, ct, &body).unwrap_or_else(|e| e.into_response())
        }
        Route::Resource(target) => {
            let request = objects::Request {
                method,
                target,
                query,
                headers,
                body,
            };
            match objects::handle(&st, request).await {
                Ok(resp) => resp,
                Err(e) => e.into_response(),
            }
        }
    }
}
