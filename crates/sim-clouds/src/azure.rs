//! Azure's instance metadata service with Scheduled Events, as a VM sees it.
//!
//! Served as Azure serves it: every request needs `Metadata: true` and an `api-version`
//! (400 otherwise); `GET /metadata/scheduledevents` answers `DocumentIncarnation` (one more on
//! every change) and the events; an event starts (`Started`, `NotBefore` empty) when its
//! `NotBefore` passes or when a `POST {"StartRequests":[{"EventId"}]}` acknowledges it; a
//! started `Freeze`, `Reboot` or `Redeploy` is over (gone from the list) after its duration; a
//! cancelled event disappears before it starts. The first Scheduled Events call of the VM
//! enables the service, which answers only after the first-call delay (up to two minutes on
//! Azure; short here unless told).
//!
//! Control API: `POST /_sim/events {"type","resources","not_before_seconds","duration_seconds",
//! "description","source"}`, `POST /_sim/events/{id}/cancel`, `POST /_sim/events/{id}/start`,
//! `GET /_sim/events`, `POST /_sim/faults`, `POST /_sim/reset`, `GET|DELETE /_sim/requests`
//! (acknowledgements with their bodies).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::common::{Journal, Journaled, Running, journal_routes, json_body, serve_router};

pub const EVENT_TYPES: [&str; 5] = ["Freeze", "Reboot", "Redeploy", "Preempt", "Terminate"];

/// The VM the simulator pretends to be.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub vm_id: String,
    pub location: String,
    pub zone: String,
    pub vm_size: String,
    pub subscription_id: String,
    pub resource_group: String,
    pub scale_set: String,
    pub priority: String,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            name: "aks-spotpool-12345678-vmss000000".into(),
            vm_id: "02aab8a4-74ef-476e-8182-f6d2ba4166a6".into(),
            location: "westeurope".into(),
            zone: "1".into(),
            vm_size: "Standard_D4s_v5".into(),
            subscription_id: "8d10da13-8125-4ba9-a717-bf7490507b3d".into(),
            resource_group: "MC_rehearsal_rehearsal_westeurope".into(),
            scale_set: "aks-spotpool-12345678-vmss".into(),
            priority: "Spot".into(),
        }
    }
}

/// An event the scenario lists from start.
#[derive(Debug, Clone)]
pub struct PlannedEvent {
    pub kind: String,
    /// Appears this long after start.
    pub after: Duration,
    /// `NotBefore` this long after it appears.
    pub notice: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub identity: Identity,
    pub events: Vec<PlannedEvent>,
    /// How long the first Scheduled Events call takes (the service starting).
    pub first_call_delay: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            identity: Identity::default(),
            events: Vec::new(),
            first_call_delay: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Status {
    Scheduled,
    Started,
}

#[derive(Debug, Clone, Serialize)]
struct SimEvent {
    id: String,
    kind: String,
    resources: Vec<String>,
    status: Status,
    not_before: Timestamp,
    description: String,
    source: String,
    duration_seconds: i64,
    #[serde(skip)]
    started_at: Option<Instant>,
    acknowledged_at: Option<Timestamp>,
}

impl SimEvent {
    /// How long after its start a started event is over and leaves the list (`None`: it
    /// stays, the VM is going away).
    fn lasts(&self) -> Option<Duration> {
        match self.kind.as_str() {
            "Freeze" => Some(Duration::from_secs(self.duration_seconds.max(1) as u64)),
            "Reboot" | "Redeploy" => {
                Some(Duration::from_secs(self.duration_seconds.max(10) as u64))
            }
            _ => None,
        }
    }
}

struct World {
    events: Vec<SimEvent>,
    incarnation: u64,
    /// When the service answers (set by the first call).
    enabled_at: Option<Instant>,
    first_call_delay: Duration,
}

impl World {
    /// Starts what is due and ends what is over.
    fn advance(&mut self, now: Timestamp, clock: Instant) {
        let mut changed = false;
        for e in &mut self.events {
            if e.status == Status::Scheduled && e.not_before <= now {
                e.status = Status::Started;
                e.started_at = Some(clock);
                changed = true;
            }
        }
        let before = self.events.len();
        self.events.retain(|e| match (e.started_at, e.lasts()) {
            (Some(at), Some(lasts)) => clock < at + lasts,
            _ => true,
        });
        changed |= self.events.len() != before;
        if changed {
            self.incarnation += 1;
        }
    }

