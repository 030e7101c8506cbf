//! `view`: a live, read-only web page of a cluster's spot nodes, through watches: nodes grouped
//! by capacity type, each node's pods as tiles coloured by state, our fence on the node, each
//! notice with a countdown to its deadline, and the timeline of our Events. One page of plain
//! HTML, CSS and JS shipped inside the binary (no build step, no CDN), fed by server-sent
//! events: the whole state when it connects, then what changed, at most every 200 ms.
//! It needs list and watch on nodes, pods and events, nothing else.
#![forbid(unsafe_code)]

pub mod model;
pub mod state;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::http::header;
use axum::response::Html;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{broadcast, watch};

pub use state::State;

const PAGE: &str = include_str!("page.html");

/// Keeps `state` following the cluster until dropped: three watches (nodes, pods, events)
/// and the flush of changes to the pages.
pub fn follow(client: kube::Client, state: State) -> Vec<tokio::task::JoinHandle<()>> {
    let nodes = tokio::spawn(watch_kind(
        Api::<Node>::all(client.clone()),
        "node",
        state.clone(),
        |s, n| s.node(model::node_view(n)),
        |s, n: &Node| s.node_gone(n.metadata.name.as_deref().unwrap_or_default()),
    ));
    let pods = tokio::spawn(watch_kind(
        Api::<Pod>::all(client.clone()),
        "pod",
        state.clone(),
        |s, p| s.pod(model::pod_view(p, false)),
        |s, p: &Pod| s.pod_gone(p.metadata.uid.as_deref().unwrap_or_default()),
    ));
    let events = tokio::spawn(watch_kind(
        Api::<Event>::all(client),
        "event",
        state.clone(),
        |s, e| {
            if let Some(v) = model::event_view(e) {
                s.event(v)
            }
        },
        // The timeline keeps what happened, even once the API server forgets it.
        |_, _: &Event| {},
    ));
    let flush = tokio::spawn(async move {
        let mut every = tokio::time::interval(state::FLUSH);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            state.flush();
        }
    });
    vec![nodes, pods, events, flush]
}

async fn watch_kind<K>(
    api: Api<K>,
    kind: &'static str,
    state: State,
    apply: impl Fn(&State, &K),
    gone: impl Fn(&State, &K),
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    // Watches are restarted with backoff after errors (a dropped or expired watch lists
    // again: what it no longer lists is gone).
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut failing = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => state.relist_started(kind),
            Ok(watcher::Event::InitApply(o) | watcher::Event::Apply(o)) => apply(&state, &o),
            Ok(watcher::Event::InitDone) => {
                state.relist_done(kind);
                failing = false;
            }
            Ok(watcher::Event::Delete(o)) => gone(&state, &o),
            Err(e) => {
                if !failing {
                    tracing::warn!(kind, error = %e, "watch failed; trying again");
                }
                failing = true;
            }
        }
    }
}

/// The page and its stream.
pub fn router(state: State, stop: watch::Receiver<bool>) -> Router {
    let start_state = state.clone();
    Router::new()
        .route(
            "/",
            get(|| async {
                (
                    [
                        (header::CACHE_CONTROL, "no-store"),
                        (
                            header::CONTENT_SECURITY_POLICY,
                            "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:",
                        ),
                    ],
                    Html(PAGE),
                )
            }),
        )
        .route(
            "/updates",
            get(move || {
                let (state, stop) = (state.clone(), stop.clone());
                async move { Sse::new(updates(state, stop)).keep_alive(KeepAlive::default()) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        // A presenter's start button (`demo --start manual`): GET says whether a story waits
        // for it, POST presses it (409 when nothing waits).
        .route(
            "/start",
            get({
                let state = start_state.clone();
                move || async move { axum::Json(serde_json::json!({"waiting": state.awaits_start()})) }
            })
            .post(move || async move {
                if start_state.press_start() {
                    axum::http::StatusCode::NO_CONTENT
                } else {
                    axum::http::StatusCode::CONFLICT
                }
            }),
        )
}

/// The whole state, then each delta; the whole state again for a page that fell behind.
/// Ends when the server stops.
fn updates(
    state: State,
    stop: watch::Receiver<bool>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures_util::stream::unfold(
        (
            state,
            None::<broadcast::Receiver<std::sync::Arc<str>>>,
            stop,
        ),
        |(state, rx, mut stop)| async move {
            let data = match rx {
                None => None,
                Some(mut rx) => tokio::select! {
                    got = rx.recv() => match got {
                        Ok(m) => Some((m, rx)),
                        Err(broadcast::error::RecvError::Lagged(_)) => None,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = stop.wait_for(|s| *s) => return None,
                },
            };
            let (message, rx) = match data {
                Some(d) => d,
                None => state.subscribe(),
            };
            Some((
                Ok(SseEvent::default().data(&*message)),
                (state, Some(rx), stop),
            ))
        },
    )
}

/// Serves the view on `listener` until `shutdown`.
pub async fn serve(
    client: kube::Client,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let view = Running::on(client, listener)?;
    shutdown.await;
    view.stop().await
}

/// A view being served (the demo's, the command's), until stopped.
pub struct Running {
    pub addr: SocketAddr,
    pub state: State,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub async fn start(client: kube::Client, listen: SocketAddr) -> std::io::Result<Self> {
        Self::on(client, tokio::net::TcpListener::bind(listen).await?)
    }

    /// Follows the cluster and serves the page on `listener`.
    pub fn on(client: kube::Client, listener: tokio::net::TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = State::new();
        let tasks = follow(client, state.clone());
        let (stop, stopped) = watch::channel(false);
        let mut wait = stopped.clone();
        let server = tokio::spawn(
            axum::serve(listener, router(state.clone(), stopped))
                .with_graceful_shutdown(async move {
                    let _ = wait.wait_for(|s| *s).await;
                })
                .into_future(),
        );
        Ok(Self {
            addr,
            state,
            stop,
            tasks,
            server,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Ends the pages' streams, then the server and the watches.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop.send(true);
        let served = self.server.await.map_err(std::io::Error::other)?;
        for t in &self.tasks {
            t.abort();
        }
        served
    }
}
