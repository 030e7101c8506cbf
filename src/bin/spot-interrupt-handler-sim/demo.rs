//! `demo`: the whole story in one process, with nothing installed. Starts the cluster and
//! metadata simulators (EC2's, GCE's or Azure's: `--cloud`) and the agent, makes the metadata
//! service announce a spot interruption (a preemption, a `Preempt` event), prints a live timeline relative to the moment the notice became visible, then
//! a summary. Exits 0 once the drain is done and every evicted replica runs elsewhere.

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde_json::json;
use sih_node::Progress;
use sih_report::Update;
use tokio::time::Instant;

use spot_interrupt_handler::cli::{Cli, Command};

use crate::cli::{DemoArgs, DemoCloud, DemoScenario};

pub(crate) const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);
/// The demo gives up (exit 1) if the story has not ended by then.
const LIMIT: Duration = Duration::from_secs(60);

pub(crate) struct Timeline {
    pub(crate) json: bool,
    pub(crate) t0: Instant,
}

impl Timeline {
    pub(crate) fn at(&self) -> f64 {
        Instant::now().duration_since(self.t0).as_secs_f64()
    }

    /// One line: in JSON, `t`, `event`, the typed `fields` (kind, node, pod, seconds...) and
    /// the `text` people read.
    pub(crate) fn say(&self, event: &str, fields: serde_json::Value, text: String) {
        let t = self.at();
        if self.json {
            let mut line = json!({"t": (t * 1000.0).round() / 1000.0, "event": event});
            if let (Some(line), serde_json::Value::Object(fields)) = (line.as_object_mut(), fields)
            {
                line.extend(fields);
            }
            line["text"] = json!(text);
            println!("{line}");
        } else {
            println!("{t:>+8.3}s  {text}");
        }
        let _ = std::io::stdout().flush();
    }
}

#[derive(Default)]
pub(crate) struct Summary {
    pub(crate) detected: Option<f64>,
    pub(crate) fenced: Option<f64>,
    pub(crate) evicted: usize,
    pub(crate) pdb_waits: usize,
    pub(crate) deleted_at_deadline: usize,
    pub(crate) drain_done: Option<f64>,
    pub(crate) drain_ok: bool,
    pub(crate) slack_s: Option<f64>,
    pub(crate) slowest: Option<(String, f64)>,
    pub(crate) rescheduled: usize,
    pub(crate) replicas_back: Option<f64>,
    /// The fewest Ready replicas any Deployment had during the story, and its desired count.
    pub(crate) lowest_ready: Option<(String, i32, i32)>,
    /// The most replicas waiting for a place at once.
    pub(crate) most_waiting: usize,
    /// Nodes that joined during the story (the autoscaler's).
    pub(crate) nodes_added: usize,
    /// When the instance ended (its node NotReady), and when its Node object went.
    pub(crate) instance_ended: Option<f64>,
    pub(crate) node_deleted: Option<f64>,
    /// When the cloud was told it may go ahead (Azure's acknowledgement).
    pub(crate) acknowledged: Option<f64>,
}

/// The metadata simulator of the demo's cloud.
pub(crate) enum Metadata {
    Aws(sih_sim_imds::RunningSim),
    Other(sih_sim_clouds::Running),
}

impl Metadata {
    pub(crate) async fn start(cloud: DemoCloud) -> anyhow::Result<Self> {
        Ok(match cloud {
            DemoCloud::Aws => Self::Aws(
                sih_sim_imds::start(sih_sim_imds::SimConfig::default(), LOOPBACK)
                    .await
                    .context("metadata simulator")?,
            ),
            DemoCloud::Gce => Self::Other(
                sih_sim_clouds::gce::start(Default::default(), LOOPBACK)
                    .await
                    .context("GCE metadata simulator")?,
            ),
            DemoCloud::Azure => Self::Other(
                sih_sim_clouds::azure::start(Default::default(), LOOPBACK)
                    .await
                    .context("Azure metadata simulator")?,
            ),
        })
    }

