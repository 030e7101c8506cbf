//! `imds`: the agent for one node. Wires the metadata client, the Kubernetes client, the admin
//! listener and the reporters around the poll loop in `agent`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use sih_imds::{ImdsClient, ImdsConfig, InstanceIdentity};
use sih_report::webhook::{self, TemplateData};
use sih_report::{EventReporter, Metrics, Reporters, Update, Webhook, WebhookConfig};
use tokio::sync::mpsc::UnboundedSender;

use crate::agent::health::Health;
use crate::agent::{Agent, AgentConfig, admin, wait_for_identity};
use crate::cli::{ImdsArgs, ReportFlags};
use crate::commands::drain::drain_config;

pub async fn run(args: ImdsArgs) -> anyhow::Result<()> {
    run_until(args, crate::signals::shutdown(), None).await
}

/// `k=v,k2=v2`.
pub fn parse_annotations(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| anyhow!("--events-extra-annotations: {p:?} is not k=v"))
        })
        .collect()
}

/// The webhook, if one is configured; its template is checked now.
pub fn webhook_from(flags: &ReportFlags) -> anyhow::Result<Option<Webhook>> {
    let Some(url) = flags
        .webhook_url
        .clone()
        .or_else(|| flags.slack_url.clone())
    else {
        return Ok(None);
    };
    let template = match (&flags.webhook_template, &flags.webhook_template_file) {
        (Some(t), _) => t.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --webhook-template-file {}", path.display()))?,
        (None, None) => webhook::DEFAULT_TEMPLATE.to_owned(),
    };
    let config = WebhookConfig {
        url,
        template,
        headers: webhook::parse_headers(&flags.webhook_headers)?,
        proxy: flags.webhook_proxy.clone(),
        timeout: flags.webhook_timeout,
        attempts: flags.webhook_attempts,
        ..WebhookConfig::default()
    };
    Ok(Some(Webhook::new(config)?))
}

/// Fields every webhook message shares: the cluster and the instance.
pub fn template_base(cluster: &str, id: &InstanceIdentity) -> TemplateData {
    let mut data = TemplateData::new();
    data.insert("ClusterName", cluster.to_owned());
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
    let webhook = webhook_from(&args.report)?;
    let annotations = parse_annotations(&args.report.events_extra_annotations)?;
    if args.dry_run && webhook.is_some() {
        tracing::info!("dry run: webhook messages are logged, not sent");
    }
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(args.poll_interval));
    let probes = args
        .report
        .probes_listen
        .map(|a| (a, args.report.probes_path.clone()));
    let admin = admin::start(
        args.report.admin_listen,
        probes,
        metrics.clone(),
        health.clone(),
    )
    .await?;
    tracing::info!(addr = %admin, "admin listener: /metrics /healthz /readyz");

    let started = tokio::time::Instant::now();
    let Some(identity) = wait_for_identity(&imds, &health, &mut stop).await else {
        return Ok(());
    };
    tracing::info!(instance_id = %identity.instance_id, instance_type = %identity.instance_type,
        zone = %identity.availability_zone, took_ms = started.elapsed().as_millis() as u64,
        "instance identity read");

    let events = (args.report.kubernetes_events && !args.dry_run).then(|| {
        EventReporter::new(client.clone(), &args.node_name, args.me.pod_name.clone())
            .with_annotations(annotations)
    });
    let reporters = Reporters {
        source: "imds",
        metrics: metrics.clone(),
        events,
        webhook: webhook.filter(|_| !args.dry_run).map(Arc::new),
        template_base: template_base(&args.report.cluster_name, &identity),
        webhook_patience: args.drain_budget,
        tap,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let reporting = tokio::spawn(reporters.run(rx));

    let config = AgentConfig {
        node: args.node_name.clone(),
        poll_interval: args.poll_interval,
        policy: args.actions.policy(),
        drain: drain_config(&args.drain, args.me.own_pod(), true),
        taint_effect: args.drain.taint_effect.clone(),
        drain_budget: args.drain_budget,
        out_of_service_taint: args.out_of_service_taint,
        dry_run: args.dry_run,
        uptime_file: args.uptime_file.clone(),
    };
    let agent = Agent::new(config, imds, client, identity, tx, health, metrics);
    let result = agent.run(stop).await;
    // Let the last messages (a drain's end, a webhook still retrying) go out, within reason.
    if tokio::time::timeout(std::time::Duration::from_secs(10), reporting)
        .await
        .is_err()
    {
        tracing::warn!("reporters still busy after 10s; stopping anyway");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_annotations_are_pairs() {
        assert_eq!(
            parse_annotations("team=infra, env = prod").unwrap(),
            BTreeMap::from([
                ("team".to_owned(), "infra".to_owned()),
                ("env".to_owned(), "prod".to_owned())
            ])
        );
        assert!(parse_annotations("").unwrap().is_empty());
        assert!(parse_annotations("novalue").is_err());
    }
}
