//! `simulate cluster`: runs the Kubernetes API server simulator until SIGTERM or Ctrl-C.

use std::io::Write;

use anyhow::{Context, anyhow};
use sih_sim_cluster::{ClusterConfig, workload};

use crate::cli::SimulateClusterArgs;

pub async fn run(args: SimulateClusterArgs) -> anyhow::Result<()> {
    let objects = match &args.workload {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --workload {}", path.display()))?;
            Some(
                workload::parse(&text)
                    .map_err(|e| anyhow!("--workload {}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let config = ClusterConfig {
        nodes: args.nodes,
        spot_nodes: args.spot_nodes,
        workload: objects,
        max_pods: args.max_pods,
        pod_start_delay: args.pod_start_delay,
        tls: args.tls,
        service_accounts: args.service_account.clone(),
        faults: args.fault.clone(),
        autoscaler: args.autoscaler.clone(),
    };
    if args.in_cluster_dir.is_some() && args.service_account.is_empty() {
        anyhow::bail!("--in-cluster-dir needs at least one --service-account NAMESPACE/NAME");
    }
    let prepared = sih_sim_cluster::prepare(&config).map_err(|e| anyhow!(e))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let url = prepared.url(addr);
    if let Some(path) = &args.kubeconfig_out {
        std::fs::write(path, prepared.kubeconfig(addr))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(dir) = &args.in_cluster_dir {
        prepared
            .write_in_cluster(dir, addr)
            .with_context(|| format!("cannot write into {}", dir.display()))?;
    }
    // The first stdout line is the address: scripts and tests read it. Written in one go, and
    // a reader that has gone away (closed pipe) must not stop the server.
    let mut banner = format!("listening on {url}\n");
    if let Some(dir) = &args.in_cluster_dir {
        banner.push_str(&format!(
            "in-cluster: KUBERNETES_SERVICE_HOST={} KUBERNETES_SERVICE_PORT={} files in {} (or --kubeconfig {})\n",
            addr.ip(),
            addr.port(),
            dir.display(),
            dir.join("kubeconfig").display()
        ));
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    drop(out);
    for f in &args.fault {
        tracing::info!(fault = %serde_json::to_string(f).unwrap_or_default(), "fault active from the start");
    }
    tracing::info!(nodes = args.nodes, spot_nodes = args.spot_nodes,
        kubeconfig = %args.kubeconfig_out.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into()),
        "cluster simulator ready");
    sih_sim_cluster::serve(
        listener,
        prepared,
        &config,
        spot_interrupt_handler::signals::shutdown(),
    )
    .await
    .context("cluster simulator stopped with an error")
}