    pub(crate) fn url(&self) -> String {
        match self {
            Self::Aws(s) => s.url(),
            Self::Other(s) => s.url(),
        }
    }

    pub(crate) async fn stop(self) {
        let _ = match self {
            Self::Aws(s) => s.stop().await,
            Self::Other(s) => s.stop().await,
        };
    }
}

/// Makes the cloud announce the reclamation `notice` from now; says how it reads.
pub(crate) async fn announce(
    http: &reqwest::Client,
    cloud: DemoCloud,
    url: &str,
    notice: Duration,
) -> anyhow::Result<String> {
    let secs = notice.as_secs();
    let (path, body, text) = match cloud {
        DemoCloud::Aws => (
            "spot-interruption",
            json!({"action": "terminate", "lead_seconds": secs}),
            format!("spot/instance-action says terminate in {secs}s"),
        ),
        DemoCloud::Gce => (
            "preempt",
            json!({}),
            format!("instance/preempted is TRUE: the VM stops in {secs}s"),
        ),
        DemoCloud::Azure => (
            "events",
            json!({"type": "Preempt", "not_before_seconds": secs}),
            format!("a Preempt scheduled event, NotBefore in {secs}s"),
        ),
    };
    http.post(format!("{url}/_sim/{path}"))
        .json(&body)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .context("cannot make the metadata service announce the reclamation")?;
    Ok(text)
}

/// When Azure's simulator was told to go ahead with the events (their acknowledgement).
async fn acknowledged(http: &reqwest::Client, url: &str) -> bool {
    let Ok(r) = http.get(format!("{url}/_sim/events")).send().await else {
        return false;
    };
    let events: serde_json::Value = r.json().await.unwrap_or_default();
    events["events"]
        .as_array()
        .is_some_and(|e| e.iter().any(|e| !e["acknowledged_at"].is_null()))
}

pub(crate) fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether every Deployment has as many Ready replicas as it wants.
pub(crate) async fn deployments_whole(deployments: &Api<Deployment>) -> anyhow::Result<bool> {
    Ok(deployments
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .all(|d| {
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            d.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
                >= want
        }))
}

/// Says each replica that runs Ready off the spot node and was not there at the start
/// (`before`), once (`seen`), and counts it.
pub(crate) fn say_rescheduled(
    tl: &Timeline,
    s: &mut Summary,
    pods: &[Pod],
    before: &HashSet<String>,
    spot: &str,
    seen: &mut HashSet<String>,
) {
    for p in pods {
        let Some(name) = p.metadata.name.clone() else {
            continue;
        };
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        if !before.contains(&name)
            && !is_daemon_pod(p)
            && node != spot
            && pod_ready(p)
            && seen.insert(name.clone())
        {
            s.rescheduled += 1;
            tl.say(
                "rescheduled",
                json!({"pod": name, "node": node}),
                format!("replica {name} running on {node}"),
            );
        }
    }
}

pub(crate) fn is_daemon_pod(p: &Pod) -> bool {
    p.metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.kind == "DaemonSet"))
}

