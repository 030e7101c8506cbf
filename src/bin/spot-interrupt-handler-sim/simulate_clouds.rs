//! `simulate gce` and `simulate azure`: the other clouds' metadata simulators, until SIGTERM
//! or Ctrl-C.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use sih_sim_clouds::{azure, gce};

use crate::cli::{SimulateAzureArgs, SimulateGceArgs};

pub fn gce_config(args: &SimulateGceArgs) -> gce::Config {
    gce::Config {
        identity: gce::Identity {
            id: args.instance_id.clone(),
            name: args.instance_name.clone(),
            zone: args.zone.clone(),
            project_id: args.project.clone(),
            machine_type: args.machine_type.clone(),
            preemptible: args.preemptible,
            ..gce::Identity::default()
        },
        scenario: gce::Scenario {
            preempt_after: args.preempt_after,
            maintenance: args
                .maintenance_event
                .clone()
                .map(|v| (v, args.maintenance_after)),
        },
    }
}

pub fn azure_config(args: &SimulateAzureArgs) -> anyhow::Result<azure::Config> {
    let mut events: Vec<azure::PlannedEvent> = Vec::new();
    for kind in &args.event {
        if !azure::EVENT_TYPES.contains(&kind.as_str()) {
            anyhow::bail!(
                "--event {kind:?}: the types are {}",
                azure::EVENT_TYPES.join(", ")
            );
        }
        events.push(azure::PlannedEvent {
            kind: kind.clone(),
            after: args.event_after,
            notice: args.event_notice,
        });
    }
    if let Some(after) = args.preempt_after {
        events.push(azure::PlannedEvent {
            kind: "Preempt".into(),
            after,
            notice: Duration::from_secs(30),
        });
    }
    Ok(azure::Config {
        identity: azure::Identity {
            name: args.vm_name.clone(),
            vm_id: args.vm_id.clone(),
            priority: args.priority.clone(),
            ..azure::Identity::default()
        },
        events,
        first_call_delay: args.first_call_delay,
    })
}

/// Binds and prints the address first (scripts and tests read the first stdout line).
async fn bind(listen: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on http://{addr}").and_then(|()| out.flush());
    Ok(listener)
}

pub async fn gce(args: SimulateGceArgs) -> anyhow::Result<()> {
    let config = gce_config(&args);
    let listener = bind(args.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(instance = %args.instance_name,
        "GCE metadata simulator ready; control API at http://{addr}/_sim/; watch with: \
         curl -s -H 'Metadata-Flavor: Google' 'http://{addr}/computeMetadata/v1/instance/preempted?wait_for_change=true'");
    gce::serve(
        listener,
        config,
        spot_interrupt_handler::signals::shutdown(),
    )
    .await
    .context("simulator stopped with an error")
}

pub async fn azure(args: SimulateAzureArgs) -> anyhow::Result<()> {
    let config = azure_config(&args)?;
    let listener = bind(args.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(vm = %args.vm_name,
        "Azure metadata simulator ready; control API at http://{addr}/_sim/; watch with: \
         curl -s -H 'Metadata: true' 'http://{addr}/metadata/scheduledevents?api-version=2020-07-01'");
    azure::serve(
        listener,
        config,
        spot_interrupt_handler::signals::shutdown(),
    )
    .await
    .context("simulator stopped with an error")
}
