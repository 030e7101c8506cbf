//! A small Kubernetes API server, in memory, that the real kubectl and kube-rs can drive:
//! discovery, CRUD with resourceVersion conflicts, label and field selectors, watches, merge /
//! strategic-merge / JSON patches, graceful deletion, eviction under PodDisruptionBudgets, and
//! simulated scheduler, kubelet and controllers that recreate evicted pods elsewhere.
//!
//! Not served: authentication and authorization (everyone may do everything), protobuf,
//! aggregated discovery, server-side dry run, field ownership for server-side apply, and every
//! resource kind beyond the ones in `resources.rs`.
#![forbid(unsafe_code)]

pub mod api;
pub mod controllers;
pub mod error;
pub mod patch;
pub mod resources;
pub mod selector;
pub mod store;
pub mod workload;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use controllers::LoopConfig;
pub use store::Store;

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Nodes in all.
    pub nodes: usize,
    /// How many of them are spot capacity.
    pub spot_nodes: usize,
    /// Objects to create at start; `None` creates the default workload.
    pub workload: Option<Vec<Value>>,
    pub max_pods: usize,
    pub pod_start_delay: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nodes: 3,
            spot_nodes: 1,
            workload: None,
            max_pods: 110,
            pod_start_delay: Duration::from_millis(300),
        }
    }
}

/// Prepares the store with the start-up objects.
pub fn populate(config: &ClusterConfig) -> Result<Arc<Store>, String> {
    if config.spot_nodes > config.nodes {
        return Err(format!(
            "--spot-nodes {} is more than --nodes {}",
            config.spot_nodes, config.nodes
        ));
    }
    let store = Store::new();
    let objects = config
        .workload
        .clone()
        .unwrap_or_else(|| workload::default_workload(config.nodes));
    workload::load(&store, config.nodes, config.spot_nodes, &objects)?;
    Ok(store)
}

/// Serves `store` on `listener` and runs the control loops until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    store: Arc<Store>,
    config: &ClusterConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let state = Arc::new(api::ApiState {
        store: store.clone(),
        server: addr.to_string(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let loops = LoopConfig {
        max_pods: config.max_pods,
        pod_start_delay: config.pod_start_delay,
    };
    let mut loop_stop = stop_rx.clone();
    let control = tokio::spawn(controllers::run(store, loops, async move {
        let _ = loop_stop.wait_for(|s| *s).await;
    }));
    // Like Go's net/http (and so the real API server), answer without Nagle's delay.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let result = axum::serve(listener, api::router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await;
    let _ = control.await;
    result
}

/// A cluster running in this process, for tests and the demo. Stops when dropped.
pub struct RunningCluster {
    addr: SocketAddr,
    store: Arc<Store>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningCluster {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Direct access to the objects, for assertions and benchmarks.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn kubeconfig(&self) -> String {
        workload::kubeconfig(&self.url())
    }

    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningCluster {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a cluster on `listen` (port 0 picks a free port) in the current runtime.
pub async fn start(config: ClusterConfig, listen: SocketAddr) -> Result<RunningCluster, String> {
    let store = populate(&config)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = store.clone();
    let task = tokio::spawn(async move {
        serve(listener, served, &config, async move {
            let _ = rx.await;
        })
        .await
    });
    Ok(RunningCluster {
        addr,
        store,
        stop: Some(tx),
        task: Some(task),
    })
}