/// The cluster the story needs: for `autoscaler`, two nodes with room for a DaemonSet pod and
/// four web pods each, full with eight replicas, and an on-demand node group that adds a node
/// 5 s after pods find no room.
fn cluster_config(scenario: DemoScenario, cloud: DemoCloud) -> sih_sim_cluster::ClusterConfig {
    let mut config = sih_sim_cluster::ClusterConfig::default();
    if cloud != DemoCloud::Aws && scenario != DemoScenario::Autoscaler {
        // That cloud's nodes, the first its metadata simulator's instance.
        let mut objects = sih_sim_cluster::workload::cloud_nodes(cloud.as_str(), 3, 1);
        objects.extend(sih_sim_cluster::workload::default_workload(3));
        config.nodes = 0;
        config.spot_nodes = 0;
        config.workload = Some(objects);
    }
    if scenario == DemoScenario::Autoscaler {
        let mut workload = sih_sim_cluster::workload::default_workload(2);
        for o in &mut workload {
            if o["kind"] == "Deployment" {
                o["spec"]["replicas"] = json!(8);
            }
        }
        config.nodes = 2;
        config.max_pods = 5;
        config.workload = Some(workload);
        config.autoscaler = Some(sih_sim_cluster::controllers::autoscaler::AutoscalerConfig {
            group: "on-demand".into(),
            min: 0,
            max: 3,
            spot: false,
            scale_up_delay: Duration::from_secs(5),
            scale_down_after: Duration::from_secs(600),
            ..Default::default()
        });
    }
    config
}

/// How long after the instance's end its Node object is deleted (the cloud node controller).
pub(crate) const NODE_DELETED_AFTER: Duration = Duration::from_secs(5);

/// Starts a simulated cluster on loopback and writes its kubeconfig (`tag` names the file).
pub(crate) async fn start_cluster(
    config: sih_sim_cluster::ClusterConfig,
    tag: &str,
) -> anyhow::Result<(sih_sim_cluster::RunningCluster, std::path::PathBuf)> {
    let cluster = sih_sim_cluster::start(config, LOOPBACK)
        .await
        .map_err(|e| anyhow!("cluster simulator: {e}"))?;
    let kubeconfig = std::env::temp_dir().join(format!(
        "spot-interrupt-handler-demo-{}{tag}.kubeconfig",
        std::process::id()
    ));
    std::fs::write(&kubeconfig, cluster.kubeconfig())
        .with_context(|| format!("cannot write {}", kubeconfig.display()))?;
    Ok((cluster, kubeconfig))
}

