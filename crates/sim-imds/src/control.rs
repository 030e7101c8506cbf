//! The `/_sim/...` control API: changes the scenario while the simulator runs. It lives outside
//! every EC2 path, so a client of the metadata service can never reach it by accident.
//!
//! Bodies are parsed as JSON whatever their content type, so `curl -d '{...}'` works as typed.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::time::Instant;

use crate::state::{
    EventState, Faults, Override, SCHEDULED_EVENT_CODES, TARGET_LIFECYCLE_STATES, rfc3339,
};
use crate::{App, NoticeAction, TokenMode};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/_sim/spot-interruption", post(spot))
        .route("/_sim/rebalance-recommendation", post(rebalance))
        .route("/_sim/scheduled-event", post(scheduled))
        .route("/_sim/scheduled-event/{id}/cancel", post(cancel))
        .route("/_sim/scheduled-event/{id}/complete", post(complete))
        .route("/_sim/asg-lifecycle", post(asg))
        .route("/_sim/faults", post(faults))
        .route("/_sim/items", post(item))
        .route("/_sim/imdsv2", post(imdsv2))
        .route("/_sim/expire-tokens", post(expire_tokens))
        .route("/_sim/reset", post(reset))
        .route("/_sim/requests", get(requests).delete(clear_requests))
}

type Reply = Result<Json<serde_json::Value>, ApiError>;

/// A refused control request: its status and a message saying what was wrong.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(msg: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.to_string())
}

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| bad_request(format!("invalid request body: {e}")))
}