    fn document(&self) -> serde_json::Value {
        let events: Vec<serde_json::Value> = self
            .events
            .iter()
            .map(|e| {
                json!({
                    "EventId": e.id,
                    "EventStatus": match e.status { Status::Scheduled => "Scheduled", Status::Started => "Started" },
                    "EventType": e.kind,
                    "ResourceType": "VirtualMachine",
                    "Resources": e.resources,
                    "NotBefore": match e.status {
                        Status::Scheduled => rfc1123(e.not_before),
                        Status::Started => String::new(),
                    },
                    "Description": e.description,
                    "EventSource": e.source,
                    "DurationInSeconds": e.duration_seconds,
                })
            })
            .collect();
        json!({ "DocumentIncarnation": self.incarnation, "Events": events })
    }
}

fn rfc1123(t: Timestamp) -> String {
    t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn event_id() -> String {
    let hex = |n: usize| -> String {
        (0..n)
            .map(|_| char::from_digit(fastrand::u32(..16), 16).unwrap_or('0'))
            .collect::<String>()
            .to_ascii_uppercase()
    };
    format!("{}-{}-{}-{}-{}", hex(8), hex(4), hex(4), hex(4), hex(12))
}

pub(crate) struct App {
    world: Mutex<World>,
    identity: Identity,
    journal: Journal,
}

impl Journaled for App {
    fn journal(&self) -> &Journal {
        &self.journal
    }
}

impl App {
    fn world(&self) -> MutexGuard<'_, World> {
        let mut w = self.world.lock().unwrap_or_else(|p| p.into_inner());
        w.advance(Timestamp::now(), Instant::now());
        w
    }

    fn add(&self, new: NewEvent) -> Result<String, String> {
        if !EVENT_TYPES.contains(&new.kind.as_str()) {
            return Err(format!(
                "unknown type {:?}; the types are {}",
                new.kind,
                EVENT_TYPES.join(", ")
            ));
        }
        let id = event_id();
        let notice = new.not_before_seconds.unwrap_or(match new.kind.as_str() {
            "Preempt" | "Freeze" => 30,
            "Terminate" => 300,
            _ => 600,
        });
        let not_before = Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(notice))
            .map_err(|e| e.to_string())?;
        let description = new.description.unwrap_or_else(|| {
            match new.kind.as_str() {
                "Preempt" => "Virtual machine is going to be evicted.",
                "Freeze" => "Virtual machine is being paused because of a memory-preserving Live Migration operation.",
                "Reboot" => "Virtual machine is going to be restarted as requested by authorized user.",
                "Redeploy" => "Virtual machine is going to be redeployed to another host.",
                _ => "Virtual machine is going to be deleted.",
            }
            .to_owned()
        });
        let e = SimEvent {
            id: id.clone(),
            kind: new.kind,
            resources: new
                .resources
                .unwrap_or_else(|| vec![self.identity.name.clone()]),
            status: Status::Scheduled,
            not_before,
            description,
            source: new.source.unwrap_or_else(|| "Platform".into()),
            duration_seconds: new.duration_seconds.unwrap_or(-1),
            started_at: None,
            acknowledged_at: None,
        };
        tracing::info!(id = %e.id, kind = %e.kind, resources = ?e.resources,
            not_before = %rfc1123(e.not_before), "scheduled event listed");
        let mut w = self.world();
        w.events.push(e);
        w.incarnation += 1;
        Ok(id)
    }
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(json!({ "error": msg }))).into_response()
}

