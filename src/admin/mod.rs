//! The admin listener: `/metrics` (Prometheus text), `/healthz` (liveness), `/readyz`
//! (readiness); optionally the liveness probe on a second address, as NTH's chart expects.
//!
//! It listens on the host network of every spot node, so it holds up under clients that
//! connect and say nothing: at most [`MAX_CONNECTIONS`] at once (more are closed at once, so
//! descriptors never run out), request headers must arrive within [`HEADER_TIMEOUT`], and a
//! connection lives at most [`CONNECTION_LIFETIME`] (a scraper simply reconnects).

pub mod health;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use sih_report::Metrics;

use health::{Health, Verdict};

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    s.metrics
        .oldest_drain_seconds
        .set(s.health.oldest_drain().as_secs_f64());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn healthz(State(s): State<Shared>) -> (StatusCode, String) {
    match s.health.verdict() {
        Verdict::Ok => (StatusCode::OK, "ok\n".into()),
        Verdict::Stalled(d) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the loop has not completed a poll (or queue receive) for {:.0}s\n",
                d.as_secs_f64()
            ),
        ),
        Verdict::ApiFailing(d) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the Kubernetes API has been failing for {:.0}s\n",
                d.as_secs_f64()
            ),
        ),
        Verdict::DrainStuck(node, d) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the drain of {node} is still running {:.0}s after its deadline\n",
                d.as_secs_f64()
            ),
        ),
    }
}

async fn readyz(State(s): State<Shared>) -> (StatusCode, String) {
    match s.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// Connections served at once, per listener: probes and a scraper need a handful; far below
/// any open-files limit.
pub const MAX_CONNECTIONS: usize = 256;
/// The longest a client may take to send a request's headers: a probe or a scraper on the
/// node's network sends them at once.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest one connection is kept, idle or not.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// Connections that have not sent a request yet, oldest first: when every slot is taken, a
/// new connection takes the slot of the oldest of them. So a client holding connections open
/// without asking anything (and reopening each one closed) never keeps a probe out: the
/// probe's request arrives at once, after which its connection is never the one given up.
#[derive(Default)]
struct Waiting {
    next: u64,
    by_age: std::collections::BTreeMap<u64, tokio::sync::oneshot::Sender<()>>,
}

/// A poisoned lock still holds a sound map (every change is one insert or remove).
fn lock(w: &std::sync::Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves `app` on `listener` within the limits above, until the process ends.
async fn serve(listener: tokio::net::TcpListener, app: Router, what: &'static str) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let waiting: Arc<std::sync::Mutex<Waiting>> = Arc::default();
    let mut evicted: u64 = 0;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: wait a moment
                // rather than spin.
                tracing::warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // Full: the oldest connection that has asked nothing gives up its slot.
                let oldest = lock(&waiting).by_age.pop_first();
                let Some((_, close)) = oldest else {
                    drop(stream);
                    continue;
                };
                let _ = close.send(());
                evicted += 1;
                if evicted.is_power_of_two() {
                    tracing::warn!(
                        listener = what,
                        evicted,
                        limit = MAX_CONNECTIONS,
                        "too many connections; closing those that asked nothing"
                    );
                }
                match slots.clone().acquire_owned().await {
                    Ok(slot) => slot,
                    Err(_) => return,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let (close_tx, close_rx) = tokio::sync::oneshot::channel();
        let id = {
            let mut w = lock(&waiting);
            w.next += 1;
            let id = w.next;
            w.by_age.insert(id, close_tx);
            id
        };
        let inner = hyper_util::service::TowerToHyperService::new(app.clone());
        let asked = waiting.clone();
        let service = hyper::service::service_fn(move |req| {
            // It asked something: never the connection given up for a new one.
            lock(&asked).by_age.remove(&id);
            hyper::service::Service::call(&inner, req)
        });
        let done = waiting.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_LIFETIME, conn) => {}
                _ = close_rx => {}
            }
            lock(&done).by_age.remove(&id);
            drop(slot);
        });
    }
}

/// Raises the soft limit on open files to the hard one, so many connections (or a burst of
/// API calls) cannot run the process out of descriptors at a low default of 1024.
pub fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
}

/// Binds the listeners now (so a taken port fails the start) and serves them in the
/// background. Returns the bound admin address.
pub async fn start(
    addr: SocketAddr,
    probes: Option<(SocketAddr, String)>,
    metrics_: Arc<Metrics>,
    health: Arc<Health>,
) -> anyhow::Result<SocketAddr> {
    let shared = Shared {
        metrics: metrics_,
        health,
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on --admin-listen {addr}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, app, "admin"));
    if let Some((addr, path)) = probes {
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let app = Router::new().route(&path, get(healthz)).with_state(shared);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --probes-listen {addr}"))?;
        tokio::spawn(serve(listener, app, "probes"));
    }
    Ok(bound)
}
