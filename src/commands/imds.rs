//! `imds`: the agent for one node. Wires the metadata client, the Kubernetes client, the admin
//! listener and the reporters around the poll loop in `agent`.

use std::future::Future;
use std::sync::Arc;

use sih_imds::{ImdsClient, ImdsConfig, InstanceIdentity};
use sih_report::Update;
use sih_report::webhook::TemplateData;
use tokio::sync::mpsc::UnboundedSender;

use crate::agent::{Agent, AgentConfig, wait_for_identity};
use crate::cli::ImdsArgs;
use crate::commands::drain::drain_config;
use crate::commands::telling;

pub async fn run(args: ImdsArgs) -> anyhow::Result<()> {
    run_until(args, crate::signals::shutdown(), None).await
}

/// Fields every webhook message of this agent shares: its instance.
pub fn template_base(id: &InstanceIdentity) -> TemplateData {
    let mut data = TemplateData::new();
    data.insert("InstanceType", id.instance_type.clone());
    data.insert("AvailabilityZone", id.availability_zone.clone());
    data.insert("Region", id.region.clone());
    let optional = [
        ("AccountId", id.document.account_id.clone()),
        ("InstanceLifeCycle", id.life_cycle.clone()),
        ("LocalHostname", id.local_hostname.clone()),
        ("LocalIP", id.local_ipv4.clone()),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            data.insert(k, v);
        }
    }
    data
}

/// Runs the agent until `stop` completes. `tap` also receives every update (the demo's
/// timeline).
pub async fn run_until(
    args: ImdsArgs,
    stop: impl Future<Output = ()>,
    tap: Option<UnboundedSender<Update>>,
) -> anyhow::Result<()> {
    let mut stop = std::pin::pin!(stop);
    let imds = Arc::new(ImdsClient::new(ImdsConfig {
        endpoint: args.imds_endpoint.clone(),
        attempts: args.imds_attempts.max(1),
        request_timeout: args.imds_timeout,
        ..ImdsConfig::default()
    })?);
    let client = sih_node::client(args.kube.kubeconfig.as_deref()).await?;
    let (metrics, health) = telling::start_admin(&args.report, args.poll_interval).await?;

    let started = tokio::time::Instant::now();
    let Some(identity) = wait_for_identity(&imds, &health, &mut stop).await else {
        return Ok(());
    };
    tracing::info!(instance_id = %identity.instance_id, instance_type = %identity.instance_type,
        zone = %identity.availability_zone, took_ms = started.elapsed().as_millis() as u64,
        "instance identity read");

    let (tx, reporting) = telling::spawn_reporters(
        &args.report,
        &args.act,
        &client,
        &metrics,
        telling::Source {
            name: "imds",
            node: &args.node_name,
            reporter: args.me.pod_name.clone(),
            template_base: template_base(&identity),
            tap,
        },
    )?;

    let config = AgentConfig {
        node: args.node_name.clone(),
        poll_interval: args.poll_interval,
        policy: args.actions.policy(),
        drain: drain_config(&args.drain, args.me.own_pod(), true),
        taint_effect: args.drain.taint_effect.clone(),
        drain_budget: args.act.drain_budget,
        out_of_service_taint: args.act.out_of_service_taint,
        dry_run: args.act.dry_run,
        uptime_file: args.uptime_file.clone(),
    };
    let agent = Agent::new(config, imds, client, identity, tx, health, metrics);
    let result = agent.run(stop).await;
    telling::finish(reporting).await;
    result
}
