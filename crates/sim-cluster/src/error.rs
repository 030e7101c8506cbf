//! API errors, answered as `metav1.Status` bodies with the codes and reasons a real API server
//! uses, so clients (kubectl, kube-rs) classify them as they would in production.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// Any code with the reason a real server gives it (see `faults::status_error`).
    pub fn custom(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        let e = Self::new(code, reason, message);
        if code == 429 {
            // Real servers (priority and fairness) say when to come back; clients read it from
            // the header and the details.
            return e.with_details(json!({"retryAfterSeconds": 1}));
        }
        e
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        let mut d = self.details.take().unwrap_or_else(|| json!({}));
        d["retryAfterSeconds"] = json!(seconds);
        self.details = Some(d);
        self
    }

    /// Seconds a client should wait before trying again, when the server said.
    pub fn retry_after(&self) -> Option<u64> {
        self.details.as_ref()?["retryAfterSeconds"].as_u64()
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(qualified: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{qualified} \"{name}\" not found")).with_details(
            json!({"name": name, "kind": kind_of(qualified), "group": group_of(qualified)}),
        )
    }

    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(qualified: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{qualified} \"{name}\" already exists"),
        )
        .with_details(
            json!({"name": name, "kind": kind_of(qualified), "group": group_of(qualified)}),
        )
    }

    /// A stale `resourceVersion` on update.
    pub fn conflict(qualified: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {qualified} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        )
        .with_details(json!({"name": name, "kind": kind_of(qualified), "group": group_of(qualified)}))
    }

    /// A failed delete precondition (uid or resourceVersion).
    pub fn precondition_failed(message: String) -> Self {
        Self::new(409, "Conflict", message)
    }

    pub fn invalid(qualified: &str, name: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {message}", kind_of(qualified)),
        )
        .with_details(
            json!({"name": name, "kind": kind_of(qualified), "group": group_of(qualified),
            "causes": [{"reason": "FieldValueInvalid", "message": message}]}),
        )
    }

    /// A patch that could not be applied, answered as a real API server does: 422 with its
    /// generic sentence, the cause in the details.
    pub fn patch_rejected(cause: &dyn std::fmt::Display) -> Self {
        Self::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
        )
        .with_details(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": cause.to_string()}]}))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
        )
    }

    pub fn too_large() -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            "the request body is too large",
        )
    }

    /// The eviction answer when a PodDisruptionBudget allows no disruption now.
    pub fn disruption_budget(pdb: &str, message: String) -> Self {
        Self::new(
            429,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
        )
        .with_details(json!({"causes": [{"reason": "DisruptionBudget", "message": format!("The disruption budget {pdb} {message}")}]}))
    }

    /// No credentials, or ones the server does not accept.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// RBAC said no: `message` is the authorizer's sentence.
    pub fn forbidden(message: String, name: &str, group: &str, kind: &str) -> Self {
        let mut details = json!({"group": group, "kind": kind});
        if !name.is_empty() {
            details["name"] = json!(name);
        }
        Self::new(403, "Forbidden", message).with_details(details)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The watch answer for a resourceVersion older than the history kept.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn status_body(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

fn kind_of(qualified: &str) -> &str {
    qualified.split('.').next().unwrap_or(qualified)
}

fn group_of(qualified: &str) -> &str {
    qualified.split_once('.').map(|(_, g)| g).unwrap_or("")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (code, Json(self.status_body())).into_response();
        if let Some(s) = self.retry_after()
            && (self.code == 429 || self.code == 503)
        {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        resp
    }
}
