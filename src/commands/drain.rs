//! `drain NODE` and `undrain NODE`: the node actions by hand, with live progress lines and a
//! summary. Exit status 0 only when every pod left before the deadline.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use sih_core::{DrainPolicy, Notice, PodFacts, plan_drain};
use sih_node::{DrainConfig, FenceSpec, Progress};
use tokio::time::Instant;

use crate::cli::{DrainCommandArgs, DrainFlags, OnPdbDeadline, UndrainArgs};

/// `90s` from now, or an RFC 3339 time.
fn parse_deadline(s: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let d = crate::cli::parse_duration(s)
        .map_err(|e| anyhow!("--deadline: {e}; or give an RFC 3339 time"))?;
    Ok(now + d)
}

pub fn drain_config(
    flags: &DrainFlags,
    own_pod: Option<(String, String)>,
    hard_deadline: bool,
) -> DrainConfig {
    DrainConfig {
        policy: DrainPolicy {
            grace_override: flags.pod_termination_grace_period.filter(|g| *g >= 0),
            margin: flags.deadline_margin,
            delete_at_deadline: flags.on_pdb_deadline == OnPdbDeadline::Delete,
        },
        max_concurrent: flags.max_concurrent_evictions,
        own_pod,
        hard_deadline,
    }
}

fn line(start: Instant, what: impl std::fmt::Display) {
    println!("{:>+8.3}s  {what}", start.elapsed().as_secs_f64());
}

fn describe(p: &Progress) -> String {
    match p {
        Progress::Planned {
            evict,
            terminating,
            skipped,
        } => format!(
            "planned: {evict} to evict, {terminating} already terminating, {skipped} staying"
        ),
        Progress::Skipped { pod, reason } => format!("stays    {pod} ({})", reason.as_str()),
        Progress::Warning { pod, reason } => format!("warning  {pod}: {reason}"),
        Progress::Evicted { pod, grace } => format!("evicted  {pod} (grace {grace}s)"),
        Progress::BlockedByBudget {
            pod,
            attempt,
            message,
        } => format!("blocked  {pod} by its PodDisruptionBudget (attempt {attempt}): {message}"),
        Progress::DeletedAtDeadline { pod, grace } => {
            format!("deleted  {pod} at the deadline (grace {grace}s)")
        }
        Progress::Gone { pod } => format!("gone     {pod}"),
        Progress::Failed { pod, reason } => format!("FAILED   {pod}: {reason}"),
    }
}

pub async fn run(args: DrainCommandArgs) -> anyhow::Result<()> {
    let now = Timestamp::now();
    let deadline_at = parse_deadline(&args.deadline, now)?;
    let left = Duration::try_from(deadline_at.duration_since(now)).unwrap_or_default();
    let client = sih_node::client(args.kube.kubeconfig.as_deref()).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes
        .get(&args.node)
        .await
        .with_context(|| format!("node {:?}", args.node))?;
    let previous = sih_node::fence::record_of(&node).filter(|r| r.kind == args.kind);
    let notice = Notice {
        kind: args.kind,
        id: previous.map_or_else(|| format!("manual-{}", now.as_second()), |r| r.id),
        instance_id: None,
        node: args.node.clone(),
        detected: now,
        deadline: Some(deadline_at),
    };
    let effect = args
        .drain
        .taint_effect
        .clone()
        .unwrap_or_else(|| args.kind.default_taint_effect().to_owned());
    let config = drain_config(&args.drain, args.me.own_pod(), args.kind.deadline_is_hard());
    let start = Instant::now();
    let deadline = start + left;

    if args.dry_run {
        line(
            start,
            format!(
                "dry run: would fence {} with taint {}={}:{effect}, cordon it and exclude it from load balancers",
                args.node,
                args.kind.taint_key(),
                notice.id
            ),
        );
        let pods = Api::<Pod>::all(client)
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", args.node)))
            .await?;
        let facts: Vec<PodFacts> = pods.items.iter().map(sih_node::drain::facts_of).collect();
        let own = config
            .own_pod
            .as_ref()
            .map(|(n, p)| (n.as_str(), p.as_str()));
        let plan = plan_drain(facts, own);
        for p in plan.first.iter().chain(&plan.last) {
            line(
                start,
                format!(
                    "dry run: would evict {}/{} (grace {}s)",
                    p.namespace,
                    p.name,
                    config.policy.grace(p.grace_seconds, left)
                ),
            );
        }
        for (p, why) in &plan.skipped {
            line(
                start,
                format!(
                    "dry run: {}/{} stays ({})",
                    p.namespace,
                    p.name,
                    why.as_str()
                ),
            );
        }
        return Ok(());
    }

    let events =
        sih_report::EventReporter::new(client.clone(), &args.node, args.me.pod_name.clone());
    let fenced = sih_node::fence(
        &nodes,
        &args.node,
        &FenceSpec {
            notice: notice.clone(),
            effect: effect.clone(),
            cordon: true,
        },
    )
    .await?;
    line(
        start,
        format!(
            "{} {} (taint {}={}:{effect}, cordoned, excluded from external load balancers); deadline in {:.0}s",
            if fenced.changed {
                "fenced"
            } else {
                "already fenced"
            },
            args.node,
            args.kind.taint_key(),
            notice.id,
            left.as_secs_f64()
        ),
    );
    if fenced.changed {
        events.notice(&notice).await;
        events.fenced(&notice, &effect, true).await;
    }
    events.drain_started(left.as_secs_f64()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let node_name = args.node.clone();
    let drain =
        tokio::spawn(
            async move { sih_node::drain(client, &node_name, deadline, config, tx).await },
        );
    // One progress stream: each event is printed and recorded as it happens.
    while let Some(p) = rx.recv().await {
        line(start, describe(&p));
        events.progress(&p).await;
    }
    let report = drain.await.context("the drain task failed")??;
    events.drain_finished(&report).await;
    println!(
        "drain of {}: {} evicted, {} deleted at the deadline, {} budget refusals, {} failed, {} remaining; took {:.1}s, {:.1}s left before the deadline",
        args.node,
        report.evicted,
        report.deleted_at_deadline,
        report.budget_refusals,
        report.failed.len(),
        report.remaining.len(),
        report.took.as_secs_f64(),
        report.slack_ms as f64 / 1000.0
    );
    if !report.succeeded() {
        let names: Vec<String> = report.remaining.iter().map(ToString::to_string).collect();
        bail!(
            "{} pod(s) did not leave {} before the deadline: {}",
            names.len(),
            args.node,
            names.join(", ")
        );
    }
    Ok(())
}

pub async fn undrain(args: UndrainArgs) -> anyhow::Result<()> {
    let client = sih_node::client(args.kube.kubeconfig.as_deref()).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let out = sih_node::unfence(&nodes, &args.node, args.kind).await?;
    if out.changed {
        sih_report::EventReporter::new(client, &args.node, args.me.pod_name.clone())
            .unfenced("undrained by hand")
            .await;
    }
    println!(
        "{} {}",
        if out.changed {
            "unfenced"
        } else {
            "nothing of ours on"
        },
        args.node
    );
    Ok(())
}
