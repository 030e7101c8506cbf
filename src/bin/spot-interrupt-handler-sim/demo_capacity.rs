//! `demo --scenario capacity` (issue 31): capacity first, measured. A full cluster (two spot
//! nodes, each running six replicas of two Deployments whose budgets allow one disruption at
//! a time), an autoscaler whose nodes take a third of the notice to boot and hold two
//! replicas each, both spot nodes reclaimed at once — told twice, side by side: without
//! reservations, and with `--reserve-capacity`. Without, each budget step waits for a node to
//! boot, and the pods still there at the deadline are deleted; with, the autoscaler is asked
//! for every node at the notice.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde_json::json;
use sih_node::Progress;
use sih_report::Update;
use sih_sim_cluster::controllers::autoscaler::{AutoscalerConfig, GROUP_LABEL};
use tokio::time::Instant;

use crate::cli::{DemoArgs, DemoCloud};
use crate::demo::{
    Agent, Metadata, NODE_DELETED_AFTER, Timeline, announce, deployments_whole, is_daemon_pod,
    start_cluster, until_workload_ready,
};

/// Replicas of each Deployment; the two spot nodes hold all of them.
const REPLICAS: usize = 6;
/// The autoscaler's nodes: a DaemonSet pod and two replicas.
const GROUP_NODE_PODS: usize = 3;

