//! A small Kubernetes API server, in memory, that the real kubectl and kube-rs can drive:
//! discovery, CRUD with resourceVersion conflicts, label and field selectors, watches, merge /
//! strategic-merge / JSON patches, graceful deletion, eviction under PodDisruptionBudgets, and
//! simulated scheduler, kubelet and controllers that recreate evicted pods elsewhere.
//!
//! With `tls` on it speaks like a production API server: HTTPS with its own CA, bearer tokens
//! (an admin token, service-account tokens, TokenRequest) and RBAC; off, it is plain HTTP and
//! everyone may do everything.
//!
//! Not served: protobuf, aggregated discovery, server-side dry run, field ownership for
//! server-side apply, and every resource kind beyond the ones in `resources.rs`.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod controllers;
pub mod error;
pub mod faults;
pub mod journal;
pub mod patch;
pub mod resources;
pub mod selector;
pub mod store;
mod tls_server;
pub mod validation;
pub mod workload;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

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
    /// HTTPS, bearer tokens and RBAC.
    pub tls: bool,
    /// ServiceAccounts `(namespace, name)` to create at start, each with a token.
    pub service_accounts: Vec<(String, String)>,
    /// Faults active from the start (`--fault`).
    pub faults: Vec<faults::FaultSpec>,
    /// A simulated cluster-autoscaler for one node group (`--autoscaler`).
    pub autoscaler: Option<controllers::autoscaler::AutoscalerConfig>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nodes: 3,
            spot_nodes: 1,
            workload: None,
            max_pods: 110,
            pod_start_delay: Duration::from_millis(300),
            tls: false,
            service_accounts: Vec::new(),
            faults: Vec::new(),
            autoscaler: None,
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

/// Everything a server needs before it listens: the objects, the token registry, with `tls`
/// the certificates and admin token, and the tokens of the start-up service accounts.
#[derive(Clone)]
pub struct Prepared {
    pub store: Arc<Store>,
    pub tokens: Arc<auth::Tokens>,
    pub security: Option<Arc<auth::Security>>,
    /// `((namespace, name), token)` for each `--service-account`.
    pub service_account_tokens: Vec<((String, String), String)>,
    pub faults: Arc<faults::Faults>,
}

/// Creates the start-up objects and, with `tls`, the security material.
pub fn prepare(config: &ClusterConfig) -> Result<Prepared, String> {
    let store = populate(config)?;
    let tokens = Arc::new(auth::Tokens::default());
    let security = if config.tls {
        Some(Arc::new(auth::Security::new(&tokens)?))
    } else {
        None
    };
    let mut service_account_tokens = Vec::new();
    for (ns, name) in &config.service_accounts {
        let uid = store
            .write(|tx| {
                if tx.get(resources::NAMESPACES, "", ns).is_none() {
                    tx.create(
                        resources::NAMESPACES,
                        "",
                        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                    )?;
                }
                let sa = match tx.get(resources::SERVICE_ACCOUNTS, ns, name) {
                    Some(sa) => sa,
                    None => tx.create(
                        resources::SERVICE_ACCOUNTS,
                        ns,
                        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
                            "metadata": {"name": name, "namespace": ns}}),
                    )?,
                };
                Ok(sa["metadata"]["uid"].as_str().unwrap_or_default().to_owned())
            })
            .map_err(|e: error::ApiError| format!("service account {ns}/{name}: {}", e.message))?;
        let token = tokens.issue(auth::Holder::ServiceAccount {
            namespace: ns.clone(),
            name: name.clone(),
            uid,
            expires: None,
        });
        service_account_tokens.push(((ns.clone(), name.clone()), token));
    }
    let faults = Arc::new(faults::Faults::default());
    for spec in &config.faults {
        faults.add(spec.clone())?;
    }
    Ok(Prepared {
        store,
        tokens,
        security,
        service_account_tokens,
        faults,
    })
}

impl Prepared {
    pub fn url(&self, addr: SocketAddr) -> String {
        let scheme = if self.security.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{addr}")
    }

    /// The admin's kubeconfig (with `tls`: the CA and the admin token).
    pub fn kubeconfig(&self, addr: SocketAddr) -> String {
        match &self.security {
            Some(s) => {
                workload::kubeconfig_with(&self.url(addr), &s.tls.ca_pem, &s.admin_token, "default")
            }
            None => workload::kubeconfig(&self.url(addr)),
        }
    }

    pub fn token_of(&self, namespace: &str, name: &str) -> Option<&str> {
        self.service_account_tokens
            .iter()
            .find(|((n, s), _)| n == namespace && s == name)
            .map(|(_, t)| t.as_str())
    }

    /// Writes what a pod of each start-up service account sees under
    /// `/var/run/secrets/kubernetes.io/serviceaccount` (`token`, `ca.crt`, `namespace`) into
    /// `DIR/NAMESPACE/NAME/`, plus a `kubeconfig` built from them; the first account's files
    /// also go straight into `DIR`.
    pub fn write_in_cluster(&self, dir: &std::path::Path, addr: SocketAddr) -> std::io::Result<()> {
        let ca = self
            .security
            .as_ref()
            .map(|s| s.tls.ca_pem.clone())
            .unwrap_or_default();
        for (i, ((ns, name), token)) in self.service_account_tokens.iter().enumerate() {
            let sub = dir.join(ns).join(name);
            let mut targets = vec![sub];
            if i == 0 {
                targets.push(dir.to_path_buf());
            }
            for d in targets {
                std::fs::create_dir_all(&d)?;
                std::fs::write(d.join("token"), token)?;
                std::fs::write(d.join("ca.crt"), &ca)?;
                std::fs::write(d.join("namespace"), ns)?;
                let kc = if self.security.is_some() {
                    workload::kubeconfig_with(&self.url(addr), &ca, token, ns)
                } else {
                    workload::kubeconfig(&self.url(addr))
                };
                std::fs::write(d.join("kubeconfig"), kc)?;
            }
        }
        Ok(())
    }
}

