//! What the simulators share to run in a process (tests, the demo, `simulate ...`): one
//! handle for a server running on a task, and one way to serve a router on a listener.
//! The product never links this crate (`scripts/build-static` checks that no `sih-sim-`
//! crate is in it).
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server running on a task of this runtime. Stops when dropped; `stop` also waits for it.
pub struct Running {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Binds `listen` (port 0: any free port) and spawns `serve` with the listener and a
    /// future that completes when the handle stops or is dropped.
    pub async fn start<F, Fut>(listen: SocketAddr, serve: F) -> std::io::Result<Self>
    where
        F: FnOnce(TcpListener, Stop) -> Fut,
        Fut: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        Self::spawn(TcpListener::bind(listen).await?, serve)
    }

    /// As `start`, on a listener already bound (a caller that must say which address failed).
    pub fn spawn<F, Fut>(listener: TcpListener, serve: F) -> std::io::Result<Self>
    where
        F: FnOnce(TcpListener, Stop) -> Fut,
        Fut: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, Stop(rx)));
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

    /// Asks the server to stop and waits for it to finish.
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

/// Completes when the `Running` handle stops or is dropped.
pub struct Stop(oneshot::Receiver<()>);

impl Stop {
    pub async fn wait(self) {
        // Sent or dropped: either way the handle is gone.
        let _ = self.0.await;
    }
}

/// `listener` with Nagle's delay off for every connection: small answers go out at once, as
/// Go's net/http (and so the real API server and metadata services) send them.
pub fn without_nagle(
    listener: TcpListener,
) -> axum::serve::TapIo<TcpListener, impl FnMut(&mut tokio::net::TcpStream) + Send + 'static> {
    axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    })
}

/// Serves `router` on `listener` (no Nagle delay) until `shutdown`.
pub async fn serve_router(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(without_nagle(listener), router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn serves_until_stopped_then_refuses() {
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let running = Running::start(SocketAddr::from(([127, 0, 0, 1], 0)), |l, stop| {
            serve_router(l, router, stop.wait())
        })
        .await
        .expect("start");
        let addr = running.addr();
        assert_ne!(addr.port(), 0);
        assert_eq!(running.url(), format!("http://{addr}"));

        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hello"), "{answer}");

        running.stop().await.expect("stopped cleanly");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn dropping_the_handle_stops_the_server() {
        let (done_tx, done_rx) = oneshot::channel();
        let running = Running::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            |_l, stop| async move {
                stop.wait().await;
                let _ = done_tx.send(());
                Ok(())
            },
        )
        .await
        .expect("start");
        drop(running);
        tokio::time::timeout(std::time::Duration::from_secs(5), done_rx)
            .await
            .expect("the server saw its stop")
            .expect("sent");
    }
}
