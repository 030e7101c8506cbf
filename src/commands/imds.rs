//! `imds`: the agent for one node. Wires the cloud's metadata source (EC2, GCE or Azure), the
//! responder, the admin listener and the reporters around the poll loop in `agent`.

use std::future::Future;
use std::sync::Arc;

use jiff::Timestamp;
use sih_core::Source;
use sih_imds::{ImdsClient, ImdsConfig};
use sih_report::Update;
use tokio::sync::mpsc::UnboundedSender;

use crate::agent::source::{Azure, Gce, Imds, NoticeSource};
use crate::agent::{Agent, AgentConfig};
use crate::cli::{Cloud, ImdsArgs};
use crate::commands::wiring;
use crate::responder::Responder;

pub async fn run(args: ImdsArgs) -> anyhow::Result<()> {
    run_until(args, crate::signals::shutdown(), None).await
}

/// When the instance booted, from `/proc/uptime`: notices recorded before it ended with a
/// reboot. `None` (with a warning) when it cannot be read.
fn booted_at(args: &ImdsArgs) -> Option<Timestamp> {
    let uptime = std::fs::read_to_string(&args.uptime_file)
        .ok()
        .and_then(|s| sih_core::tracker::parse_uptime(&s));
    match uptime {
        Some(up) => jiff::SignedDuration::try_from(up)
            .ok()
            .and_then(|up| Timestamp::now().checked_sub(up).ok()),
        None => {
            tracing::warn!(file = %args.uptime_file.display(),
                "cannot read the uptime; a reboot since a recorded notice cannot be told");
            None
        }
    }
}

/// The node that is this instance, when the agent is not told: found from the instance's
/// identity (tried for up to 30 s: the metadata service may not answer at once).
async fn own_node<S: NoticeSource>(
    source: &S,
    client: &kube::Client,
    api_timeout: std::time::Duration,
) -> anyhow::Result<String> {
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let identity = loop {
        match source.identity().await {
            Ok(id) => break id,
            Err(e) if tokio::time::Instant::now() >= until => {
                anyhow::bail!(
                    "--node-name is not set and the instance's identity cannot be read to find the node: {e}"
                )
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
        }
    };
    let found = sih_node::find_node(
        client,
        &identity.node_names,
        identity.provider_id.as_deref(),
        api_timeout,
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!("--node-name is not set and the node could not be looked up: {e}")
    })?;
    match found {
        Some(node) => {
            tracing::info!(%node, "found the node that is this instance");
            Ok(node)
        }
        None => anyhow::bail!(
            "--node-name is not set and no node is named {} or has providerID {}; set NODE_NAME (the DaemonSet sets it from spec.nodeName)",
            identity.node_names.join(" or "),
            identity.provider_id.as_deref().unwrap_or("(none)")
        ),
    }
}

/// Runs the agent until `stop` completes. `tap` also receives every update (the demo's
/// timeline).
pub async fn run_until(
    args: ImdsArgs,
    stop: impl Future<Output = ()>,
    tap: Option<UnboundedSender<Update>>,
) -> anyhow::Result<()> {
    let telling_config = wiring::Telling::check(&args.report)?;
    let policy = args
        .actions
        .policy(sih_core::ActionPolicy::default().state_change);
    let endpoint = args.endpoint();
    // Each source is built (and its endpoint checked) before anything else starts.
    match args.cloud {
        Cloud::Aws => {
            let imds = ImdsClient::new(ImdsConfig {
                endpoint,
                attempts: args.imds_attempts,
                request_timeout: args.imds_timeout,
                ..ImdsConfig::default()
            })?;
            run_source(
                args,
                telling_config,
                policy,
                Imds(Arc::new(imds)),
                stop,
                tap,
            )
            .await
        }
        Cloud::Gce => {
            let client = sih_clouds::gce::GceClient::new(sih_clouds::gce::GceConfig {
                endpoint,
                request_timeout: args.imds_timeout,
                watch_timeout: args.clouds.gce_watch_timeout,
            })?;
            let timing = sih_clouds::gce::notices::Timing {
                preemption_notice: args.clouds.gce_preemption_notice,
                maintenance_notice: args.clouds.gce_maintenance_notice,
            };
            run_source(
                args,
                telling_config,
                policy,
                Gce::new(client, timing),
                stop,
                tap,
            )
            .await
        }
        Cloud::Azure => {
            let client = sih_clouds::azure::AzureClient::new(sih_clouds::azure::AzureConfig {
                endpoint,
                request_timeout: args.imds_timeout,
                first_call_timeout: args.clouds.azure_first_call_timeout,
            })?;
            let rules = sih_clouds::azure::notices::AckRules {
                notified: args.clouds.azure_ack_notified,
                shared: args.clouds.azure_ack_shared,
            };
            let source = Azure::new(client, policy, rules);
            run_source(args, telling_config, policy, source, stop, tap).await
        }
    }
}

async fn run_source<S: NoticeSource>(
    args: ImdsArgs,
    telling_config: wiring::Telling,
    policy: sih_core::ActionPolicy,
    source: S,
    stop: impl Future<Output = ()>,
    tap: Option<UnboundedSender<Update>>,
) -> anyhow::Result<()> {
    let client = sih_node::client(args.kube.kubeconfig.as_deref()).await?;
    let (metrics, health) = wiring::start_admin(
        &args.report,
        // A long poll answers at least once per watch: the loop is stalled only past that.
        crate::admin::health::Health::new(match args.cloud {
            Cloud::Gce => args
                .poll_interval
                .max(args.clouds.gce_watch_timeout + args.imds_timeout),
            Cloud::Aws | Cloud::Azure => args.poll_interval,
        }),
    )
    .await?;
    let node = match args.node_name.clone().filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => own_node(&source, &client, args.kube.api_timeout).await?,
    };
    let off = sih_node::access::Switches::default();
    crate::commands::permissions::spawn_check(
        client.clone(),
        wiring::wanted(&args.drain, &args.act, &args.report, &args.reserve),
        off.clone(),
        metrics.clone(),
        args.kube.api_timeout,
    );
    let facts = wiring::shared_facts();
    let (tx, reporting) = wiring::spawn_reporters(
        telling_config,
        &args.report,
        &args.act,
        &client,
        &metrics,
        wiring::Reporting {
            // The agent's mode, whatever the cloud (`Cloud` says which).
            name: "imds",
            node: &node,
            reporter: args.me.pod_name.clone(),
            facts: facts.clone(),
            tap,
            api_timeout: args.kube.api_timeout,
            off: off.clone(),
        },
    );
    let mut config = wiring::responder_config(
        Source::Agent,
        policy,
        &args.drain,
        &args.act,
        args.me.own_pod(),
        args.kube.api_timeout,
    );
    config.booted_at = booted_at(&args);
    config.drain.off = off;
    // The agent keeps its own node's placeholders, never another's.
    config.drain.reserve = wiring::reservations(
        &args.reserve,
        &client,
        Some(node.clone()),
        args.kube.api_timeout,
        args.act.dry_run,
    );
    let (responder, _actor) = Responder::spawn(config, client, tx, health.clone());
    let agent = Agent {
        cfg: AgentConfig {
            node: node.clone(),
            poll_interval: args.poll_interval,
            dry_run: args.act.dry_run,
        },
        source,
        responder,
        health,
        metrics,
        facts,
    };
    let result = agent.run(stop).await;
    wiring::finish(reporting).await;
    result
}