async fn metadata(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let logged = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    let response = match app.journal.play().await {
        Some(status) => error(status, "simulated fault"),
        None => answer(&app, &method, &uri, &headers, &body).await,
    };
    let kept = (method == Method::POST).then_some(body.as_str());
    app.journal
        .record(method.as_str(), &logged, response.status().as_u16(), kept);
    response
}

async fn answer(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &str,
) -> Response {
    if headers.contains_key("x-forwarded-for") {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad request. Requests with X-Forwarded-For are refused",
        );
    }
    let flagged = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !flagged {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad request. Required metadata header not specified",
        );
    }
    let versioned = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|p| p.starts_with("api-version=") && p.len() > "api-version=".len());
    if !versioned {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad request. api-version was not specified in the request",
        );
    }
    match (method, uri.path()) {
        (&Method::GET, "/metadata/instance/compute") => {
            axum::Json(compute(&app.identity)).into_response()
        }
        (&Method::GET, "/metadata/instance") => {
            axum::Json(json!({ "compute": compute(&app.identity) })).into_response()
        }
        (_, "/metadata/scheduledevents") => {
            let wait = {
                let mut w = app.world();
                let now = Instant::now();
                let delay = w.first_call_delay;
                let at = *w.enabled_at.get_or_insert(now + delay);
                at.saturating_duration_since(now)
            };
            tokio::time::sleep(wait).await;
            match *method {
                Method::GET => axum::Json(app.world().document()).into_response(),
                Method::POST => acknowledge(app, body),
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "Not found"),
    }
}

fn compute(id: &Identity) -> serde_json::Value {
    json!({
        "name": id.name,
        "vmId": id.vm_id,
        "location": id.location,
        "zone": id.zone,
        "vmSize": id.vm_size,
        "subscriptionId": id.subscription_id,
        "resourceGroupName": id.resource_group,
        "vmScaleSetName": id.scale_set,
        "priority": id.priority,
        "osProfile": { "computerName": id.name, "adminUsername": "azureuser" },
        "osType": "Linux",
        "azEnvironment": "AzurePublicCloud",
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartRequests {
    start_requests: Vec<StartRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartRequest {
    event_id: String,
}

fn acknowledge(app: &App, body: &str) -> Response {
    let Ok(req) = serde_json::from_str::<StartRequests>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad request. The body is not a StartRequests document",
        );
    };
    let mut w = app.world();
    let now = Instant::now();
    let mut changed = false;
    for r in req.start_requests {
        if let Some(e) = w.events.iter_mut().find(|e| e.id == r.event_id) {
            e.acknowledged_at.get_or_insert(Timestamp::now());
            if e.status == Status::Scheduled {
                e.status = Status::Started;
                e.started_at = Some(now);
                changed = true;
                tracing::info!(id = %e.id, kind = %e.kind, "acknowledged: the event starts now");
            }
        }
    }
    if changed {
        w.incarnation += 1;
    }
    StatusCode::OK.into_response()
}

type Reply = Result<Response, (StatusCode, String)>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    resources: Option<Vec<String>>,
    #[serde(default)]
    not_before_seconds: Option<i64>,
    #[serde(default)]
    duration_seconds: Option<i64>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

async fn add(State(app): State<Arc<App>>, b: Bytes) -> Reply {
    let new: NewEvent = json_body(&b)?;
    let id = app
        .add(new)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("{e}\n")))?;
    Ok(axum::Json(json!({ "EventId": id })).into_response())
}

async fn cancel(State(app): State<Arc<App>>, Path(id): Path<String>) -> Reply {
    let mut w = app.world();
    match w.events.iter().position(|e| e.id == id) {
        Some(i) if w.events[i].status == Status::Scheduled => {
            w.events.remove(i);
            w.incarnation += 1;
            tracing::info!(%id, "scheduled event cancelled");
            Ok(axum::Json(json!({ "cancelled": id })).into_response())
        }
        Some(_) => Err((StatusCode::CONFLICT, "the event has started\n".into())),
        None => Err((StatusCode::NOT_FOUND, format!("no event {id}\n"))),
    }
}

