//! What both simulators share: the request log, faults, and a server running in-process.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

/// One request as the log keeps it (newest last).
#[derive(Debug, Clone, Serialize)]
pub struct Logged {
    pub at: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// A POST's body (Azure's acknowledgements), capped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

pub(crate) struct Log {
    entries: VecDeque<Logged>,
    capacity: usize,
}

impl Log {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn push(&mut self, method: &str, path: &str, status: u16, body: Option<&str>) {
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(Logged {
            at: jiff::Timestamp::now().to_string(),
            method: method.to_owned(),
            path: path.to_owned(),
            status,
            body: body.map(|b| b.chars().take(4096).collect()),
        });
    }

    pub fn all(&self) -> Vec<Logged> {
        self.entries.iter().cloned().collect()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// What goes wrong with metadata requests (never with `/_sim/`), set by `POST /_sim/faults`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Answer with this status instead.
    pub status: Option<u16>,
    /// Wait this long before answering.
    pub latency_ms: u64,
    /// Never answer (the connection stays open until the client gives up).
    pub hang: bool,
    /// How many more requests to affect; `None`: all.
    pub remaining: Option<u32>,
}

impl Faults {
    fn is_none(&self) -> bool {
        self.status.is_none() && self.latency_ms == 0 && !self.hang
    }

    /// Counts one request against `slot`: what it meets (a delay, a hang, a status).
    fn next(slot: &mut Option<Faults>) -> Option<Faults> {
        let f = slot.as_mut()?;
        if let Some(n) = f.remaining.as_mut() {
            if *n == 0 {
                *slot = None;
                return None;
            }
            *n -= 1;
        }
        Some(f.clone())
    }
}

/// The faults to play and the log of what was served: the same for both simulators, with
/// the control routes that set and read them (`/_sim/faults`, `/_sim/requests`).
pub(crate) struct Journal {
    faults: Mutex<Option<Faults>>,
    log: Mutex<Log>,
}

impl Journal {
    pub fn new() -> Self {
        Self {
            faults: Mutex::new(None),
            log: Mutex::new(Log::new(10_000)),
        }
    }

    /// Plays the faults set for the next metadata request: waits, never returns (a hang), or
    /// gives the status to answer with instead.
    pub async fn play(&self) -> Option<StatusCode> {
        let f = Faults::next(&mut self.faults.lock().unwrap_or_else(|p| p.into_inner()))?;
        if f.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
        }
        if f.hang {
            std::future::pending::<()>().await;
        }
        f.status
            .map(|s| StatusCode::from_u16(s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE))
    }

    pub fn record(&self, method: &str, path: &str, status: u16, body: Option<&str>) {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(method, path, status, body);
    }

    pub fn clear_faults(&self) {
        *self.faults.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// A simulator whose state holds a [`Journal`].
pub(crate) trait Journaled: Send + Sync + 'static {
    fn journal(&self) -> &Journal;
}

/// `POST /_sim/faults` (an empty one clears them), `GET|DELETE /_sim/requests`.
pub(crate) fn journal_routes<A: Journaled>() -> axum::Router<Arc<A>> {
    async fn faults<A: Journaled>(
        State(app): State<Arc<A>>,
        b: Bytes,
    ) -> Result<Response, (StatusCode, String)> {
        let f: Faults = json_body(&b)?;
        let on = !f.is_none();
        *app.journal()
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = on.then_some(f);
        Ok(axum::Json(serde_json::json!({ "faults": on })).into_response())
    }
    async fn requests<A: Journaled>(State(app): State<Arc<A>>) -> Response {
        let log = app
            .journal()
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .all();
        axum::Json(log).into_response()
    }
    async fn clear<A: Journaled>(State(app): State<Arc<A>>) -> Response {
        app.journal()
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        StatusCode::NO_CONTENT.into_response()
    }
    axum::Router::new()
        .route("/_sim/faults", post(faults::<A>))
        .route("/_sim/requests", get(requests::<A>).delete(clear::<A>))
}

pub use sih_sim_serve::{Running, serve_router};

/// Parses a control request's JSON body, or says why not.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, (axum::http::StatusCode, String)> {
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| {
        (
            axum::http::StatusCode::BAD_REQUEST,
            format!("bad body: {e}\n"),
        )
    })
}