/// Waits (up to `within`) until more than `more_than` pods exist and every one is Ready: the
/// workload runs before the story starts.
pub(crate) async fn until_workload_ready(
    pods: &Api<Pod>,
    more_than: usize,
    within: Duration,
) -> anyhow::Result<()> {
    let settle = Instant::now() + within;
    loop {
        let list = pods.list(&ListParams::default()).await?.items;
        if list.len() > more_than && list.iter().all(pod_ready) {
            return Ok(());
        }
        if Instant::now() > settle {
            bail!("the simulated workload did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let notice = args.notice();
    let (cluster, kubeconfig) =
        start_cluster(cluster_config(args.scenario, args.cloud), "").await?;
    let imds = Metadata::start(args.cloud).await?;

    let client = sih_node::client(Some(&kubeconfig)).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let spot = nodes
        .list(&ListParams::default().labels(match args.cloud {
            DemoCloud::Gce if args.scenario != DemoScenario::Autoscaler => {
                "cloud.google.com/gke-spot=true"
            }
            DemoCloud::Azure if args.scenario != DemoScenario::Autoscaler => {
                "kubernetes.azure.com/scalesetpriority=spot"
            }
            _ => "lifecycle=Ec2Spot",
        }))
        .await?
        .items
        .into_iter()
        .next()
        .and_then(|n| n.metadata.name)
        .ok_or_else(|| anyhow!("the simulated cluster has no spot node"))?;
    let pods: Api<Pod> = Api::all(client.clone());
    let deployments: Api<Deployment> = Api::all(client.clone());
    until_workload_ready(&pods, 0, Duration::from_secs(10)).await?;
    if args.scenario == DemoScenario::Surge {
        for d in deployments.list(&ListParams::default()).await?.items {
            let (Some(ns), Some(name)) = (d.metadata.namespace, d.metadata.name) else {
                continue;
            };
            let patch =
                json!({"metadata": {"annotations": {sih_node::surge::SURGE_ANNOTATION: "true"}}});
            Api::<Deployment>::namespaced(client.clone(), &ns)
                .patch(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await?;
        }
    }
    let before = pods.list(&ListParams::default()).await?.items;
    let on_node =
        |p: &&Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(spot.as_str());
    let on_spot: Vec<String> = before
        .iter()
        .filter(on_node)
        .filter(|p| !is_daemon_pod(p))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let daemons_on_spot = before
        .iter()
        .filter(on_node)
        .filter(|p| is_daemon_pod(p))
        .count();
    let known: HashSet<String> = before
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();

    if !args.json {
        let daemons = match daemons_on_spot {
            0 => String::new(),
            1 => " and 1 DaemonSet pod, which stays (it runs on every node and goes with the instance)".to_owned(),
            n => format!(" and {n} DaemonSet pods, which stay (they run on every node and go with the instance)"),
        };
        println!(
            "spot-interrupt-handler demo: a simulated cluster of {} nodes; spot node {spot} runs {} workload pods to evacuate{daemons}.",
            nodes.list(&ListParams::default()).await?.items.len(),
            on_spot.len()
        );
        let full = if args.scenario == DemoScenario::Autoscaler {
            " The cluster is full: the evicted replicas need a node the autoscaler has yet to add."
        } else {
            ""
        };
        println!(
            "The metadata service announces now that the instance will be reclaimed {}s from now.{full}\n",
            notice.as_secs()
        );
    }

    let view = match args.view {
        Some(listen) => {
            let view = sih_view::Running::start(client.clone(), listen)
                .await
                .with_context(|| format!("cannot serve the view on {listen}"))?;
            let manual = args.start == crate::cli::DemoStart::Manual;
            if args.json {
                println!(
                    "{}",
                    json!({"event": "view", "url": view.url(), "start": if manual { "manual" } else { "auto" }})
                );
            } else if manual {
                println!(
                    "Open {} to watch; the story starts when you press Start on the page (or S).\n",
                    view.url()
                );
            } else {
                println!(
                    "Open {} to watch; the story starts once the page is open (or in a minute).\n",
                    view.url()
                );
            }
            let _ = std::io::stdout().flush();
            if manual {
                view.state.until_started().await;
            } else if !view.state.until_viewed(Duration::from_secs(60)).await {
                tracing::warn!("nobody opened the view within a minute; the story starts anyway");
            }
            // Let the page draw the cluster before anything happens to it.
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some(view)
        }
        None => None,
    };

    let (tap, mut updates) = tokio::sync::mpsc::unbounded_channel();
    let agent = Agent::spawn(
        args.cloud,
        &spot,
        &imds.url(),
        &kubeconfig,
        notice,
        &[],
        tap,
    )?;
    // Let the agent read its identity and poll once before the notice appears.
    tokio::time::sleep(Duration::from_millis(800)).await;

    let http = reqwest::Client::new();
    let announced = announce(&http, args.cloud, &imds.url(), notice).await?;
    // The cloud takes the instance at the deadline, whatever anyone did about it.
    cluster
        .terminate_node_at(&spot, jiff::Timestamp::now() + notice, NODE_DELETED_AFTER)
        .map_err(|e| anyhow!("cannot schedule the instance's end: {e}"))?;
    let tl = Timeline {
        json: args.json,
        t0: Instant::now(),
    };
    tl.say(
        "notice",
        json!({"node": spot, "cloud": args.cloud.as_str(), "seconds": notice.as_secs(), "pods_to_evacuate": on_spot.len(), "daemonset_pods_staying": daemons_on_spot}),
        format!("notice visible: {announced}"),
    );

    let mut s = Summary::default();
    let mut seen_new: HashSet<String> = HashSet::new();
    let mut check = tokio::time::interval(Duration::from_millis(100));
    let give_up = tl.t0 + LIMIT.max(notice + NODE_DELETED_AFTER + Duration::from_secs(20));
    let mut known_nodes: HashSet<String> = nodes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    loop {
        tokio::select! {
            Some(u) = updates.recv() => narrate(&tl, &mut s, u),
            _ = check.tick() => {
                for d in deployments.list(&ListParams::default()).await?.items {
                    // Desired is the count before any surge (recorded while it lasts).
                    let desired = d.metadata.annotations.as_ref()
                        .and_then(|a| a.get(sih_node::surge::RESTORE_ANNOTATION))
                        .and_then(|v| v.parse().ok())
                        .or_else(|| d.spec.as_ref().and_then(|s| s.replicas))
                        .unwrap_or(1);
                    let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
                    if s.lowest_ready.as_ref().is_none_or(|(_, low, _)| ready < *low) {
                        s.lowest_ready = Some((d.metadata.name.clone().unwrap_or_default(), ready, desired));
                    }
                }
                let list = pods.list(&ListParams::default()).await?.items;
                watch_nodes(&tl, &mut s, &nodes, &spot, &mut known_nodes).await?;
                if args.cloud == DemoCloud::Azure && s.acknowledged.is_none()
                    && acknowledged(&http, &imds.url()).await
                {
                    s.acknowledged = Some(tl.at());
                    let early = notice.as_secs_f64() - tl.at();
                    tl.say(
                        "acknowledged",
                        json!({"node": spot, "seconds_early": early}),
                        format!("Preempt acknowledged: Azure may evict the VM now, {early:.1}s before its NotBefore"),
                    );
                }
                let waiting = list
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_none())
                    .count();
                if waiting > s.most_waiting {
                    s.most_waiting = waiting;
                    tl.say(
                        "waiting",
                        json!({"pods": waiting}),
                        format!("{waiting} replica(s) wait: no node has room for them"),
                    );
                }
                say_rescheduled(&tl, &mut s, &list, &known, &spot, &mut seen_new);
                if s.drain_done.is_some() && s.replicas_back.is_none() {
                    let back = deployments_whole(&deployments).await?;
                    let away = list.iter().all(|p| {
                        is_daemon_pod(p)
                            || p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(spot.as_str())
                    });
                    if back && away && s.rescheduled >= on_spot.len() {
                        s.replicas_back = Some(tl.at());
                        let daemons = if daemons_on_spot > 0 {
                            format!("; the {daemons_on_spot} DaemonSet pod(s) stay on it until the instance goes")
                        } else {
                            String::new()
                        };
                        tl.say(
                            "replicas-back",
                            json!({"node": spot, "daemonset_pods_staying": daemons_on_spot}),
                            format!("every Deployment is back to its desired replicas, none on the spot node{daemons}"),
                        );
                    }
                }
                // The autoscaler's story goes on to the instance's end and its node's removal.
                let story_over = (args.scenario != DemoScenario::Autoscaler || s.node_deleted.is_some())
                    && (args.cloud != DemoCloud::Azure || s.acknowledged.is_some());
                if s.replicas_back.is_some() && story_over {
                    break;
                }
                if Instant::now() > give_up {
                    break;
                }
            }
        }
    }
    agent.stop().await;
    print_summary(&args, &s);
    let ok = s.replicas_back.is_some() && s.drain_ok;
    if args.keep_running || view.is_some() {
        if args.json {
            println!(
                "{}",
                json!({"event": "keep-running", "kubeconfig": kubeconfig.display().to_string(),
                    "view": view.as_ref().map(|v| v.url())})
            );
        } else {
            println!(
                "\nThe simulated cluster keeps running. Try:\n  kubectl --kubeconfig {} get nodes,pods -o wide\n  kubectl --kubeconfig {} get events\nCtrl-C stops it.",
                kubeconfig.display(),
                kubeconfig.display()
            );
            if let Some(v) = &view {
                println!("The view stays at {}.", v.url());
            }
        }
        let _ = std::io::stdout().flush();
        // The instance's end is still told (it comes at the deadline, after the summary in
        // most stories), then the cluster waits for Ctrl-C.
        let mut stop = std::pin::pin!(spot_interrupt_handler::signals::shutdown());
        let mut check = tokio::time::interval(Duration::from_millis(250));
        while s.node_deleted.is_none() {
            tokio::select! {
                () = &mut stop => break,
                _ = check.tick() => {
                    if let Err(e) = watch_nodes(&tl, &mut s, &nodes, &spot, &mut known_nodes).await {
                        tracing::debug!(error = %e, "cannot read the nodes");
                    }
                }
            }
        }
        if s.node_deleted.is_some() {
            stop.await;
        }
    }
    if let Some(v) = view
        && let Err(e) = v.stop().await
    {
        tracing::warn!(error = %e, "the view stopped with an error");
    }
    imds.stop().await;
    let _ = cluster.stop().await;
    let _ = std::fs::remove_file(&kubeconfig);
    if !ok {
        bail!(
            "the demo did not finish: the drain or the rescheduling did not complete within {}s",
            LIMIT.as_secs()
        );
    }
    Ok(())
}

/// One agent of the demo, in this process, on `node`.
pub(crate) struct Agent {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Agent {
    /// Starts `imds` for `node` against the metadata service at `imds`, with `extra` flags;
    /// every update it makes goes to `tap` too.
    pub(crate) fn spawn(
        cloud: DemoCloud,
        node: &str,
        imds: &str,
        kubeconfig: &std::path::Path,
        notice: Duration,
        extra: &[&str],
        tap: tokio::sync::mpsc::UnboundedSender<Update>,
    ) -> anyhow::Result<Self> {
        let notice_flag = format!("{}s", notice.as_secs());
        let mut argv = vec!["spot-interrupt-handler", "imds", "--cloud", cloud.as_str()];
        if cloud == DemoCloud::Gce {
            // GCE gives 30 s; the demo's --notice stands for it.
            argv.extend(["--gce-preemption-notice", &notice_flag]);
        }
        let kubeconfig = kubeconfig.to_string_lossy();
        argv.extend([
            "--node-name",
            node,
            "--imds-endpoint",
            imds,
            "--kubeconfig",
            &kubeconfig,
            "--admin-listen",
            "127.0.0.1:0",
            "--poll-interval",
            "250ms",
            "--cluster-name",
            "demo",
        ]);
        argv.extend(extra);
        let cli = Cli::try_parse_from(argv)?;
        let Some(Command::Imds(agent_args)) = cli.command else {
            bail!("internal: the demo's agent arguments did not parse as `imds`");
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(spot_interrupt_handler::commands::imds::run_until(
            *agent_args,
            async move {
                let _ = stopped.await;
            },
            Some(tap),
        ));
        Ok(Self { stop, task })
    }

    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        if let Ok(Err(e)) = self.task.await {
            tracing::warn!(error = %e, "the agent stopped with an error");
        }
    }
}

/// Nodes joining (the autoscaler's), the spot instance's end and its node's removal.
async fn watch_nodes(
    tl: &Timeline,
    s: &mut Summary,
    nodes: &Api<Node>,
    spot: &str,
    known: &mut HashSet<String>,
) -> anyhow::Result<()> {
    let list = nodes.list(&ListParams::default()).await?.items;
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone())
    };
    for n in &list {
        let Some(name) = n.metadata.name.clone() else {
            continue;
        };
        if !known.contains(&name) && ready(n).as_deref() == Some("True") {
            known.insert(name.clone());
            s.nodes_added += 1;
            tl.say(
                "node-added",
                json!({"node": name}),
                format!("node {name} joined (the autoscaler's scale-up) and is Ready"),
            );
        }
        if name == spot && s.instance_ended.is_none() && ready(n).as_deref() == Some("Unknown") {
            s.instance_ended = Some(tl.at());
            tl.say(
                "instance-ended",
                json!({"node": name}),
                format!("the instance is gone: {name} is NotReady"),
            );
        }
    }
    if s.node_deleted.is_none()
        && !list
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some(spot))
    {
        s.node_deleted = Some(tl.at());
        tl.say(
            "node-deleted",
            json!({"node": spot}),
            format!("node {spot} deleted, with what was left on it"),
        );
    }
    Ok(())
}

pub(crate) fn narrate(tl: &Timeline, s: &mut Summary, u: Update) {
    match u {
        Update::Detected { notice, action } => {
            s.detected.get_or_insert(tl.at());
            tl.say(
                "detected",
                json!({"kind": notice.kind, "notice_id": notice.id, "node": notice.node, "action": action}),
                format!("detected {} (id {}), action {action}", notice.kind, notice.id),
            );
        }
        Update::Fenced { notice, effect, .. } => {
            s.fenced.get_or_insert(tl.at());
            tl.say(
                "fenced",
                json!({"kind": notice.kind, "node": notice.node, "taint": notice.kind.taint_key(), "effect": effect}),
                format!(
                    "fenced {}: taint {}:{effect}, cordoned, out of external load balancers",
                    notice.node,
                    notice.kind.taint_key()
                ),
            );
        }
        Update::DrainStarted { notice, time_left } => tl.say(
            "drain-started",
            json!({"node": notice.node, "seconds_left": (time_left.as_secs_f64() * 1000.0).round() / 1000.0}),
            format!(
                "drain started, {:.1}s before the deadline",
                time_left.as_secs_f64()
            ),
        ),
        Update::Drain { notice, progress } => {
            let node = notice.node;
            match progress {
                Progress::Surge { workload, what, .. } => tl.say(
                    "surge",
                    json!({"workload": workload, "node": node}),
                    format!("surge {workload}: {what}"),
                ),
                Progress::Reserved { what, .. } => tl.say(
                    "reserved",
                    json!({"node": node}),
                    format!("capacity: {what}"),
                ),
                Progress::LoadBalancers { what, .. } => tl.say(
                    "load-balancers",
                    json!({"node": node}),
                    format!("load balancers: {what}"),
                ),
                Progress::Evicted { pod, grace } => {
                    s.evicted += 1;
                    tl.say(
                        "evicted",
                        json!({"pod": pod.to_string(), "node": node, "grace_s": grace}),
                        format!("evicted {pod} (grace {grace}s)"),
                    );
                }
                Progress::BlockedByBudget { pod, .. } => {
                    s.pdb_waits += 1;
                    tl.say(
                        "pdb-wait",
                        json!({"pod": pod.to_string(), "node": node}),
                        format!("{pod} waits: its PodDisruptionBudget allows no disruption yet"),
                    );
                }
                Progress::DeletedAtDeadline { pod, grace } => {
                    s.deleted_at_deadline += 1;
                    tl.say(
                        "deleted",
                        json!({"pod": pod.to_string(), "node": node, "grace_s": grace}),
                        format!("deleted {pod} at its last moment: its PodDisruptionBudget still refused, and a grace of {grace}s is all that fits before the instance ends"),
                    );
                }
                Progress::Gone { pod } => tl.say(
                    "gone",
                    json!({"pod": pod.to_string(), "node": node}),
                    format!("{pod} has stopped"),
                ),
                Progress::Failed { pod, reason } => tl.say(
                    "failed",
                    json!({"pod": pod.to_string(), "node": node, "reason": reason}),
                    format!("{pod} FAILED: {reason}"),
                ),
                _ => {}
            }
        }
        Update::DrainFinished { notice, report } => {
            s.drain_done = Some(tl.at());
            s.drain_ok = report.succeeded();
            s.slack_s = Some(report.slack_ms as f64 / 1000.0);
            s.slowest = report
                .slowest
                .as_ref()
                .map(|(p, t)| (p.to_string(), t.as_secs_f64()));
            tl.say(
                "drain-done",
                json!({"node": notice.node, "succeeded": report.succeeded(), "evicted": report.evicted, "seconds_left": report.slack_ms as f64 / 1000.0,
                    "slowest_pod": s.slowest.as_ref().map(|(p, _)| p),
                "lowest_ready_replicas": s.lowest_ready.as_ref().map(|(_, r, _)| r),
                "desired_replicas": s.lowest_ready.as_ref().map(|(_, _, d)| d), "slowest_s": s.slowest.as_ref().map(|(_, t)| (t * 1000.0).round() / 1000.0)}),
                format!(
                    "drain {}: {:.1}s left before the instance goes",
                    if report.succeeded() { "done" } else { "FAILED" },
                    report.slack_ms as f64 / 1000.0
                ),
            );
        }
        Update::Failed {
            notice,
            action,
            error,
            ..
        } => tl.say(
            "error",
            json!({"node": notice.node, "action": action, "error": error}),
            format!("{action} failed: {error}"),
        ),
        _ => {}
    }
}

pub(crate) fn print_summary(args: &DemoArgs, s: &Summary) {
    let secs = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}s"));
    if args.json {
        // Milliseconds, as the terminal prints them: a summary is read, not re-measured.
        let ms = |v: Option<f64>| v.map(|v| (v * 1000.0).round() / 1000.0);
        println!(
            "{}",
            json!({"summary": {
                "detection_s": ms(s.detected), "fence_s": ms(s.fenced), "evicted": s.evicted,
                "pdb_waits": s.pdb_waits, "deleted_at_deadline": s.deleted_at_deadline,
                "drain_done_s": ms(s.drain_done), "drain_succeeded": s.drain_ok,
                "deadline_slack_s": ms(s.slack_s), "rescheduled": s.rescheduled,
                "slowest_pod": s.slowest.as_ref().map(|(p, _)| p),
                "lowest_ready_replicas": s.lowest_ready.as_ref().map(|(_, r, _)| r),
                "desired_replicas": s.lowest_ready.as_ref().map(|(_, _, d)| d),
                "slowest_pod_s": ms(s.slowest.as_ref().map(|(_, t)| *t)),
                "replicas_back_s": ms(s.replicas_back),
                "most_waiting": s.most_waiting, "nodes_added": s.nodes_added,
                "instance_ended_s": ms(s.instance_ended), "node_deleted_s": ms(s.node_deleted),
                "acknowledged_s": ms(s.acknowledged),
            }})
        );
        return;
    }
    println!("\nsummary (times from the notice becoming visible)");
    println!("  detected                    {}", secs(s.detected));
    println!("  node fenced                 {}", secs(s.fenced));
    println!("  pods evicted                {}", s.evicted);
    println!("  PodDisruptionBudget waits   {}", s.pdb_waits);
    println!("  deleted at the deadline     {}", s.deleted_at_deadline);
    println!("  drain done                  {}", secs(s.drain_done));
    println!("  slack before the deadline   {}", secs(s.slack_s));
    if let Some((name, ready, desired)) = &s.lowest_ready {
        println!("  fewest Ready replicas       {ready} of {desired} ({name})");
    }
    if let Some((pod, t)) = &s.slowest {
        println!("  slowest pod to go           {pod}, {t:.3}s after its eviction");
    }
    println!("  replicas rescheduled        {}", s.rescheduled);
    println!("  replicas back to desired    {}", secs(s.replicas_back));
    if s.acknowledged.is_some() {
        println!("  acknowledged to the cloud   {}", secs(s.acknowledged));
    }
    if s.most_waiting > 0 || s.nodes_added > 0 {
        println!("  most replicas waiting       {}", s.most_waiting);
        println!("  nodes added (autoscaler)    {}", s.nodes_added);
    }
    if s.instance_ended.is_some() {
        println!("  instance ended              {}", secs(s.instance_ended));
        println!("  its node deleted            {}", secs(s.node_deleted));
    }
}