/// The cluster: two spot nodes with room for a DaemonSet pod and six replicas each, full; an
/// on-demand group of smaller nodes that boot in `boot`.
fn cluster(boot: Duration) -> anyhow::Result<sih_sim_cluster::ClusterConfig> {
    let mut workload = sih_sim_cluster::workload::parse(include_str!(
        "../../../deploy/manifests/reserve-capacity.yaml"
    ))
    .map_err(|e| anyhow!("the reservation manifest: {e}"))?;
    workload.retain(|o| o["kind"] == "PriorityClass");
    for app in ["web", "api"] {
        workload.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": app, "namespace": "default"},
            "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": app}},
                "template": {"metadata": {"labels": {"app": app}}, "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{"name": app, "image": "nginx:1.27",
                        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}]}}}}));
        workload.push(
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": app, "namespace": "default"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": app}}}}),
        );
    }
    workload.push(json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "node-agent", "namespace": "kube-system"},
        "spec": {"selector": {"matchLabels": {"app": "node-agent"}},
            "template": {"metadata": {"labels": {"app": "node-agent"}},
                "spec": {"containers": [{"name": "agent", "image": "busybox:1.36"}]}}}}));
    Ok(sih_sim_cluster::ClusterConfig {
        nodes: 2,
        spot_nodes: 2,
        max_pods: 1 + REPLICAS,
        workload: Some(workload),
        autoscaler: Some(AutoscalerConfig {
            group: "on-demand".into(),
            min: 0,
            max: 2 * REPLICAS,
            spot: false,
            scale_up_delay: boot,
            scale_down_after: Duration::from_secs(600),
            max_pods: Some(GROUP_NODE_PODS),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// What one telling measured (seconds from the notice).
#[derive(Debug, Default)]
struct Outcome {
    evicted: usize,
    deleted_at_deadline: usize,
    /// The fewest Ready replicas of one Deployment, and its desired count.
    lowest_ready: Option<(i32, i32)>,
    /// Every replica Ready again, none on the spot nodes.
    back: Option<f64>,
    /// When each of the autoscaler's nodes became Ready.
    joined: Vec<f64>,
    /// The most placeholders at once.
    placeholders: usize,
}

impl Outcome {
    /// The autoscaler's node-seconds from the notice to `horizon`.
    fn node_seconds(&self, horizon: f64) -> f64 {
        self.joined.iter().map(|t| (horizon - t).max(0.0)).sum()
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.cloud != DemoCloud::Aws || args.view.is_some() || args.keep_running {
        bail!("--scenario capacity tells its story on AWS, without --view or --keep-running");
    }
    let notice = args.notice();
    let boot = notice / 3;
    if !args.json {
        println!(
            "spot-interrupt-handler demo, capacity first: two spot nodes, full, each running {REPLICAS} replicas of two Deployments\n\
             (budgets: one disruption at a time), reclaimed at once with {}s of notice; the autoscaler's nodes boot in {}s and\n\
             take {} replicas each. Told twice at once: without reservations, and with --reserve-capacity.\n",
            notice.as_secs(),
            boot.as_secs(),
            GROUP_NODE_PODS - 1
        );
    }
    let tl = Arc::new(Timeline {
        json: args.json,
        t0: Instant::now(),
    });
    let (baseline, reserved) = tokio::join!(
        story("without", false, notice, boot, tl.clone()),
        story("reserve", true, notice, boot, tl.clone())
    );
    let (baseline, reserved) = (baseline?, reserved?);
    print(&args, &baseline, &reserved);
    if baseline.back.is_none() || reserved.back.is_none() {
        bail!("the demo did not finish: some replicas never became Ready again");
    }
    Ok(())
}

/// One telling, in a cluster of its own; `tag` prefixes its timeline.
async fn story(
    tag: &'static str,
    reserve: bool,
    notice: Duration,
    boot: Duration,
    tl: Arc<Timeline>,
) -> anyhow::Result<Outcome> {
    let (cluster, kubeconfig) = start_cluster(cluster(boot)?, &format!("-{tag}")).await?;
    let client = sih_node::client(Some(&kubeconfig)).await?;
    let result = tell(tag, reserve, notice, &cluster, &kubeconfig, &client, &tl).await;
    let _ = cluster.stop().await;
    let _ = std::fs::remove_file(&kubeconfig);
    result
}

async fn tell(
    tag: &'static str,
    reserve: bool,
    notice: Duration,
    cluster: &sih_sim_cluster::RunningCluster,
    kubeconfig: &std::path::Path,
    client: &kube::Client,
    tl: &Timeline,
) -> anyhow::Result<Outcome> {
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let deployments: Api<Deployment> = Api::all(client.clone());
    until_workload_ready(&pods, 2 * REPLICAS, Duration::from_secs(15)).await?;
    let spots: Vec<String> = nodes
        .list(&ListParams::default().labels("lifecycle=Ec2Spot"))
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let extra: &[&str] = if reserve {
        &["--reserve-capacity=true"]
    } else {
        &[]
    };
    let (tap, mut updates) = tokio::sync::mpsc::unbounded_channel();
    let mut running = Vec::new();
    for spot in &spots {
        let imds = Metadata::start(DemoCloud::Aws).await?;
        let agent = Agent::spawn(
            DemoCloud::Aws,
            spot,
            &imds.url(),
            kubeconfig,
            notice,
            extra,
            tap.clone(),
        )?;
        running.push((imds, agent));
    }
    drop(tap);
    // Let the agents read their identity and poll once before the notices appear.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let http = reqwest::Client::new();
    for (imds, _) in &running {
        announce(&http, DemoCloud::Aws, &imds.url(), notice).await?;
    }
    let noticed = Instant::now();
    let at = |t: Instant| t.duration_since(noticed).as_secs_f64();
    for spot in &spots {
        cluster
            .terminate_node_at(spot, jiff::Timestamp::now() + notice, NODE_DELETED_AFTER)
            .map_err(|e| anyhow!("cannot schedule the instance's end: {e}"))?;
    }
    tl.say(
        "notice",
        json!({"story": tag, "nodes": spots}),
        format!(
            "[{tag}] both spot nodes get their notice: {}s",
            notice.as_secs()
        ),
    );

    let mut out = Outcome::default();
    let mut drains_done = 0;
    let mut known: BTreeMap<String, ()> = BTreeMap::new();
    let give_up = noticed + notice * 3 + NODE_DELETED_AFTER;
    let mut check = tokio::time::interval(Duration::from_millis(200));
    while Instant::now() < give_up && out.back.is_none() {
        tokio::select! {
            Some(u) = updates.recv() => match u {
                Update::Drain { progress: Progress::Evicted { .. }, .. } => out.evicted += 1,
                Update::Drain { notice, progress: Progress::DeletedAtDeadline { pod, .. } } => {
                    out.deleted_at_deadline += 1;
                    tl.say("deleted", json!({"story": tag, "pod": pod.to_string(), "node": notice.node}),
                        format!("[{tag}] deleted {pod} at the deadline: its budget still protected it"));
                }
                Update::Drain { progress: Progress::Reserved { what, .. }, notice } => tl.say(
                    "reserved", json!({"story": tag, "node": notice.node}), format!("[{tag}] {}: {what}", notice.node)),
                Update::DrainFinished { notice, report } => {
                    drains_done += 1;
                    tl.say("drain-done", json!({"story": tag, "node": notice.node, "evicted": report.evicted}),
                        format!("[{tag}] drain of {} over: {}", notice.node, report.summary()));
                }
                _ => {}
            },
            _ = check.tick() => {
                let now = Instant::now();
                for d in deployments.list(&ListParams::default()).await?.items {
                    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
                    if out.lowest_ready.is_none_or(|(low, _)| ready < low) {
                        out.lowest_ready = Some((ready, want));
                    }
                }
                for n in nodes.list(&ListParams::default().labels(GROUP_LABEL)).await?.items {
                    let Some(name) = n.metadata.name.clone() else { continue };
                    let ready = n.status.as_ref().and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                    if ready && known.insert(name.clone(), ()).is_none() {
                        out.joined.push(at(now));
                        tl.say("node-added", json!({"story": tag, "node": name}),
                            format!("[{tag}] the autoscaler's node {name} is Ready ({} so far)", out.joined.len()));
                    }
                }
                let list = pods.list(&ListParams::default()).await?.items;
                let placeholders = list.iter().filter(|p| p.metadata.name.as_deref()
                    .is_some_and(|n| n.starts_with("sih-reserve-"))).count();
                out.placeholders = out.placeholders.max(placeholders);
                let back = deployments_whole(&deployments).await?;
                let away = list.iter().all(|p| is_daemon_pod(p) || p.spec.as_ref()
                    .and_then(|s| s.node_name.as_deref()).is_none_or(|n| !spots.iter().any(|s| s == n)));
                if drains_done >= spots.len() && back && away {
                    out.back = Some(at(now));
                    tl.say("replicas-back", json!({"story": tag, "seconds": at(now)}),
                        format!("[{tag}] every replica is Ready again, none on the spot nodes"));
                }
            }
        }
    }
    for (imds, agent) in running {
        agent.stop().await;
        imds.stop().await;
    }
    let _ = std::io::stdout().flush();
    Ok(out)
}

fn print(args: &DemoArgs, without: &Outcome, with: &Outcome) {
    // Node-seconds over the same span for both: until the later of the two recoveries.
    let horizon = without.back.unwrap_or(0.0).max(with.back.unwrap_or(0.0));
    let secs = |v: Option<f64>| v.map_or_else(|| "never".to_owned(), |v| format!("{v:.1}s"));
    let ready = |o: &Outcome| {
        o.lowest_ready
            .map_or_else(|| "-".to_owned(), |(r, d)| format!("{r} of {d}"))
    };
    if args.json {
        let one = |o: &Outcome| {
            json!({"evicted": o.evicted, "deleted_at_deadline": o.deleted_at_deadline,
                "lowest_ready_replicas": o.lowest_ready.map(|(r, _)| r),
                "desired_replicas": o.lowest_ready.map(|(_, d)| d),
                "replicas_back_s": o.back, "nodes_added": o.joined.len(),
                "node_seconds": (o.node_seconds(horizon) * 10.0).round() / 10.0,
                "most_placeholders": o.placeholders})
        };
        println!(
            "{}",
            json!({"summary": {"without": one(without), "reserve": one(with), "horizon_s": horizon}})
        );
        return;
    }
    println!("\nsummary (times from the notice)            without    --reserve-capacity");
    let row = |what: &str, a: String, b: String| println!("  {what:<40} {a:<10} {b}");
    row(
        "pods deleted at the deadline",
        without.deleted_at_deadline.to_string(),
        with.deleted_at_deadline.to_string(),
    );
    row(
        "pods evicted",
        without.evicted.to_string(),
        with.evicted.to_string(),
    );
    row(
        "fewest Ready replicas of a Deployment",
        ready(without),
        ready(with),
    );
    row(
        "every replica Ready again",
        secs(without.back),
        secs(with.back),
    );
    row(
        "nodes the autoscaler added",
        without.joined.len().to_string(),
        with.joined.len().to_string(),
    );
    row(
        &format!("their node-seconds until {horizon:.0}s"),
        format!("{:.0}", without.node_seconds(horizon)),
        format!("{:.0}", with.node_seconds(horizon)),
    );
    row(
        "most placeholders at once",
        "-".into(),
        with.placeholders.to_string(),
    );
}
