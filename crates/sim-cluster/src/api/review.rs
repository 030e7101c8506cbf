//! The two requests answered without storing anything: SelfSubjectAccessReview ("may I?", what
//! `kubectl auth can-i` asks) and TokenRequest (a service-account token, what
//! `kubectl create token` asks).

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::ApiState;
use super::objects::json_response;
use super::route::Target;
use crate::auth::{self, Attributes, Holder, UserInfo};
use crate::error::ApiError;
use crate::resources::SERVICE_ACCOUNTS;
use crate::store::{now_rfc3339, rfc3339};

fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// With security off there is no user, and everything is allowed.
pub fn self_subject_access_review(
    st: &ApiState,
    user: Option<&UserInfo>,
    content_type: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let mut review = if content_type.contains("protobuf") {
        super::protobuf::self_subject_access_review(body)
            .ok_or_else(|| ApiError::bad_request("invalid protobuf SelfSubjectAccessReview"))?
    } else {
        body_json(body)?
    };
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    let allowed = match (user, spec.get("resourceAttributes")) {
        (None, _) => true,
        // Non-resource URLs (discovery, health) are open to every authenticated user.
        (Some(_), None) => true,
        (Some(user), Some(ra)) => {
            let a = Attributes {
                verb: field(ra, "verb").into(),
                group: field(ra, "group").into(),
                resource: field(ra, "resource").into(),
                subresource: field(ra, "subresource").into(),
                namespace: field(ra, "namespace").into(),
                name: field(ra, "name").into(),
            };
            if a.verb.is_empty() || a.resource.is_empty() {
                return Err(ApiError::invalid(
                    "selfsubjectaccessreviews.authorization.k8s.io",
                    "",
                    "spec.resourceAttributes: verb and resource are required",
                ));
            }
            auth::decide(&st.store, user, &a)
        }
    };
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "allowed by RBAC"})
    } else {
        json!({"allowed": false})
    };
    Ok(json_response(StatusCode::CREATED, &review))
}

/// A token for an existing service account. `spec.expirationSeconds` defaults to an hour;
/// unlike a real server (10 minutes at least) any positive lifetime is accepted, so tests can
/// watch a token expire.
pub fn token_request(
    st: &ApiState,
    target: &Target,
    content_type: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let ns = target.namespace.clone().unwrap_or_default();
    let name = target.name.clone().unwrap_or_default();
    let req = if content_type.contains("protobuf") {
        super::protobuf::token_request(body)
            .ok_or_else(|| ApiError::bad_request("invalid protobuf TokenRequest"))?
    } else {
        body_json(body)?
    };
    let seconds = req["spec"]["expirationSeconds"].as_i64().unwrap_or(3600);
    if seconds <= 0 {
        return Err(ApiError::invalid(
            "tokenrequests.authentication.k8s.io",
            &name,
            "spec.expirationSeconds: must be positive",
        ));
    }
    let uid = st
        .store
        .read(|i| {
            i.get(SERVICE_ACCOUNTS, &ns, &name)
                .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
        })
        .ok_or_else(|| ApiError::not_found("serviceaccounts", &name))?;
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds);
    let token = st.tokens.issue(Holder::ServiceAccount {
        namespace: ns.clone(),
        name: name.clone(),
        uid,
        expires: Some(expires),
    });
    let out = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": now_rfc3339()},
        "spec": {"expirationSeconds": seconds, "audiences": req["spec"]["audiences"].clone()},
        "status": {"token": token, "expirationTimestamp": rfc3339(expires)},
    });
    Ok(json_response(StatusCode::CREATED, &out))
}
