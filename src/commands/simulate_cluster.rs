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
    };
    let store = sih_sim_cluster::populate(&config).map_err(|e| anyhow!(e))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    if let Some(path) = &args.kubeconfig_out {
        std::fs::write(path, workload::kubeconfig(&url))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    // The first stdout line is the address: scripts and tests read it.
    println!("listening on {url}");
    std::io::stdout().flush()?;
    tracing::info!(nodes = args.nodes, spot_nodes = args.spot_nodes,
        kubeconfig = ?args.kubeconfig_out, "cluster simulator ready");
    sih_sim_cluster::serve(listener, store, &config, crate::signals::shutdown())
        .await
        .context("cluster simulator stopped with an error")
}
