//! `drain NODE` and `undrain NODE`: the node actions by hand, with live progress lines and a
//! summary. Exit status 0 only when every pod left before the deadline.

use std::time::Duration;

use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use sih_core::Notice;
use sih_node::{DrainReport, Progress};
use sih_report::Update;
use tokio::time::Instant;

use crate::commands::wiring;
use crate::responder::{Responder, Settled};

use crate::cli::{DrainCommandArgs, UndrainArgs};

/// `90s` from now, or an RFC 3339 time; never one that has already passed (a drain against
/// it could only delete, and used to report "-1.0s left" and exit 0).
fn parse_deadline(s: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    let at = match s.parse::<Timestamp>() {
        Ok(t) => t,
        Err(_) => {
            let d = crate::cli::parse_duration(s)
                .map_err(|e| anyhow!("--deadline: {e}; or give an RFC 3339 time"))?;
            jiff::SignedDuration::try_from(d)
                .ok()
                .and_then(|d| now.checked_add(d).ok())
                .ok_or_else(|| {
                    anyhow!("--deadline {s} is further away than any time we can write")
                })?
        }
    };
    if at <= now {
        anyhow::bail!("--deadline {s} has already passed (it is now {now}): give a time to come");
    }
    Ok(at)
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
        Progress::Surge { workload, what, .. } => format!("surge    {workload}: {what}"),
        Progress::LoadBalancers { what, .. } => format!("lb       {what}"),
        Progress::Reserved { what, .. } => format!("reserve  {what}"),
        Progress::InvalidChoice { pod, value } => format!(
            "warning  {pod}: spot-interrupt-handler/eviction {value:?} is not a choice; the default applies"
        ),
        Progress::Evicted { pod, grace } => format!("evicted  {pod} (grace {grace}s)"),
        Progress::BlockedByBudget {
            pod,
            attempt,
            message,
        } => format!("blocked  {pod} by its PodDisruptionBudget (attempt {attempt}): {message}"),
        Progress::DeletedAtDeadline { pod, grace } => {
            format!("deleted  {pod} at the deadline (grace {grace}s)")
        }
        Progress::Hastened { pod, grace } => {
            format!("hastened {pod} for a nearer deadline (grace {grace}s)")
        }
        Progress::Gone { pod } => format!("gone     {pod}"),
        Progress::Failed { pod, reason } => format!("FAILED   {pod}: {reason}"),
    }
}

/// `drain NODE`. About 100 lines: the command's whole story in order (check the node, fence
/// and drain through the responder, print as it goes, sum up, exit status), read best whole.
pub async fn run(args: DrainCommandArgs) -> anyhow::Result<()> {
    let now = Timestamp::now();
    let deadline_at = parse_deadline(&args.deadline, now)?;
    let left = Duration::try_from(deadline_at.duration_since(now)).unwrap_or_default();
    let client = sih_node::client(args.kube.kubeconfig.as_deref()).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let timeout = args.kube.api_timeout;
    match sih_node::bounded(timeout, "get node", nodes.get_opt(&args.node)).await? {
        Ok(Some(_)) => {}
        Ok(None) => bail!("node {:?} not found", args.node),
        Err(e) => return Err(e).with_context(|| format!("cannot read node {:?}", args.node)),
    }
    let start = Instant::now();
    // The same responder as the agent's and the controller's, for a notice of our own: the
    // node keeps any other notice it carries, and its fence is one write of the whole plan.
    let mut config = wiring::responder_config(
        sih_core::Source::Manual,
        // A drain by hand drains, whatever the kind it is filed under.
        sih_core::ActionPolicy {
            spot_interruption: sih_core::Action::Drain,
            rebalance: sih_core::Action::Drain,
            scheduled_maintenance: sih_core::Action::Drain,
            asg_termination: sih_core::Action::Drain,
            state_change: sih_core::Action::Drain,
            live_migration: sih_core::Action::Drain,
            cap: None,
        },
        &args.drain,
        &crate::cli::NoticeFlags {
            drain_budget: left,
            out_of_service_taint: false,
            rebalance_ttl: Duration::ZERO,
            dry_run: args.dry_run,
        },
        args.me.own_pod(),
        timeout,
    );
    config.resume = false;
    let (tap, mut printed) = tokio::sync::mpsc::unbounded_channel();
    let (updates, reporting) = wiring::spawn_told(
        wiring::Telling::quiet(),
        wiring::Told {
            events: true,
            dry_run: args.dry_run,
            cluster_name: String::new(),
            patience: left,
        },
        &client,
        &Arc::new(sih_report::Metrics::new()),
        wiring::Reporting {
            name: "manual",
            node: &args.node,
            reporter: args.me.pod_name.clone(),
            facts: wiring::shared_facts(),
            tap: Some(tap),
            api_timeout: timeout,
            off: Default::default(),
        },
    );
    let health = Arc::new(crate::admin::health::Health::new(Duration::from_secs(60)));
    let (responder, actor) = Responder::spawn(config, client, updates, health);
    let notice = Notice::manual(args.kind, &args.node, now, deadline_at);
    let outcome = responder.add(&args.node, notice);
    let mut report = None;
    let mut outcome = std::pin::pin!(outcome);
    let result = loop {
        tokio::select! {
            Some(u) = printed.recv() => {
                if let Some(r) = print(start, &args.node, left, &u) {
                    report = Some(r);
                }
            }
            o = &mut outcome => break o,
        }
    };
    responder.shutdown().await;
    drop(responder);
    let _ = actor.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), reporting).await;
    while let Ok(u) = printed.try_recv() {
        if let Some(r) = print(start, &args.node, left, &u) {
            report = Some(r);
        }
    }
    if args.dry_run {
        return Ok(());
    }
    if let Some(report) = &report {
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
    }
    match result {
        Ok(Settled::Done) => Ok(()),
        Ok(Settled::Failed(why)) => bail!("drain of {}: {why}", args.node),
        Ok(Settled::Withdrawn) => bail!("drain of {}: the notice was withdrawn", args.node),
        Err(_) => bail!("drain of {}: the responder stopped", args.node),
    }
}