fn ok(v: serde_json::Value) -> Reply {
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpotReq {
    #[serde(default = "default_action")]
    action: NoticeAction,
    #[serde(default = "default_lead")]
    lead_seconds: u64,
    /// Restate the time on every read (now + lead), as amazon-ec2-metadata-mock does.
    #[serde(default)]
    restate: bool,
}
fn default_action() -> NoticeAction {
    NoticeAction::Terminate
}
fn default_lead() -> u64 {
    120
}

async fn spot(State(app): State<Arc<App>>, b: Bytes) -> Reply {
    let req: SpotReq = body(&b)?;
    let notice = app.world().trigger_spot(
        req.action,
        Duration::from_secs(req.lead_seconds),
        req.restate,
        Instant::now(),
        Timestamp::now(),
    );
    tracing::info!(action = %req.action, time = %rfc3339(notice.time), "spot interruption notice now visible");
    ok(json!({"action": notice.action, "time": rfc3339(notice.time)}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RebalanceReq {
    /// `noticeTime` is now on every read, as amazon-ec2-metadata-mock serves it.
    #[serde(default)]
    restate: bool,
}

async fn rebalance(State(app): State<Arc<App>>, b: Bytes) -> Reply {
    let req: RebalanceReq = body(&b)?;
    let t = app
        .world()
        .trigger_rebalance(req.restate, Instant::now(), Timestamp::now());
    tracing::info!(notice_time = %rfc3339(t), "rebalance recommendation now visible");
    ok(json!({"noticeTime": rfc3339(t)}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduledReq {
    code: String,
    /// From now; negative when the window has already started.
    not_before_seconds: Option<i64>,
    not_after_seconds: Option<i64>,
    /// Absolute times instead (RFC 3339, or EC2's `21 Jan 2019 09:00:43 GMT`).
    not_before: Option<String>,
    not_after: Option<String>,
    description: Option<String>,
}

/// The default `NotBefore`: ten minutes ahead.
const DEFAULT_NOT_BEFORE_SECONDS: i64 = 600;

fn absolute(s: &str) -> Result<Timestamp, ApiError> {
    s.parse::<Timestamp>()
        .or_else(|_| {
            jiff::civil::DateTime::strptime("%d %b %Y %H:%M:%S GMT", s.trim())
                .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC))
                .map(|z| z.timestamp())
        })
        .map_err(|_| {
            bad_request(format!(
                "{s:?} is neither RFC 3339 nor like \"21 Jan 2019 09:00:43 GMT\""
            ))
        })
}

async fn scheduled(State(app): State<Arc<App>>, b: Bytes) -> Reply {
    let req: ScheduledReq = body(&b)?;
    if !SCHEDULED_EVENT_CODES.contains(&req.code.as_str()) {
        return Err(bad_request(format!(
            "unknown code {:?}; one of {}",
            req.code,
            SCHEDULED_EVENT_CODES.join(", ")
        )));
    }
    let now = Timestamp::now();
    let at = |secs: i64| now + jiff::SignedDuration::from_secs(secs);
    let not_before = match (&req.not_before, req.not_before_seconds) {
        (Some(_), Some(_)) => {
            return Err(bad_request(
                "give not_before or not_before_seconds, not both",
            ));
        }
        (Some(t), None) => absolute(t)?,
        (None, s) => at(s.unwrap_or(DEFAULT_NOT_BEFORE_SECONDS)),
    };
    let not_after = match (&req.not_after, req.not_after_seconds) {
        (Some(_), Some(_)) => {
            return Err(bad_request("give not_after or not_after_seconds, not both"));
        }
        (Some(t), None) => Some(absolute(t)?),
        (None, Some(s)) => Some(at(s)),
        (None, None) => None,
    };
    if not_after.is_some_and(|a| a < not_before) {
        return Err(bad_request("NotAfter must not be before NotBefore"));
    }
    let id = app
        .world()
        .add_event(&req.code, not_before, not_after, req.description);
    tracing::info!(event_id = %id, code = %req.code, "scheduled event now visible");
    ok(json!({"EventId": id}))
}

async fn cancel(State(app): State<Arc<App>>, Path(id): Path<String>) -> Reply {
    end(&app, &id, EventState::Canceled)
}

async fn complete(State(app): State<Arc<App>>, Path(id): Path<String>) -> Reply {
    end(&app, &id, EventState::Completed)
}

fn end(app: &App, id: &str, state: EventState) -> Reply {
    if !app.world().end_event(id, state, Instant::now()) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no active scheduled event {id:?}"),
        ));
    }
    tracing::info!(event_id = %id, ?state, "scheduled event ended");
    ok(json!({"EventId": id, "State": state}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AsgReq {
    state: String,
}

async fn asg(State(app): State<Arc<App>>, b: Bytes) -> Reply {
    let req: AsgReq = body(&b)?;
    if !TARGET_LIFECYCLE_STATES.contains(&req.state.as_str()) {
        return Err(bad_request(format!(
            "unknown state {:?}; one of {}",
            req.state,
            TARGET_LIFECYCLE_STATES.join(", ")
        )));
    }
    app.world().set_target_state(&req.state, Instant::now());
    tracing::info!(state = %req.state, "target lifecycle state changed");
    ok(json!({"state": req.state}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsReq {
    #[serde(default)]
    latency_ms: u64,
    status: Option<u16>,
    rate: Option<f64>,
    count: Option<u32>,
    path_prefix: Option<String>,
}

async fn faults(State(app): State<Arc<App>>, b: Bytes) -> Reply {
    let req: FaultsReq = body(&b)?;
    let status = req.status.filter(|&s| s != 0);
    if let Some(s) = status
        && !(100..=599).contains(&s)
    {
        return Err(bad_request(
            "status must be an HTTP status code (100-599), or 0 for none",
        ));
    }
    let rate = req.rate.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&rate) {
        return Err(bad_request("rate must be between 0 and 1"));
    }
    let active = req.latency_ms > 0 || status.is_some();
    let faults = active.then(|| Faults {
        latency: Duration::from_millis(req.latency_ms),
        status,
        rate,
        remaining: req.count,
        path_prefix: req.path_prefix,
    });
    tracing::info!(?faults, "faults set");
    app.world().set_faults(faults.clone());
    ok(json!({ "faults": faults }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemReq {
    path: String,
    #[serde(default = "default_status")]
    status: u16,
    #[serde(default)]
    body: String,
    /// Remove the override and let the scenario answer again.
    #[serde(default)]
    remove: bool,
}
fn default_status() -> u16 {
    200
}

/// Serves a raw body (or status) at a metadata path, to rehearse what EC2 is not supposed to
/// send: broken JSON, unknown values, huge bodies.
async fn item(State(app): State<Arc<App>>, b: Bytes) -> Reply {
    let req: ItemReq = body(&b)?;
    if !(100..=599).contains(&req.status) {
        return Err(bad_request("status must be an HTTP status code (100-599)"));
    }
    let rel = req
        .path
        .trim_start_matches('/')
        .trim_start_matches("latest/")
        .trim_end_matches('/')
        .to_owned();
    if !(rel.starts_with("meta-data/") || rel.starts_with("dynamic/")) {
        return Err(bad_request("path must be below meta-data/ or dynamic/"));
    }
    let o = (!req.remove).then_some(Override {
        status: req.status,
        body: req.body,
    });
    app.world().set_override(rel.clone(), o);
    ok(json!({"path": rel, "removed": req.remove}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeReq {
    mode: TokenMode,
}

async fn imdsv2(State(app): State<Arc<App>>, b: Bytes) -> Reply {
    let req: ModeReq = body(&b)?;
    app.world().mode = req.mode;
    ok(json!({"mode": req.mode}))
}

async fn expire_tokens(State(app): State<Arc<App>>) -> Reply {
    let n = app.world().expire_tokens(Instant::now());
    ok(json!({"expired": n}))
}

async fn reset(State(app): State<Arc<App>>) -> Reply {
    app.world().reset();
    tracing::info!("scenario reset: no events");
    ok(json!({"reset": true}))
}

async fn requests(State(app): State<Arc<App>>) -> Response {
    let log: Vec<_> = app.world().log().iter().cloned().collect();
    Json(log).into_response()
}

async fn clear_requests(State(app): State<Arc<App>>) -> Response {
    app.world().clear_log();
    StatusCode::NO_CONTENT.into_response()
}
