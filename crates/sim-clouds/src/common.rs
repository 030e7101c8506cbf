//! What both simulators share: the request log, faults, and a server running in-process.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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

pub struct Log {
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

/// What to do to one request.
pub enum Fault {
    Delay(Duration),
    Status(u16),
    Hang,
}

impl Faults {
    /// The faults for the next request, counting it.
    pub fn next(slot: &mut Option<Faults>) -> Vec<Fault> {
        let Some(f) = slot.as_mut() else {
            return Vec::new();
        };
        if let Some(n) = f.remaining.as_mut() {
            if *n == 0 {
                *slot = None;
                return Vec::new();
            }
            *n -= 1;
        }
        let mut out = Vec::new();
        if f.latency_ms > 0 {
            out.push(Fault::Delay(Duration::from_millis(f.latency_ms)));
        }
        if f.hang {
            out.push(Fault::Hang);
        }
        if let Some(s) = f.status {
            out.push(Fault::Status(s));
        }
        out
    }
}

/// A simulator running in this process, for tests and the demo. Stops when dropped.
pub struct Running {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    pub(crate) async fn start<F, Fut>(listen: SocketAddr, serve: F) -> std::io::Result<Self>
    where
        F: FnOnce(TcpListener, oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, rx));
        Ok(Self {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves `router` on `listener` (no Nagle delay) until `shutdown`.
pub(crate) async fn serve_router(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

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
