//! `demo --mode queue`: the cluster story fed through SQS, as Karpenter and NTH's queue mode
//! users run it. The controller (`queue`, in this process) consumes EventBridge-shaped
//! messages from a stand-in for the few SQS, EC2 and Auto Scaling calls it makes
//! (`sih-sim-aws`, nothing installed): a rebalance recommendation for the spot node's
//! instance, then its spot interruption warning, then the Auto Scaling group's terminate
//! lifecycle action for it — one evacuation; the hook is answered with CONTINUE once the node
//! is drained, and every message is deleted only after its action.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde_json::json;
use sih_report::Update;
use spot_interrupt_handler::cli::{Cli, Command};
use tokio::time::Instant;

use crate::cli::DemoArgs;
use crate::demo::{
    LOOPBACK, Summary, Timeline, deployments_whole, is_daemon_pod, narrate, print_summary,
    say_rescheduled, start_cluster, until_workload_ready,
};

const QUEUE: &str = "spot-events";
const GROUP: &str = "spot-nodes";
const HOOK: &str = "drain-before-terminate";
/// The story's bound: the drain, the hook's answer and the queue emptied.
const LIMIT: Duration = Duration::from_secs(60);

/// The stand-in's instances: the cluster's nodes, as EC2 would describe them.
fn instances(nodes: &[Node]) -> Vec<sih_sim_aws::Instance> {
    nodes
        .iter()
        .filter_map(|n| {
            let meta = &n.metadata;
            let ann = meta.annotations.as_ref()?;
            let labels = meta.labels.clone().unwrap_or_default();
            let spot = labels.get("lifecycle").is_some_and(|l| l == "Ec2Spot");
            Some(sih_sim_aws::Instance {
                id: ann.get("sim.spot-interrupt-handler/instance-id")?.clone(),
                private_dns_name: meta.name.clone()?,
                private_ip: ann
                    .get("sim.spot-interrupt-handler/internal-ip")
                    .cloned()
                    .unwrap_or_default(),
                availability_zone: labels
                    .get("topology.kubernetes.io/zone")
                    .cloned()
                    .unwrap_or_default(),
                instance_type: labels
                    .get("node.kubernetes.io/instance-type")
                    .cloned()
                    .unwrap_or_default(),
                tags: if spot {
                    vec![("aws:autoscaling:groupName".into(), GROUP.into())]
                } else {
                    Vec::new()
                },
            })
        })
        .collect()
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.view.is_some() || args.keep_running {
        bail!("--mode queue tells its story in the terminal, without --view or --keep-running");
    }
    if args.cloud != crate::cli::DemoCloud::Aws {
        bail!("--mode queue reads EC2's and Auto Scaling's messages: it runs with --cloud aws");
    }
    if args.scenario != crate::cli::DemoScenario::Drain {
        bail!("--mode queue tells the drain story: it runs without --scenario");
    }
    let (cluster, kubeconfig) =
        start_cluster(sih_sim_cluster::ClusterConfig::default(), "-queue").await?;
    let client = sih_node::client(Some(&kubeconfig)).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let all_nodes = nodes.list(&ListParams::default()).await?.items;
    let known = instances(&all_nodes);
    let aws = sih_sim_aws::Aws::new(known.clone());
    let stand_in = aws.start(LOOPBACK).await?;
    let queue_url = aws.create_queue(&stand_in.url(), QUEUE);
    let spot = all_nodes
        .iter()
        .find(|n| {
            n.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.get("lifecycle").is_some_and(|v| v == "Ec2Spot"))
        })
        .and_then(|n| n.metadata.name.clone())
        .ok_or_else(|| anyhow!("the simulated cluster has no spot node"))?;
    let instance = known
        .iter()
        .find(|i| i.private_dns_name == spot)
        .map(|i| i.id.clone())
        .ok_or_else(|| anyhow!("the spot node has no instance"))?;
    let pods: Api<Pod> = Api::all(client.clone());
    let deployments: Api<Deployment> = Api::all(client.clone());
    until_workload_ready(&pods, 0, Duration::from_secs(10)).await?;
    let before: HashSet<String> = pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let on_spot: Vec<String> = pods
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|p| {
            !is_daemon_pod(p) && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&spot)
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    if !args.json {
        println!(
            "spot-interrupt-handler demo, queue mode: a simulated cluster of {} nodes; spot node {spot} (instance {instance}, Auto Scaling group {GROUP}) runs {} workload pods.\n\
             The controller consumes the SQS queue {QUEUE} on a stand-in for SQS, EC2 and Auto Scaling ({}); EventBridge sends it a rebalance recommendation, then the spot interruption warning, then the group's terminate lifecycle action.\n",
            all_nodes.len(),
            on_spot.len(),
            stand_in.url()
        );
    }

    let (tap, mut updates) = tokio::sync::mpsc::unbounded_channel::<Update>();
    let kc = kubeconfig.to_string_lossy().into_owned();
    let endpoint = stand_in.url();
    let cli = Cli::try_parse_from([
        "spot-interrupt-handler",
        "queue",
        "--queue-url",
        &queue_url,
        "--aws-endpoint",
        &endpoint,
        "--kubeconfig",
        &kc,
        "--admin-listen",
        "127.0.0.1:0",
        "--pod-namespace",
        "default",
        "--cluster-name",
        "demo",
        "--heartbeat-interval",
        "5s",
    ])?;
    let Some(Command::Queue(queue_args)) = cli.command else {
        bail!("internal: the demo's controller arguments did not parse as `queue`");
    };
    let aws_config = sih_queue::sqs::stand_in_config(&endpoint).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(spot_interrupt_handler::commands::queue::run_until(
        *queue_args,
        async move {
            let _ = stopped.await;
        },
        Some(tap),
        Some(aws_config),
    ));

    let tl = Timeline {
        json: args.json,
        t0: Instant::now(),
    };
    let mut s = Summary::default();
    let [rebalance, warning, lifecycle] = sih_sim_aws::story_messages(&instance, GROUP, HOOK);
    // Each message a moment after the one before, as EventBridge would deliver them.
    let mut to_send = vec![
        (Duration::ZERO, rebalance),
        (Duration::from_secs(2), warning),
        (Duration::from_secs(3), lifecycle),
    ]
    .into_iter();
    let mut next = to_send.next();
    let mut sent = 0usize;
    let mut continued: Option<f64> = None;
    let mut emptied: Option<f64> = None;
    let mut seen_new: HashSet<String> = HashSet::new();
    let mut check = tokio::time::interval(Duration::from_millis(100));
    let give_up = tl.t0 + LIMIT;
    loop {
        tokio::select! {
            Some(u) = updates.recv() => narrate(&tl, &mut s, u),
            _ = check.tick() => {
                if let Some((after, (kind, body))) = &next
                    && tl.t0.elapsed() >= *after
                {
                    aws.send(QUEUE, body);
                    sent += 1;
                    tl.say(
                        "message-sent",
                        json!({"detail_type": kind, "instance": instance}),
                        format!("SQS: {kind} for {instance}"),
                    );
                    next = to_send.next();
                }
                for call in aws.lifecycle_calls() {
                    if continued.is_none() && call["action"] == "CompleteLifecycleAction" {
                        continued = Some(tl.at());
                        tl.say(
                            "lifecycle-completed",
                            json!({"group": call["group"], "hook": call["hook"], "result": call["result"]}),
                            format!("Auto Scaling: lifecycle hook {} of {} answered {}", call["hook"].as_str().unwrap_or_default(), call["group"].as_str().unwrap_or_default(), call["result"].as_str().unwrap_or_default()),
                        );
                    }
                }
                let list = pods.list(&ListParams::default()).await?.items;
                say_rescheduled(&tl, &mut s, &list, &before, &spot, &mut seen_new);
                if next.is_none() && emptied.is_none() && aws.depth(QUEUE) == (0, 0) {
                    emptied = Some(tl.at());
                    tl.say("queue-empty", json!({"queue": QUEUE, "messages": sent}),
                        format!("SQS: all {sent} messages deleted, each after its action"));
                }
                if s.drain_done.is_some() && s.replicas_back.is_none()
                    && deployments_whole(&deployments).await? && s.rescheduled >= on_spot.len()
                {
                    s.replicas_back = Some(tl.at());
                    tl.say("replicas-back", json!({"node": spot}),
                        "every Deployment is back to its desired replicas, none on the spot node".to_owned());
                }
                if s.replicas_back.is_some() && continued.is_some() && emptied.is_some() {
                    break;
                }
                if Instant::now() > give_up {
                    break;
                }
            }
        }
    }
    let _ = stop.send(());
    if let Ok(Err(e)) = controller.await {
        tracing::warn!(error = %e, "the controller stopped with an error");
    }
    print_summary(&args, &s);
    if args.json {
        println!(
            "{}",
            json!({"queue": {"messages_sent": sent,
                "lifecycle_completed_s": continued.map(|t| (t * 1000.0).round() / 1000.0),
                "queue_empty_s": emptied.map(|t| (t * 1000.0).round() / 1000.0),
                "lifecycle_calls": aws.lifecycle_calls()}})
        );
    } else {
        let secs = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}s"));
        println!("  lifecycle hook answered     {}", secs(continued));
        println!("  queue emptied               {}", secs(emptied));
    }
    // Not graceful stops: the controller's watches and the SDK's pooled connections outlive
    // it (their tasks end with the process), and a graceful stop would wait for them.
    drop(stand_in);
    drop(cluster);
    let _ = std::fs::remove_file(&kubeconfig);
    if !(s.drain_ok && continued.is_some() && emptied.is_some() && s.replicas_back.is_some()) {
        bail!(
            "the queue story did not finish within {}s: drain done {}, hook answered {}, queue empty {}",
            LIMIT.as_secs(),
            s.drain_ok,
            continued.is_some(),
            emptied.is_some()
        );
    }
    Ok(())
}