/// Serves on `listener` and runs the control loops until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    prepared: Prepared,
    config: &ClusterConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let store = prepared.store.clone();
    let tls = prepared
        .security
        .as_ref()
        .map(|s| s.tls.server_config())
        .transpose()
        .map_err(std::io::Error::other)?;
    let state = Arc::new(api::ApiState {
        store: store.clone(),
        server: addr.to_string(),
        tokens: prepared.tokens.clone(),
        secure: prepared.security.is_some(),
        faults: prepared.faults.clone(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let loops = LoopConfig {
        max_pods: config.max_pods,
        pod_start_delay: config.pod_start_delay,
        autoscaler: config.autoscaler.clone(),
    };
    let mut loop_stop = stop_rx.clone();
    let control = tokio::spawn(controllers::run(store, loops, async move {
        let _ = loop_stop.wait_for(|s| *s).await;
    }));
    let result = match tls {
        Some(tls) => {
            tls_server::serve(listener, tls, api::router(state), async move {
                shutdown.await;
                let _ = stop_tx.send(true);
            })
            .await
        }
        None => {
            // Like Go's net/http (and so the real API server), answer without Nagle's delay.
            axum::serve(sih_sim_serve::without_nagle(listener), api::router(state))
                .with_graceful_shutdown(async move {
                    shutdown.await;
                    let _ = stop_tx.send(true);
                })
                .await
        }
    };
    let _ = control.await;
    result
}

/// A cluster running in this process, for tests and the demo. Stops when dropped.
pub struct RunningCluster {
    server: sih_sim_serve::Running,
    prepared: Prepared,
}

impl RunningCluster {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn url(&self) -> String {
        self.prepared.url(self.addr())
    }

    /// Direct access to the objects, for assertions and benchmarks.
    pub fn store(&self) -> &Arc<Store> {
        &self.prepared.store
    }

    /// The admin's kubeconfig.
    pub fn kubeconfig(&self) -> String {
        self.prepared.kubeconfig(self.addr())
    }

    /// Faults on demand, as `/_sim/faults` sets them.
    pub fn faults(&self) -> &Arc<faults::Faults> {
        &self.prepared.faults
    }

    /// What happened: every request and every pod's end.
    pub fn journal(&self) -> &journal::Journal {
        &self.prepared.store.journal
    }

    /// The instance behind `node` is gone: NotReady now, deleted after `delete_after`.
    pub fn terminate_node(&self, node: &str, delete_after: Duration) -> Result<(), String> {
        let at = jiff::Timestamp::now() + delete_after;
        self.prepared
            .store
            .write(|tx| controllers::nodes::terminate(tx, node, at))
            .map_err(|e| e.message)
    }

    /// The instance behind `node` ends at `at` (a spot notice's deadline): NotReady then,
    /// deleted `delete_after` later.
    pub fn terminate_node_at(
        &self,
        node: &str,
        at: jiff::Timestamp,
        delete_after: Duration,
    ) -> Result<(), String> {
        self.prepared
            .store
            .write(|tx| controllers::nodes::schedule_termination(tx, node, at, delete_after))
            .map_err(|e| e.message)
    }

    /// The CA certificate (PEM) clients must trust, with `tls`.
    pub fn ca_pem(&self) -> Option<&str> {
        self.prepared
            .security
            .as_ref()
            .map(|s| s.tls.ca_pem.as_str())
    }

    pub fn admin_token(&self) -> Option<&str> {
        self.prepared
            .security
            .as_ref()
            .map(|s| s.admin_token.as_str())
    }

    /// The token of a start-up service account.
    pub fn token_of(&self, namespace: &str, name: &str) -> Option<&str> {
        self.prepared.token_of(namespace, name)
    }

    /// A kubeconfig that authenticates with `token` (with `tls`).
    pub fn kubeconfig_for(&self, token: &str) -> String {
        match self.ca_pem() {
            Some(ca) => workload::kubeconfig_with(&self.url(), ca, token, "default"),
            None => workload::kubeconfig(&self.url()),
        }
    }

    pub fn write_in_cluster(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.prepared.write_in_cluster(dir, self.addr())
    }

    pub async fn stop(self) -> std::io::Result<()> {
        self.server.stop().await
    }
}

/// Starts a cluster on `listen` (port 0 picks a free port) in the current runtime.
pub async fn start(config: ClusterConfig, listen: SocketAddr) -> Result<RunningCluster, String> {
    let prepared = prepare(&config)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let served = prepared.clone();
    let server = sih_sim_serve::Running::spawn(listener, |l, stop| async move {
        serve(l, served, &config, stop.wait()).await
    })
    .map_err(|e| e.to_string())?;
    Ok(RunningCluster { server, prepared })
}
