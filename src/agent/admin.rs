//! The admin listener: `/metrics` (Prometheus text), `/healthz` (liveness), `/readyz`
//! (readiness); optionally the liveness probe on a second address, as NTH's chart expects.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use sih_report::Metrics;

use super::health::{Health, Verdict};

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
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
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
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "probes server stopped");
            }
        });
    }
    Ok(bound)
}
