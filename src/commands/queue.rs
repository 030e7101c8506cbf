//! `queue`: the cluster-wide controller. Wires the AWS configuration, the SQS queue, the
//! watched node index, the admin listener and the reporters around `controller`.

use crate::cli::QueueArgs;
use crate::commands::wiring;
use crate::controller::resolve::Resolver;
use crate::controller::{Controller, ControllerConfig};
use crate::responder::Responder;

/// `queue`. About 110 lines: the mode's wiring in the order it must happen (AWS and the
/// cluster, the admin listener, the node index, the reporters, the responder, the claims, the
/// controller), each step a call; read best as one sequence.
pub async fn run(args: QueueArgs) -> anyhow::Result<()> {
    run_until(args, crate::signals::shutdown(), None, None).await
}

/// `run`, until `stop`; every update also goes to `tap` (the demo's timeline). `aws`: an AWS
/// configuration made by the caller (the demo's stand-in, with its own keys), instead of the
/// one the flags and the environment give.
pub async fn run_until(
    args: QueueArgs,
    stop: impl std::future::Future<Output = ()>,
    tap: Option<tokio::sync::mpsc::UnboundedSender<sih_report::Update>>,
    aws: Option<sih_queue::SdkConfig>,
) -> anyhow::Result<()> {
    let telling_config = wiring::Telling::check(&args.report)?;
    let aws = match aws {
        Some(aws) => aws,
        None => aws_setup(&args).await?,
    };
    let client = sih_node::client(args.kube.kubeconfig.as_deref()).await?;
    // One receive can wait 20 s: stalled means no receive completed for three visibility
    // periods (at least a minute); readiness fails sooner, while receives fail.
    let stall = (args.visibility_timeout * 3).max(std::time::Duration::from_secs(60));
    let (metrics, health) = wiring::start_admin(
        &args.report,
        crate::admin::health::Health::new(std::time::Duration::from_secs(20)).stalls_after(stall),
    )
    .await?;
    let aws_errors = sih_queue::Counted::new(std::sync::Arc::new(AwsErrors(metrics.clone())));

    let queue = sih_queue::Queue::new(&aws, &args.queue_url).counting_errors(aws_errors.clone());
    let (index, _watch) = sih_node::watch_nodes(client.clone()).await;
    tracing::info!(nodes = index.len(), queue = %args.queue_url, "node index ready");
    let managed_tag = args.managed_tag.clone().filter(|t| !t.is_empty());
    let directory = if Resolver::needs_ec2(args.use_provider_id, managed_tag.as_deref()) {
        let ec2 = sih_queue::Ec2::new(&aws)?.counting_errors(aws_errors.clone());
        // Names and zones never change for an instance's life; tags may, hence a bound.
        Some(sih_queue::Directory::spawn(
            ec2,
            std::time::Duration::from_secs(600),
        ))
    } else {
        None
    };
    let off = sih_node::access::Switches::default();
    crate::commands::permissions::spawn_check(
        client.clone(),
        crate::commands::permissions::Wanted {
            node_index: true,
            ..wiring::wanted(&args.drain, &args.act, &args.report, &args.reserve)
        },
        off.clone(),
        metrics.clone(),
        args.kube.api_timeout,
    );
    let facts = wiring::shared_facts();
    let resolver = Resolver {
        index,
        directory,
        use_provider_id: args.use_provider_id,
        managed_tag,
        facts: Some(facts.clone()),
        region: aws.region().map(ToString::to_string).unwrap_or_default(),
    };

    let (tx, reporting) = wiring::spawn_reporters(
        telling_config,
        &args.report,
        &args.act,
        &client,
        &metrics,
        wiring::Reporting {
            name: "queue",
            // Each Event goes on its notice's node; the controller's pod reports them.
            node: "",
            reporter: Some(
                args.me
                    .pod_name
                    .clone()
                    .unwrap_or_else(|| "queue-controller".into()),
            ),
            // Each instance's facts, as EC2 describes it to the resolver.
            facts: facts.clone(),
            tap,
            api_timeout: args.kube.api_timeout,
            off: off.clone(),
        },
    );
    let mut responder_config = wiring::responder_config(
        sih_core::Source::Queue,
        args.actions.policy(args.state_change_action),
        &args.drain,
        &args.act,
        args.me.own_pod(),
        args.kube.api_timeout,
    );
    if args.lb_target_health {
        let elbv2 = sih_queue::Elbv2::new(&aws)?.counting_errors(aws_errors.clone());
        responder_config.drain.target_health = Some(sih_node::lb::LbHealth(std::sync::Arc::new(
            TargetHealthOf(elbv2),
        )));
    }
    // Nodes come and go: what matters about one is on its record once nothing is pending.
    responder_config.drain.off = off;
    responder_config.forget_idle = Some(std::time::Duration::from_secs(60));
    responder_config.max_drains = Some(args.workers as usize);
    responder_config.drain.reserve = wiring::reservations(
        &args.reserve,
        &client,
        None,
        args.kube.api_timeout,
        args.act.dry_run,
    );
    let (responder, _actor) =
        Responder::spawn(responder_config, client.clone(), tx, health.clone());
    let config = ControllerConfig {
        dry_run: args.act.dry_run,
        workers: args.workers as usize,
        visibility: args.visibility_timeout,
        heartbeat_interval: Some(args.heartbeat_interval).filter(|d| !d.is_zero()),
        heartbeat_until: args.heartbeat_until,
        delete_unknown: args.delete_if_node_not_found,
        complete_delay: args.complete_lifecycle_action_delay,
        launch_ready_timeout: args.launch_ready_timeout,
        claim_retention: args.claim_retention,
    };
    let hooks = sih_queue::Hooks::new(&aws).counting_errors(aws_errors);
    // Replicas coordinate through a Lease per node in our own namespace: short claims, renewed
    // often, so a dead replica's nodes are taken over in seconds.
    let holder = args
        .me
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("queue-controller-{}", std::process::id()));
    let claims = if args.act.dry_run {
        None
    } else {
        Some(claims(&args, &client, &holder).await?)
    };
    let ran = Controller::new(
        config, queue, hooks, claims, responder, resolver, metrics, health,
    )
    .run(stop)
    .await;
    wiring::finish(reporting).await;
    ran.map_err(|e| anyhow::anyhow!("cannot read the queue {}: {e}", args.queue_url))
}