async fn start_now(State(app): State<Arc<App>>, Path(id): Path<String>) -> Reply {
    let mut w = app.world();
    let now = Instant::now();
    let Some(e) = w.events.iter_mut().find(|e| e.id == id) else {
        return Err((StatusCode::NOT_FOUND, format!("no event {id}\n")));
    };
    if e.status == Status::Scheduled {
        e.status = Status::Started;
        e.started_at = Some(now);
        w.incarnation += 1;
    }
    Ok(axum::Json(json!({ "started": id })).into_response())
}

async fn events(State(app): State<Arc<App>>) -> Response {
    let w = app.world();
    axum::Json(json!({ "incarnation": w.incarnation, "events": w.events })).into_response()
}

async fn reset(State(app): State<Arc<App>>) -> Reply {
    let mut w = app.world();
    w.events.clear();
    w.incarnation += 1;
    app.journal.clear_faults();
    Ok(axum::Json(json!({})).into_response())
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/_sim/events", post(add).get(events))
        .route("/_sim/events/{id}/cancel", post(cancel))
        .route("/_sim/events/{id}/start", post(start_now))
        .route("/_sim/reset", post(reset))
        .merge(journal_routes())
        .fallback(metadata)
        .with_state(app)
}

/// Serves on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Arc::new(App {
        world: Mutex::new(World {
            events: Vec::new(),
            incarnation: 1,
            enabled_at: None,
            first_call_delay: config.first_call_delay,
        }),
        identity: config.identity.clone(),
        journal: Journal::new(),
    });
    for planned in config.events {
        let app = app.clone();
        tokio::spawn(async move {
            tokio::time::sleep(planned.after).await;
            let new = NewEvent {
                kind: planned.kind,
                resources: None,
                not_before_seconds: Some(planned.notice.as_secs() as i64),
                duration_seconds: None,
                description: None,
                source: None,
            };
            if let Err(e) = app.add(new) {
                tracing::warn!(error = %e, "planned event not listed");
            }
        });
    }
    serve_router(listener, router(app), shutdown).await
}

/// Starts one on `listen` (port 0: any free port) in this runtime.
pub async fn start(config: Config, listen: SocketAddr) -> std::io::Result<Running> {
    Running::start(listen, move |l, stop| serve(l, config, stop.wait())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_start_at_not_before_and_short_ones_end() {
        let t0: Timestamp = "2026-12-04T10:00:00Z".parse().unwrap();
        let clock = Instant::now();
        let mut w = World {
            events: vec![SimEvent {
                id: "e1".into(),
                kind: "Reboot".into(),
                resources: vec!["vm".into()],
                status: Status::Scheduled,
                not_before: t0,
                description: String::new(),
                source: "Platform".into(),
                duration_seconds: -1,
                started_at: None,
                acknowledged_at: None,
            }],
            incarnation: 1,
            enabled_at: None,
            first_call_delay: Duration::ZERO,
        };
        w.advance("2026-12-04T09:59:59Z".parse().unwrap(), clock);
        assert_eq!((w.incarnation, w.events[0].status), (1, Status::Scheduled));
        w.advance(t0, clock);
        assert_eq!((w.incarnation, w.events[0].status), (2, Status::Started));
        assert_eq!(w.document()["Events"][0]["NotBefore"], "");
        w.advance(t0, clock + Duration::from_secs(10));
        assert!(w.events.is_empty(), "a reboot is over after its duration");
        assert_eq!(w.incarnation, 3);
        assert_eq!(rfc1123(t0), "Fri, 04 Dec 2026 10:00:00 GMT");
        let id = event_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}
