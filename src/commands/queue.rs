//! `queue`: the cluster-wide controller. Wires the AWS configuration, the SQS queue, the
//! watched node index, the admin listener and the reporters around `controller`.

use std::sync::Arc;

use anyhow::Context;
use sih_report::{EventReporter, Metrics, Reporters};

use crate::agent::admin;
use crate::agent::health::Health;
use crate::cli::QueueArgs;
use crate::commands::drain::drain_config;
use crate::commands::imds::{parse_annotations, webhook_from};
use crate::controller::{Controller, ControllerConfig};

pub async fn run(args: QueueArgs) -> anyhow::Result<()> {
    let client = sih_node::client(args.kube.kubeconfig.as_deref()).await?;
    let webhook = webhook_from(&args.report)?;
    let annotations = parse_annotations(&args.report.events_extra_annotations)?;
    let metrics = Arc::new(Metrics::new());
    // One receive can wait 20 s: stalled means no receive completed for a good while.
    let health = Arc::new(Health::new(std::time::Duration::from_secs(20)));
    let probes = args
        .report
        .probes_listen
        .map(|a| (a, args.report.probes_path.clone()));
    let addr = admin::start(
        args.report.admin_listen,
        probes,
        metrics.clone(),
        health.clone(),
    )
    .await?;
    tracing::info!(addr = %addr, "admin listener: /metrics /healthz /readyz");

    let region = args
        .aws_region
        .clone()
        .or_else(|| sih_queue::sqs::region_of_queue_url(&args.queue_url));
    let aws = sih_queue::sqs::aws_config(region, args.aws_endpoint.clone()).await;
    let queue = sih_queue::Queue::new(&aws, &args.queue_url);
    let (index, _watch) = sih_node::watch_nodes(client.clone()).await;
    tracing::info!(nodes = index.len(), queue = %args.queue_url, "node index ready");

    let events = (args.report.kubernetes_events && !args.dry_run).then(|| {
        // Each Event goes on the notice's node; the controller's pod reports them.
        let reporter = args
            .me
            .pod_name
            .clone()
            .unwrap_or_else(|| "queue-controller".into());
        EventReporter::new(client.clone(), "", Some(reporter)).with_annotations(annotations)
    });
    let mut base = sih_report::webhook::TemplateData::new();
    base.insert("ClusterName", args.report.cluster_name.clone());
    let reporters = Reporters {
        source: "queue",
        metrics: metrics.clone(),
        events,
        webhook: webhook.filter(|_| !args.dry_run).map(Arc::new),
        template_base: base,
        webhook_patience: args.drain_budget,
        tap: None,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let reporting = tokio::spawn(reporters.run(rx));
    let config = ControllerConfig {
        policy: args.actions.policy(),
        drain: drain_config(&args.drain, args.me.own_pod(), true),
        taint_effect: args.drain.taint_effect.clone(),
        drain_budget: args.drain_budget,
        out_of_service_taint: args.out_of_service_taint,
        dry_run: args.dry_run,
        workers: args.workers,
        visibility: args.visibility_timeout,
        heartbeat_interval: Some(args.heartbeat_interval).filter(|d| !d.is_zero()),
        complete_delay: args.complete_lifecycle_action_delay,
        launch_ready_timeout: args.launch_ready_timeout,
    };
    let hooks = sih_queue::Hooks::new(&aws);
    // Replicas coordinate through Leases in our own namespace; the claim outlives a missed
    // renewal by three visibility periods.
    let holder = args
        .me
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("queue-controller-{}", std::process::id()));
    let claims = (!args.dry_run).then(|| {
        sih_node::Claims::new(
            client.clone(),
            args.me.pod_namespace.as_deref().unwrap_or("default"),
            &holder,
            args.visibility_timeout * 3,
        )
    });
    Controller::new(
        config, queue, hooks, claims, client, index, tx, metrics, health,
    )
    .run(crate::signals::shutdown())
    .await;
    tokio::time::timeout(std::time::Duration::from_secs(10), reporting)
        .await
        .context("reporters still busy after 10s")?
        .context("reporters failed")?;
    Ok(())
}