/// One update as a line of the live progress; the drain's report when it ends.
fn print(start: Instant, node: &str, left: Duration, u: &Update) -> Option<DrainReport> {
    match u {
        Update::Fenced {
            notice,
            effect,
            changed,
            ..
        } => line(
            start,
            format!(
                "{} {node} (taint {}={}:{effect}, cordoned, excluded from external load balancers); deadline in {:.0}s",
                if *changed { "fenced" } else { "already fenced" },
                notice.kind.taint_key(),
                notice.id,
                left.as_secs_f64()
            ),
        ),
        Update::Drain { progress, .. } => line(start, describe(progress)),
        Update::WouldDo { what, .. } => line(start, format!("dry run: would {what}")),
        Update::Failed { action, error, .. } => line(start, format!("{action} failed: {error}")),
        Update::DrainFinished { report, .. } => return Some(report.clone()),
        _ => {}
    }
    None
}

pub async fn undrain(args: UndrainArgs) -> anyhow::Result<()> {
    let client = sih_node::client(args.kube.kubeconfig.as_deref()).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let rules = sih_core::PlanRules::default();
    let out =
        sih_node::unfence(&nodes, &args.node, args.kind, &rules, args.kube.api_timeout).await?;
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

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    proptest! {
        /// `--deadline` as typed: a time, or a message saying what it should be.
        #[test]
        fn no_deadline_makes_the_parser_panic(s in ".{0,40}") {
            let _ = super::parse_deadline(&s, jiff::Timestamp::now());
        }
    }

    #[test]
    fn a_deadline_past_the_end_of_time_is_refused_not_a_panic() {
        let e = super::parse_deadline("1000000000h", jiff::Timestamp::now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("further away"), "{e}");
    }

    #[test]
    fn a_deadline_that_has_passed_is_refused_with_the_reason() {
        let now: jiff::Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        for passed in ["0s", "2026-12-03T11:59:59Z", "2026-12-03T12:00:00Z"] {
            let e = super::parse_deadline(passed, now).unwrap_err().to_string();
            assert!(e.contains("has already passed"), "{passed}: {e}");
        }
        let ahead = super::parse_deadline("90s", now).unwrap();
        assert_eq!(
            ahead,
            "2026-12-03T12:01:30Z".parse::<jiff::Timestamp>().unwrap()
        );
        let at = super::parse_deadline("2026-12-03T12:00:01Z", now).unwrap();
        assert_eq!(at.duration_since(now).as_secs(), 1);
    }
}
