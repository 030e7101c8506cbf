//! What every mode wires the same way (`imds`, `queue`, and `drain` by hand): the admin
//! listener (metrics, probes) started first, the reporters (logs, Kubernetes Events, webhooks)
//! consuming the one update stream, and the responder's and the drain's configuration from
//! the flags they share.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use sih_core::DrainPolicy;
use sih_node::DrainConfig;
use sih_report::webhook;
use sih_report::{EventReporter, Metrics, Reporters, SharedFacts, Update, Webhook, WebhookConfig};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use crate::admin;
use crate::admin::health::Health;
use crate::cli::{
    DrainFlags, NoticeFlags, OnPdbDeadline, ReportFlags, ReserveCapacity, ReserveFlags,
};
use crate::responder::ResponderConfig;

/// Metrics, health and the admin listener. `stall_interval`: how often the main loop
/// normally completes a round (the liveness probe fails when it stops).
pub async fn start_admin(
    report: &ReportFlags,
    health: Health,
) -> anyhow::Result<(Arc<Metrics>, Arc<Health>)> {
    admin::raise_open_files_limit();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(health.counting(metrics.clone()));
    let probes = report
        .probes_listen
        .map(|a| (a, report.probes_path.clone()));
    let addr = admin::start(report.admin_listen, probes, metrics.clone(), health.clone()).await?;
    tracing::info!(addr = %addr, "admin listener: /metrics /healthz /readyz");
    Ok((metrics, health))
}

/// Who reports, and what every message about it shares.
pub struct Reporting<'a> {
    /// `imds` or `queue`, the `source` metric label.
    pub name: &'static str,
    /// The node Events go on by default (queue mode: each notice's own).
    pub node: &'a str,
    /// The reporting instance named in Events (our pod).
    pub reporter: Option<String>,
    /// What webhook messages say beyond the notice (`ClusterName` is set here from the flags).
    pub facts: SharedFacts,
    /// Also receives every update (the demo's timeline).
    pub tap: Option<UnboundedSender<Update>>,
    /// The bound on each Kubernetes Event write.
    pub api_timeout: Duration,
    /// Features turned off for a missing permission (Events among them).
    pub off: sih_node::access::Switches,
}

/// What webhook messages say beyond the notice, filled in as it becomes known.
pub fn shared_facts() -> SharedFacts {
    Arc::default()
}

/// The drain's configuration from its flags.
pub fn drain_config(
    flags: &DrainFlags,
    own_pod: Option<(String, String)>,
    api_timeout: Duration,
) -> DrainConfig {
    DrainConfig {
        policy: DrainPolicy {
            grace_override: flags.pod_termination_grace_period.filter(|g| *g >= 0),
            margin: flags.deadline_margin,
            delete_at_deadline: flags.on_pdb_deadline == OnPdbDeadline::Delete,
        },
        max_concurrent: flags.max_concurrent_evictions as usize,
        own_pod,
        api_timeout,
        lb_drain_delay: flags.lb_drain_delay,
        surge_selector: flags.surge_selector.clone(),
        // Queue mode sets it (`--lb-target-health`), with the AWS clients it has.
        target_health: None,
        // Both modes set it (`--reserve-capacity`), with the keeper they start.
        reserve: None,
        // Both modes set it, shared with the start's look at the permissions.
        off: Default::default(),
    }
}

/// Capacity first, when the flags ask for it (never in a dry run: it writes pods): the
/// drain's settings, with the one keeper of the placeholders' TTL started here. `scope` is the
/// node whose placeholders this process keeps (the agent), or every node's (queue mode).
pub fn reservations(
    flags: &ReserveFlags,
    client: &kube::Client,
    scope: Option<String>,
    api_timeout: Duration,
    dry_run: bool,
) -> Option<sih_node::reserve::Reservations> {
    if dry_run || flags.reserve_capacity == ReserveCapacity::Off {
        return None;
    }
    let asked = Arc::new(tokio::sync::Notify::new());
    // Its first look finds a previous life's placeholders: kept until their TTL, or removed.
    tokio::spawn(sih_node::reserve::keep(
        client.clone(),
        scope,
        flags.reserve_ttl,
        api_timeout,
        asked.clone(),
    ));
    Some(sih_node::reserve::Reservations {
        config: sih_node::reserve::ReserveConfig::new(
            flags.reserve_capacity == ReserveCapacity::All,
            flags.reserve_image.clone(),
            flags.reserve_ttl,
            api_timeout,
        ),
        asked,
    })
}

/// What the flags both modes share ask of the permissions (`permissions.rs`).
pub fn wanted(
    drain: &DrainFlags,
    act: &NoticeFlags,
    report: &ReportFlags,
    reserve: &ReserveFlags,
) -> crate::commands::permissions::Wanted {
    crate::commands::permissions::Wanted {
        node_index: false,
        deadline_deletion: drain.on_pdb_deadline == OnPdbDeadline::Delete,
        events: report.kubernetes_events && !act.dry_run,
        reserve: reserve.reserve_capacity != ReserveCapacity::Off && !act.dry_run,
        lb_endpoints: !drain.lb_drain_delay.is_zero(),
    }
}