/// The AWS configuration, its region first: without one no AWS call can work, and saying why
/// beats connecting to the cluster and building a node index for nothing.
async fn aws_setup(args: &QueueArgs) -> anyhow::Result<sih_queue::SdkConfig> {
    let region = args
        .aws_region
        .clone()
        .filter(|r| !r.is_empty())
        .or_else(|| sih_queue::sqs::region_of_queue_url(&args.queue_url));
    let aws = sih_queue::sqs::aws_config(region, args.aws_endpoint.clone()).await;
    if aws.region().is_none() {
        anyhow::bail!(
            "no AWS region: --aws-region (AWS_REGION) is unset and the queue URL {:?} names none \
             (an SQS queue URL is https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE)",
            args.queue_url
        );
    }
    Ok(aws)
}

/// This replica's claims, a Lease per node in our own namespace: told (the downward API), else
/// the one our ServiceAccount's token is mounted for. The shipped Role grants Leases there and
/// nowhere else.
async fn claims(
    args: &QueueArgs,
    client: &kube::Client,
    holder: &str,
) -> anyhow::Result<sih_node::Claims> {
    let namespace = match args.me.pod_namespace.clone() {
        Some(ns) => ns,
        None => match std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE) {
            Ok(ns) if !ns.trim().is_empty() => ns.trim().to_owned(),
            _ => {
                tracing::warn!(
                    "NAMESPACE is not set and no service-account mount says it: Leases go to \"default\""
                );
                "default".to_owned()
            }
        },
    };
    let claims = sih_node::Claims::new(
        client.clone(),
        &namespace,
        holder,
        args.claim_ttl.max(std::time::Duration::from_secs(3)),
        args.kube.api_timeout,
    );
    // A Lease that cannot be written would send every message back, forever: refuse to start
    // with the reason (an API server that is only down is waited for, as usual).
    if let Err(sih_node::NodeError::Api(e)) = claims.heartbeat().await
        && matches!(
            sih_node::classify(&e),
            sih_node::ApiClass::Forbidden | sih_node::ApiClass::NotFound
        )
    {
        anyhow::bail!(
            "cannot write this replica's Lease in namespace {namespace:?} ({e}): set NAMESPACE to the pod's namespace (the downward API) and bind the Role of deploy/manifests/spot-interrupt-handler-queue.yaml there"
        );
    }
    Ok(claims)
}

/// Where a pod finds the namespace its ServiceAccount's token was mounted for.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// ELBv2's word on a node's targets, for the drain's wait before Service endpoints leave.
struct TargetHealthOf(sih_queue::Elbv2);

impl sih_node::lb::TargetHealth for TargetHealthOf {
    fn groups<'a>(
        &'a self,
        node: &'a sih_node::lb::NodeTargets,
    ) -> sih_node::lb::BoxFuture<'a, Result<Vec<String>, sih_node::lb::LbError>> {
        Box::pin(async move {
            self.0
                .groups_holding(|id| node.holds(id))
                .await
                .map_err(lb_error)
        })
    }

    fn serving<'a>(
        &'a self,
        node: &'a sih_node::lb::NodeTargets,
        groups: &'a [String],
    ) -> sih_node::lb::BoxFuture<'a, Result<usize, sih_node::lb::LbError>> {
        Box::pin(async move {
            self.0
                .serving_in(groups, |id| node.holds(id))
                .await
                .map_err(lb_error)
        })
    }
}

/// ELBv2's error as the drain's wait knows it: whether asking again may help.
fn lb_error(e: sih_queue::elbv2::Elbv2Error) -> sih_node::lb::LbError {
    if e.retryable {
        sih_node::lb::LbError::Failed(e.to_string())
    } else {
        sih_node::lb::LbError::Refused(e.to_string())
    }
}

/// Failed AWS calls go to the error metric.
struct AwsErrors(std::sync::Arc<sih_report::Metrics>);

impl sih_queue::ErrorSink for AwsErrors {
    fn aws_error(
        &self,
        service: &'static str,
        operation: &'static str,
        class: sih_queue::ErrorClass,
    ) {
        self.0.aws_error(service, operation, class.label());
    }
}