/// What the responder needs from the flags both modes (and `drain`) share.
pub fn responder_config(
    source: sih_core::Source,
    policy: sih_core::ActionPolicy,
    drain: &DrainFlags,
    act: &NoticeFlags,
    own_pod: Option<(String, String)>,
    api_timeout: Duration,
) -> ResponderConfig {
    ResponderConfig {
        source,
        rules: sih_core::PlanRules {
            policy,
            drain_budget: act.drain_budget,
            taint_effect: drain.taint_effect.clone(),
        },
        drain: drain_config(drain, own_pod, api_timeout),
        out_of_service_taint: act.out_of_service_taint,
        dry_run: act.dry_run,
        booted_at: None,
        resume_patience: Duration::from_secs(2),
        forget_idle: None,
        resume: true,
        max_drains: None,
        rebalance_ttl: Some(act.rebalance_ttl).filter(|d| !d.is_zero()),
    }
}

/// The reporters' configuration, checked before anything else happens (no listener, no
/// cluster, no metadata read): a mistake fails the start with its reason, never an
/// interruption later.
pub struct Telling {
    webhook: Option<Webhook>,
    annotations: BTreeMap<String, String>,
}

impl Telling {
    pub fn check(report: &ReportFlags) -> anyhow::Result<Self> {
        Ok(Self {
            webhook: webhook_from(report)?,
            annotations: parse_annotations(&report.events_extra_annotations)?,
        })
    }

    /// No webhook, no extra annotations (a drain by hand).
    pub fn quiet() -> Self {
        Self {
            webhook: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// Starts the reporters; in dry-run no Event or webhook is written (webhook messages are
/// logged). Returns the stream's sender and the task to `finish`.
pub fn spawn_reporters(
    telling: Telling,
    report: &ReportFlags,
    act: &NoticeFlags,
    client: &kube::Client,
    metrics: &Arc<Metrics>,
    source: Reporting<'_>,
) -> (UnboundedSender<Update>, JoinHandle<()>) {
    let told = Told {
        events: report.kubernetes_events,
        dry_run: act.dry_run,
        cluster_name: report.cluster_name.clone(),
        patience: act.drain_budget,
    };
    spawn_told(telling, told, client, metrics, source)
}

/// What a command tells beyond its webhook and annotations.
pub struct Told {
    /// Kubernetes Events are written (never in a dry run).
    pub events: bool,
    pub dry_run: bool,
    pub cluster_name: String,
    /// How long a webhook may keep retrying a message.
    pub patience: Duration,
}

/// [`spawn_reporters`] for a command without the report flags (`drain` by hand).
pub fn spawn_told(
    telling: Telling,
    told: Told,
    client: &kube::Client,
    metrics: &Arc<Metrics>,
    source: Reporting<'_>,
) -> (UnboundedSender<Update>, JoinHandle<()>) {
    let Telling {
        webhook,
        annotations,
    } = telling;
    if told.dry_run && webhook.is_some() {
        tracing::info!("dry run: webhook messages are logged, not sent");
    }
    let events = (told.events && !told.dry_run).then(|| {
        EventReporter::new(client.clone(), source.node, source.reporter)
            .with_annotations(annotations)
            .with_timeout(source.api_timeout)
    });
    source
        .facts
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .cluster_name = told.cluster_name;
    let reporters = Reporters {
        source: source.name,
        metrics: metrics.clone(),
        events,
        webhook: webhook.map(Arc::new),
        webhook_dry_run: told.dry_run,
        facts: source.facts,
        webhook_patience: told.patience,
        tap: source.tap,
        off: source.off,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (tx, tokio::spawn(reporters.run(rx)))
}

/// Lets the last messages (a drain's end, a webhook still retrying) go out, for a moment: a
/// process told to stop stops within about a second, whatever an endpoint does. The stream
/// must be closed first (every sender dropped).
pub async fn finish(reporting: JoinHandle<()>) {
    if tokio::time::timeout(Duration::from_secs(1), reporting)
        .await
        .is_err()
    {
        tracing::warn!("reporters still busy after 1s; stopping anyway");
    }
}

/// `k=v,k2=v2`.
pub fn parse_annotations(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    crate::cli::parse_label_pairs(s).map_err(|e| anyhow!("--events-extra-annotations: {e}"))
}

/// The webhook, if one is configured; its URL, template and headers are checked now, and a
/// webhook setting given without a URL is a mistake said now (it would silently do nothing).
pub fn webhook_from(flags: &ReportFlags) -> anyhow::Result<Option<Webhook>> {
    let Some(url) = flags
        .webhook_url
        .clone()
        .or_else(|| flags.slack_url.clone())
        .filter(|u| !u.trim().is_empty())
    else {
        let without_url = [
            ("--webhook-template", flags.webhook_template.is_some()),
            (
                "--webhook-template-file",
                flags.webhook_template_file.is_some(),
            ),
            (
                "--webhook-headers",
                !flags.webhook_headers.trim().is_empty(),
            ),
            ("--webhook-proxy", flags.webhook_proxy.is_some()),
        ];
        if let Some((flag, _)) = without_url.iter().find(|(_, given)| *given) {
            anyhow::bail!(
                "{flag} is set but no --webhook-url (WEBHOOK_URL): nothing would be sent"
            );
        }
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
        nth_fields: flags.webhook_nth_fields,
        ..WebhookConfig::default()
    };
    Ok(Some(Webhook::new(config)?))
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
