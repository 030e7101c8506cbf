//! The command line: every flag also reads an environment variable (`--help` shows both).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod reference;

/// `--version` says which build this is: the agent image's leaves queue mode out.
#[cfg(feature = "queue")]
const BUILD: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (full: imds, queue, drain, undrain)"
);
#[cfg(not(feature = "queue"))]
const BUILD: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (agent: imds, drain, undrain; no queue mode)"
);

#[derive(Debug, Parser)]
#[command(
    name = "spot-interrupt-handler",
    version = BUILD,
    about,
    long_about = None,
    after_help = "Rehearsals without AWS or a cluster (demo, simulators) are in the other binary, spot-interrupt-handler-sim."
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    /// With no subcommand, aws-node-termination-handler's environment variables configure the
    /// agent (a drop-in for its image).
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The agent for one node (DaemonSet): polls the instance metadata service and evacuates
    /// its node when the instance is about to go.
    Imds(Box<ImdsArgs>),
    /// The cluster-wide controller (Deployment): consumes EventBridge and Auto Scaling
    /// messages from SQS and evacuates the nodes they name.
    Queue(Box<QueueArgs>),
    /// Fence NODE and drain it before a deadline (a deadline-aware `kubectl drain`).
    Drain(DrainCommandArgs),
    /// Undo a fence: remove our taints, label and notice; uncordon unless cordoned before us.
    Undrain(UndrainArgs),
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Kubernetes")]
pub struct KubeArgs {
    /// Kubeconfig file; without it, the in-cluster configuration, else `KUBECONFIG`, else
    /// `~/.kube/config`.
    #[arg(long, env = "SIH_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The longest one Kubernetes API call may take: an API server that accepts a request and
    /// never answers holds nothing up longer (writes are retried, a drain step moves on). Range: 100ms to 10m.
    #[arg(long, env = "API_TIMEOUT", value_parser = duration_in("100ms", "10m"), default_value = "10s")]
    pub api_timeout: Duration,
}

/// Who we are when we run in a pod (from the downward API): a drain never evicts our own pod,
/// and Events name it as their reporter.
#[derive(Debug, Args)]
#[command(next_help_heading = "Kubernetes")]
pub struct SelfArgs {
    /// Our own pod's name (downward API), never evicted and named in Events.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Our own pod's namespace (downward API).
    #[arg(long, env = "NAMESPACE")]
    pub pod_namespace: Option<String>,
}

impl SelfArgs {
    pub fn own_pod(&self) -> Option<(String, String)> {
        self.pod_namespace.clone().zip(self.pod_name.clone())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnPdbDeadline {
    /// Delete a pod its budget still protects once its grace period would no longer fit.
    Delete,
    /// Keep respecting the budget until the end.
    Wait,
}

/// How pods leave a node; shared by every command that drains.
#[derive(Debug, Args)]
#[command(next_help_heading = "Drain")]
pub struct DrainFlags {
    /// Evictions in flight at once. Range: 1 to 1000.
    #[arg(long, env = "MAX_CONCURRENT_EVICTIONS", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_concurrent_evictions: u32,
    /// Upper bound on every pod's grace period: whole seconds (`30`) or a duration (`30s`,
    /// `2m`); a negative number (NTH's `-1`) means the pod's own, the default.
    #[arg(
        long,
        env = "POD_TERMINATION_GRACE_PERIOD",
        allow_negative_numbers = true,
        value_parser = parse_grace_period
    )]
    pub pod_termination_grace_period: Option<i64>,
    /// Time kept free before the deadline. Range: 1s to 10m.
    #[arg(long, env = "DEADLINE_MARGIN", value_parser = duration_in("1s", "10m"), default_value = "5s")]
    pub deadline_margin: Duration,
    /// Pods that are endpoints of a Service (its EndpointSlices) wait this long after the fence
    /// labelled the node out of external load balancers before they are evicted, so the load
    /// balancers stop sending them requests first; never past the last moment their grace
    /// still fits before the deadline. Other pods go at once. 0s: no wait. Range: 0s to 10m.
    #[arg(long, env = "LB_DRAIN_DELAY", value_parser = duration_in("0s", "10m"), default_value = "0s")]
    pub lb_drain_delay: Duration,
    /// Deployments carrying all these labels (`k=v,k2=v2`) are surged before their pods leave,
    /// as if annotated `spot-interrupt-handler/surge: "true"`. Empty: only annotated ones.
    #[arg(long, env = "SURGE_SELECTOR", default_value = "", value_parser = parse_label_pairs)]
    pub surge_selector: std::collections::BTreeMap<String, String>,
    /// What to do with a pod its PodDisruptionBudget still protects near a hard deadline.
    #[arg(long, env = "ON_PDB_DEADLINE", value_enum, default_value_t = OnPdbDeadline::Delete)]
    pub on_pdb_deadline: OnPdbDeadline,
    /// Taint effect (default: NoSchedule, PreferNoSchedule for rebalance recommendations).
    /// NTH's TAINT_EFFECT (its TAINT_NODE is always on here).
    #[arg(long, env = "TAINT_EFFECT", value_parser = ["NoSchedule", "PreferNoSchedule", "NoExecute"])]
    pub taint_effect: Option<String>,
}

/// Which workloads get placeholders (`--reserve-capacity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReserveCapacity {
    /// None: no placeholder is made, no call is spent on them.
    #[value(name = "false")]
    Off,
    /// Only workloads whose pods say `spot-interrupt-handler/reserve-capacity: "true"`.
    Annotated,
    /// Every workload, except pods that say `"false"`.
    #[value(name = "true")]
    All,
}

/// Capacity first (issue 31): placeholders that make the autoscaler start the replacement
/// capacity at the notice.
#[derive(Debug, Args)]
#[command(next_help_heading = "Capacity first")]
pub struct ReserveFlags {
    /// At a notice that drains a node, create one placeholder pod (a pause container at a
    /// priority below every workload, preempted by any of them) for each pod the drain moves,
    /// so that the cluster-autoscaler or Karpenter starts capacity for all of them at once.
    #[arg(long, env = "RESERVE_CAPACITY", value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub reserve_capacity: ReserveCapacity,
    /// The placeholders' image: the kubelet's own sandbox image, which nodes usually have.
    #[arg(long, env = "RESERVE_IMAGE", default_value = sih_node::reserve::DEFAULT_IMAGE)]
    pub reserve_image: String,
    /// The longest a placeholder lives; it goes sooner when its drain is withdrawn or the
    /// workloads it stands for are Ready again. Range: 10s to 1h.
    #[arg(long, env = "RESERVE_TTL", value_parser = duration_in("10s", "1h"), default_value = "5m")]
    pub reserve_ttl: Duration,
}

#[derive(Debug, Args)]
pub struct DrainCommandArgs {
    /// The node to drain.
    pub node: String,
    /// When the instance goes away: a duration from now (`90s`) or an RFC 3339 time.
    #[arg(long, env = "SIH_DRAIN_DEADLINE", default_value = "120s")]
    pub deadline: String,
    /// The kind of notice to record (its taint key and Event reason).
    #[arg(long, env = "SIH_DRAIN_KIND", default_value = "spot-interruption")]
    pub kind: sih_core::NoticeKind,
    /// Only say what would be done; write nothing.
    #[arg(long, env = "DRY_RUN", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub dry_run: bool,
    #[command(flatten)]
    pub drain: DrainFlags,
    #[command(flatten)]
    pub me: SelfArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Debug, Args)]
pub struct UndrainArgs {
    /// The node to restore.
    pub node: String,
    /// Undo only this kind of notice's fence (default: all of ours).
    #[arg(long, env = "SIH_UNDRAIN_KIND")]
    pub kind: Option<sih_core::NoticeKind>,
    #[command(flatten)]
    pub me: SelfArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// An action's name, its choices listed (in `--help`, the reference, the chart's schema).
fn action() -> impl clap::builder::TypedValueParser<Value = sih_core::Action> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["none", "notify", "taint", "cordon", "drain"])
        .try_map(|s| s.parse::<sih_core::Action>())
}

/// What to do about each kind of notice: `none` < `notify` < `taint` < `cordon` < `drain`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Actions")]
pub struct ActionFlags {
    /// On a spot interruption notice: none, notify, taint, cordon or drain (NTH's
    /// ENABLE_SPOT_INTERRUPTION_DRAINING: drain or none).
    #[arg(long, env = "SPOT_INTERRUPTION_ACTION", value_parser = action(), default_value = "drain")]
    pub spot_interruption_action: sih_core::Action,
    /// On a rebalance recommendation (taint: PreferNoSchedule). NTH's
    /// ENABLE_REBALANCE_MONITORING is cordon, its ENABLE_REBALANCE_DRAINING drain.
    #[arg(long, env = "REBALANCE_ACTION", value_parser = action(), default_value = "taint")]
    pub rebalance_action: sih_core::Action,
    /// On an active scheduled maintenance event (NTH's ENABLE_SCHEDULED_EVENT_DRAINING: drain
    /// or none).
    #[arg(long, env = "SCHEDULED_MAINTENANCE_ACTION", value_parser = action(), default_value = "drain")]
    pub scheduled_maintenance_action: sih_core::Action,
    /// On an ASG target lifecycle state of Terminated (or a terminate lifecycle hook). NTH's
    /// ENABLE_ASG_LIFECYCLE_DRAINING: drain or none.
    #[arg(long, env = "ASG_TERMINATION_ACTION", value_parser = action(), default_value = "drain")]
    pub asg_termination_action: sih_core::Action,
    /// On a live migration or a short pause of the running instance (GCE
    /// MIGRATE_ON_HOST_MAINTENANCE, Azure Freeze).
    #[arg(long, env = "LIVE_MIGRATION_ACTION", value_parser = action(), default_value = "notify")]
    pub live_migration_action: sih_core::Action,
    /// Never go beyond a cordon, whatever the kind (NTH's CORDON_ONLY).
    #[arg(long, env = "CORDON_ONLY", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub cordon_only: bool,
}

impl ActionFlags {
    /// The policy; `state_change` is the queue's own flag (the metadata service never reports
    /// instance state changes, so `imds` has no such flag and passes the default).
    pub fn policy(&self, state_change: sih_core::Action) -> sih_core::ActionPolicy {
        sih_core::ActionPolicy {
            spot_interruption: self.spot_interruption_action,
            rebalance: self.rebalance_action,
            scheduled_maintenance: self.scheduled_maintenance_action,
            asg_termination: self.asg_termination_action,
            state_change,
            live_migration: self.live_migration_action,
            cap: self.cordon_only.then_some(sih_core::Action::Cordon),
        }
    }
}

/// What both the agent and the queue controller do after deciding to act on a notice.
#[derive(Debug, Args)]
#[command(next_help_heading = "Actions")]
pub struct NoticeFlags {
    /// Drain time budget when the notice has no deadline (ASG termination, a rebalance drain,
    /// lifecycle hooks); NTH's NODE_TERMINATION_GRACE_PERIOD. Range: 1s to 24h.
    #[arg(long, env = "DRAIN_BUDGET", value_parser = duration_in("1s", "24h"), default_value = "120s")]
    pub drain_budget: Duration,
    /// After a drain, taint the node `node.kubernetes.io/out-of-service=nodeshutdown:NoExecute`
    /// so volumes detach at once once the instance is gone.
    #[arg(long, env = "ENABLE_OUT_OF_SERVICE_TAINT", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub out_of_service_taint: bool,
    /// Undo a rebalance recommendation's fence this long after it was seen when no
    /// interruption followed (the recommendation may stay visible for hours); 0s keeps the
    /// fence as long as the recommendation. Range: 0s to 168h.
    #[arg(long, env = "REBALANCE_TTL", value_parser = duration_in("0s", "168h"), default_value = "0s")]
    pub rebalance_ttl: Duration,
    /// Write nothing anywhere (Kubernetes, AWS, webhooks); log what would be done.
    #[arg(long, env = "DRY_RUN", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub dry_run: bool,
}

/// How we tell people: admin endpoint (metrics, probes), Kubernetes Events, webhooks.
#[derive(Debug, Args)]
#[command(next_help_heading = "Telling and probes")]
pub struct ReportFlags {
    /// Serves /metrics, /healthz and /readyz (NTH's PROMETHEUS_SERVER_PORT, always on here).
    #[arg(long, env = "ADMIN_LISTEN", default_value = "0.0.0.0:9092")]
    pub admin_listen: SocketAddr,
    /// Also serve the liveness probe on this address (NTH's separate probes port).
    #[arg(long, env = "PROBES_LISTEN")]
    pub probes_listen: Option<SocketAddr>,
    /// Path of the liveness probe on `--probes-listen`.
    #[arg(long, env = "PROBES_SERVER_ENDPOINT", default_value = "/healthz")]
    pub probes_path: String,
    /// The cluster's name, for webhook messages.
    #[arg(long, env = "CLUSTER", default_value = "")]
    pub cluster_name: String,
    /// Record Kubernetes Events on the node and on evicted pods (NTH's EMIT_KUBERNETES_EVENTS,
    /// on by default here).
    #[arg(long, env = "KUBERNETES_EVENTS", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", value_parser = BoolishValueParser::new())]
    pub kubernetes_events: bool,
    /// Annotations on every Event, `k=v,k2=v2`.
    #[arg(long, env = "KUBERNETES_EVENTS_EXTRA_ANNOTATIONS", default_value = "")]
    pub events_extra_annotations: String,
    /// Where to post a message when a notice is detected and when its drain ends.
    #[arg(long, env = "WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// Same as `--webhook-url` (kube-spot-termination-notice-handler's name).
    #[arg(long, env = "SLACK_URL", hide = true)]
    pub slack_url: Option<String>,
    /// Message template with NTH's field names (`{{ .EventID }}`, `{{ .Kind }}`, ...) and
    /// `{{ .ClusterName }}`; default: a Slack-shaped JSON text.
    #[arg(long, env = "WEBHOOK_TEMPLATE")]
    pub webhook_template: Option<String>,
    /// The template read from a file (e.g. a mounted ConfigMap).
    #[arg(long, env = "WEBHOOK_TEMPLATE_FILE")]
    pub webhook_template_file: Option<PathBuf>,
    /// Extra headers: a JSON object (NTH's form) or `Name: value` pairs separated by commas.
    #[arg(long, env = "WEBHOOK_HEADERS", default_value = "")]
    pub webhook_headers: String,
    /// HTTP(S) proxy for webhook requests (`http://`, `https://`; `socks5://` is not built in).
    #[arg(long, env = "WEBHOOK_PROXY", value_parser = proxy_url)]
    pub webhook_proxy: Option<String>,
    /// Per attempt. Range: 100ms to 5m.
    #[arg(long, env = "WEBHOOK_TIMEOUT", value_parser = duration_in("100ms", "5m"), default_value = "5s")]
    pub webhook_timeout: Duration,
    /// Attempts per message (retries back off and stop at the notice's deadline). Range: 1 to 20.
    #[arg(long, env = "WEBHOOK_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub webhook_attempts: u32,
    /// A template written for aws-node-termination-handler: `{{ .Kind }}` as NTH names kinds
    /// (`SPOT_ITN`, `SCHEDULED_EVENT`, ...) and `{{ .StartTime }}` as NTH means it (when the
    /// instance goes, our `.Deadline`) instead of the detection. On in the NTH drop-in.
    #[arg(long, env = "WEBHOOK_NTH_FIELDS", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub webhook_nth_fields: bool,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Source")]
pub struct ImdsArgs {
    /// The node this agent runs on (downward API `spec.nodeName`). Without it, the node is
    /// found from the instance: the node named as the cloud names the instance (EC2's private
    /// DNS name, GCE's instance name, Azure's computer name), else the one whose
    /// `spec.providerID` is the instance's (that needs list on nodes).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Which cloud's metadata service tells of interruptions: aws (EC2's instance metadata),
    /// gce (Compute Engine's metadata server) or azure (Scheduled Events).
    #[arg(long, env = "CLOUD", value_enum, default_value = "aws")]
    pub cloud: Cloud,
    /// The metadata service. Default: http://169.254.169.254 (aws, azure); for gce
    /// http://$GCE_METADATA_HOST, else http://metadata.google.internal.
    #[arg(long, env = "INSTANCE_METADATA_URL")]
    pub imds_endpoint: Option<String>,
    /// How often every interruption item is read. Range: 50ms to 10m.
    #[arg(long, env = "POLL_INTERVAL", value_parser = duration_in("50ms", "10m"), default_value = "1s")]
    pub poll_interval: Duration,
    /// Attempts per metadata read (NTH's METADATA_TRIES). Range: 1 to 20.
    #[arg(long, env = "METADATA_TRIES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub imds_attempts: u32,
    /// Per metadata request. Range: 10ms to 1m.
    #[arg(long, env = "IMDS_TIMEOUT", value_parser = duration_in("10ms", "1m"), default_value = "1s")]
    pub imds_timeout: Duration,
    /// Seconds since boot, read at start to tell that a scheduled reboot happened (NTH's
    /// UPTIME_FROM_FILE).
    #[arg(long, env = "UPTIME_FILE", default_value = "/proc/uptime")]
    pub uptime_file: PathBuf,
    #[command(flatten)]
    pub act: NoticeFlags,
    #[command(flatten)]
    pub actions: ActionFlags,
    #[command(flatten)]
    pub drain: DrainFlags,
    #[command(flatten)]
    pub reserve: ReserveFlags,
    #[command(flatten)]
    pub report: ReportFlags,
    #[command(flatten)]
    pub me: SelfArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
    // Last in `--help`: what only GCE or Azure reads.
    #[command(flatten)]
    pub clouds: CloudFlags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Cloud {
    Aws,
    Gce,
    Azure,
}

impl ImdsArgs {
    /// The metadata service to read, by cloud unless given.
    pub fn endpoint(&self) -> String {
        match (&self.imds_endpoint, self.cloud) {
            (Some(e), _) => e.clone(),
            (None, Cloud::Gce) => sih_clouds::gce::default_endpoint(),
            (None, Cloud::Aws | Cloud::Azure) => "http://169.254.169.254".into(),
        }
    }
}

/// What only Google Compute Engine and Azure need.
#[derive(Debug, Args)]
#[command(next_help_heading = "GCE and Azure")]
pub struct CloudFlags {
    /// gce: from `preempted` turning TRUE to the instance's stop (GCE gives 30s, hard).
    /// Range: 1s to 10m.
    #[arg(long, env = "GCE_PREEMPTION_NOTICE", value_parser = duration_in("1s", "10m"), default_value = "30s")]
    pub gce_preemption_notice: Duration,
    /// gce: from `maintenance-event` turning to TERMINATE_ON_HOST_MAINTENANCE to the
    /// maintenance (GCE gives 60s). Range: 1s to 1h.
    #[arg(long, env = "GCE_MAINTENANCE_NOTICE", value_parser = duration_in("1s", "1h"), default_value = "60s")]
    pub gce_maintenance_notice: Duration,
    /// gce: how long one watch (`wait_for_change`) waits for a change before it is made
    /// again. Range: 1s to 5m.
    #[arg(long, env = "GCE_WATCH_TIMEOUT", value_parser = duration_in("1s", "5m"), default_value = "20s")]
    pub gce_watch_timeout: Duration,
    /// azure: acknowledge at once the events whose kind is only notified about (Freeze by
    /// default), so Azure goes ahead without waiting their full notice.
    #[arg(long, env = "AZURE_ACK_NOTIFIED", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub azure_ack_notified: bool,
    /// azure: acknowledge events that name other VMs too (they start for all of them).
    #[arg(long, env = "AZURE_ACK_SHARED", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub azure_ack_shared: bool,
    /// azure: how long the first Scheduled Events call may take (it starts the service;
    /// Azure says up to two minutes). Polls go on meanwhile. Range: 1s to 10m.
    #[arg(long, env = "AZURE_FIRST_CALL_TIMEOUT", value_parser = duration_in("1s", "10m"), default_value = "2m")]
    pub azure_first_call_timeout: Duration,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Queue")]
pub struct QueueArgs {
    /// The SQS queue EventBridge (or Auto Scaling) delivers to.
    #[arg(long, env = "QUEUE_URL")]
    pub queue_url: String,
    /// Default: `AWS_REGION`, else the queue URL's region.
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,
    /// Send every AWS call here (a local test server).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint: Option<String>,
    /// Drains in flight at once (fences never wait for them). Range: 1 to 256.
    #[arg(long, env = "WORKERS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: u32,
    /// How long a received message stays hidden from other consumers; extended while its
    /// drain runs; NTH's SQS_MSG_VISIBILITY_TIMEOUT_SEC. Range: 1s to 12h.
    #[arg(long, env = "SQS_MSG_VISIBILITY_TIMEOUT", value_parser = duration_in("1s", "12h"), default_value = "20s")]
    pub visibility_timeout: Duration,
    /// While a terminate hook's drain runs, record a lifecycle heartbeat this often (0s: never;
    /// the hook's own heartbeat timeout then bounds the drain); NTH's HEARTBEAT_INTERVAL.
    /// Range: 0s to 2h.
    #[arg(long, env = "SIH_HEARTBEAT_INTERVAL", value_parser = duration_in("0s", "2h"), default_value = "0s")]
    pub heartbeat_interval: Duration,
    /// Stop recording heartbeats this long after the lifecycle event (a hook cannot be held
    /// longer than 48 h, or 100 heartbeat timeouts); NTH's HEARTBEAT_UNTIL. Range: 0s to 48h.
    #[arg(long, env = "SIH_HEARTBEAT_UNTIL", value_parser = duration_in("0s", "48h"), default_value = "48h")]
    pub heartbeat_until: Duration,
    /// Match instances to nodes by `spec.providerID` only, never asking EC2 (for clusters whose
    /// node names are not the instances' private DNS names). Without it, EC2's
    /// `DescribeInstances` gives the private DNS name, matched against node names and
    /// `kubernetes.io/hostname` labels, with the providerID as a second try.
    #[arg(long, env = "USE_PROVIDER_ID", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub use_provider_id: bool,
    /// Act only on instances carrying this tag key (off by default; aws-node-termination-handler
    /// defaults it on: its MANAGED_TAG with CHECK_TAG_BEFORE_DRAINING). Needs
    /// `ec2:DescribeInstances`.
    #[arg(long, env = "SIH_MANAGED_TAG")]
    pub managed_tag: Option<String>,
    /// Delete a message whose instance is not a node of this cluster (or lacks the managed
    /// tag) and complete its terminate hook; with `false` it is left to come back until the
    /// queue's retention drops it.
    #[arg(long, env = "DELETE_SQS_MSG_IF_NODE_NOT_FOUND", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", value_parser = BoolishValueParser::new())]
    pub delete_if_node_not_found: bool,
    /// Wait this long after a drain before completing its terminate hook (NTH's
    /// COMPLETE_LIFECYCLE_ACTION_DELAY_SECONDS). Range: 0s to 2h.
    #[arg(long, env = "SIH_COMPLETE_LIFECYCLE_ACTION_DELAY", value_parser = duration_in("0s", "2h"), default_value = "0s")]
    pub complete_lifecycle_action_delay: Duration,
    /// A launch hook is completed with CONTINUE once its node is Ready, ABANDON after this. Range: 0s to 2h.
    #[arg(long, env = "LAUNCH_READY_TIMEOUT", value_parser = duration_in("0s", "2h"), default_value = "10m")]
    pub launch_ready_timeout: Duration,
    /// A replica's claim on a node (a Lease) lives this long without a renewal; it is renewed
    /// three times per life. A replica that dies mid-drain is taken over about this long
    /// after its death. Range: 3s to 10m.
    #[arg(long, env = "SIH_CLAIM_TTL", value_parser = duration_in("3s", "10m"), default_value = "6s")]
    pub claim_ttl: Duration,
    /// Released claims are deleted this long after their release. Range: 0s to 168h.
    #[arg(long, env = "SIH_CLAIM_RETENTION", value_parser = duration_in("0s", "168h"), default_value = "10m")]
    pub claim_retention: Duration,
    /// Pods that are endpoints of a Service leave once no ELBv2 target group still sends the
    /// node new requests (its instance or addresses are deregistered: `DescribeTargetHealth`),
    /// never past the last moment their grace still fits before the deadline; other pods go
    /// at once. `--lb-drain-delay` is the fallback while the load balancers cannot be asked.
    /// Needs `elasticloadbalancing:DescribeTargetGroups` and `DescribeTargetHealth`.
    #[arg(long, env = "LB_TARGET_HEALTH", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub lb_target_health: bool,
    /// On an instance state change to stopping, stopped, shutting-down or terminated.
    #[arg(long, env = "STATE_CHANGE_ACTION", value_parser = action(), default_value = "drain")]
    pub state_change_action: sih_core::Action,
    #[command(flatten)]
    pub act: NoticeFlags,
    #[command(flatten)]
    pub actions: ActionFlags,
    #[command(flatten)]
    pub drain: DrainFlags,
    #[command(flatten)]
    pub reserve: ReserveFlags,
    #[command(flatten)]
    pub report: ReportFlags,
    #[command(flatten)]
    pub me: SelfArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log line format (NTH's JSON_LOGGING is json).
    #[arg(long, global = true, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level or tracing filter (e.g. `debug`, `info,sih_imds=debug`).
    #[arg(long, global = true, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Durations as people write them: `1s`, `250ms`, `2m`, `1h30m`.
/// A duration flag's parser that also holds it to its documented range (both ends included):
/// a value outside it is refused at start with the range, before anything else happens
/// (`--poll-interval 0s` used to panic, `1ns` to flood the metadata service).
pub fn duration_in(
    min: &'static str,
    max: &'static str,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s| {
        let d = parse_duration(s)?;
        let bound = |b: &str| parse_duration(b).unwrap_or_default();
        if d < bound(min) || d > bound(max) {
            return Err(format!("{s:?} is outside the range {min} to {max}"));
        }
        Ok(d)
    }
}

/// `k=v,k2=v2` (empty: none).
pub fn parse_label_pairs(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("{p:?} is not key=value"))
        })
        .collect()
}

/// A grace period in whole seconds, written as a number (NTH's form, negative for "the pod's
/// own") or as a duration of whole seconds.
pub fn parse_grace_period(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.trim().parse::<i64>() {
        return Ok(n);
    }
    let d = parse_duration(s)?;
    if d.subsec_nanos() != 0 {
        return Err(format!("{s:?}: a grace period is whole seconds"));
    }
    i64::try_from(d.as_secs()).map_err(|_| format!("{s:?} is too long"))
}

/// A proxy URL the webhook client can use, refused at start otherwise (`ftp://` used to be
/// accepted and every message then failed). The error never repeats the URL: it may hold a
/// password.
fn proxy_url(s: &str) -> Result<String, String> {
    let scheme = s
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("http" | "https") if s.len() > scheme.as_deref().unwrap_or_default().len() + 3 => {
            Ok(s.to_owned())
        }
        Some(other) => Err(format!(
            "the scheme {other:?} is not a proxy we speak: give http:// or https://"
        )),
        None => Err("not a URL: give http://HOST:PORT or https://HOST:PORT".to_owned()),
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a duration like 1s, 250ms or 2m: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("{s:?} must not be negative"))
}

#[cfg(test)]
mod properties {
    //! Flag values as people may type them: a value or a message, never a panic.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn no_duration_makes_the_parser_panic(s in ".{0,30}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn written_durations_read_back(ms in 0u64..10_000_000) {
            prop_assert_eq!(parse_duration(&format!("{ms}ms")), Ok(Duration::from_millis(ms)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `imds --help` reads in groups (it was 302 lines without a heading): where notices come
    /// from, what is done, the drain, telling, Kubernetes, and the other clouds' flags last.
    #[test]
    fn imds_help_is_grouped_with_the_clouds_last() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("imds")
            .unwrap()
            .render_long_help()
            .to_string();
        let at = |h: &str| {
            help.find(&format!("\n{h}:\n"))
                .unwrap_or_else(|| panic!("no {h:?} heading in:\n{help}"))
        };
        let order = [
            "Source",
            "Actions",
            "Drain",
            "Capacity first",
            "Telling and probes",
            "Kubernetes",
            "GCE and Azure",
        ];
        for w in order.windows(2) {
            assert!(at(w[0]) < at(w[1]), "{} before {}", w[0], w[1]);
        }
        assert!(help[at("GCE and Azure")..].contains("--gce-preemption-notice"));
        assert!(help[at("Source")..at("Actions")].contains("--poll-interval"));
    }
    use clap::CommandFactory;

    #[test]
    fn a_webhook_proxy_we_cannot_speak_is_refused_at_start_without_echoing_it() {
        assert!(proxy_url("http://proxy:3128").is_ok());
        assert!(proxy_url("HTTPS://user:pw@proxy:3128").is_ok());
        for bad in [
            "ftp://user:secret@proxy",
            "proxy:3128",
            "http://",
            "socks5://p:1",
        ] {
            let e = proxy_url(bad).unwrap_err();
            assert!(!e.contains("secret") && !e.contains("proxy:"), "{e}");
        }
    }

    #[test]
    fn durations_are_written_like_people_write_them() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }

    /// Every duration and count flag is held to its documented range when it is parsed: the
    /// values that used to panic (`--poll-interval 0s`), flood (`1ns`) or be silently changed
    /// (`--workers 0` ran 1) are refused with the range, and the ends are accepted.
    #[test]
    fn duration_and_count_flags_are_held_to_their_ranges() {
        let imds = |extra: &[&str]| {
            let mut args = vec!["sih", "imds", "--node-name", "n"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args)
        };
        let queue = |extra: &[&str]| {
            let mut args = vec![
                "sih",
                "queue",
                "--queue-url",
                "https://sqs.us-east-1.amazonaws.com/1/q",
            ];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args)
        };
        for bad in ["0s", "1ns", "49ms", "11m"] {
            let e = imds(&["--poll-interval", bad]).unwrap_err().to_string();
            assert!(e.contains("outside the range 50ms to 10m"), "{bad}: {e}");
        }
        for good in ["50ms", "1s", "10m"] {
            assert!(imds(&["--poll-interval", good]).is_ok(), "{good}");
        }
        for (flag, bad) in [
            ("--imds-attempts", "0"),
            ("--webhook-attempts", "21"),
            ("--max-concurrent-evictions", "0"),
            ("--api-timeout", "0s"),
            ("--deadline-margin", "0s"),
        ] {
            assert!(imds(&[flag, bad]).is_err(), "{flag} {bad}");
        }
        for (flag, bad) in [
            ("--workers", "0"),
            ("--claim-ttl", "1s"),
            ("--visibility-timeout", "0s"),
        ] {
            assert!(queue(&[flag, bad]).is_err(), "{flag} {bad}");
        }
        assert!(queue(&["--workers", "1"]).is_ok());
    }

    #[test]
    fn a_grace_period_is_seconds_or_a_duration() {
        assert_eq!(parse_grace_period("30"), Ok(30));
        assert_eq!(parse_grace_period("30s"), Ok(30));
        assert_eq!(parse_grace_period("2m"), Ok(120));
        assert_eq!(parse_grace_period("-1"), Ok(-1));
        assert!(parse_grace_period("1500ms").is_err());
        assert!(parse_grace_period("soon").is_err());
        let cli = Cli::try_parse_from([
            "sih",
            "imds",
            "--node-name",
            "n",
            "--pod-termination-grace-period",
            "45s",
        ])
        .unwrap();
        let Some(Command::Imds(a)) = cli.command else {
            panic!("imds")
        };
        assert_eq!(a.drain.pod_termination_grace_period, Some(45));
    }

    #[test]
    fn switches_take_an_optional_value() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(
                ["spot-interrupt-handler", "drain"]
                    .iter()
                    .chain(args)
                    .copied(),
            )
        };
        let dry = |c: Cli| match c.command {
            Some(Command::Drain(d)) => d.dry_run,
            _ => unreachable!(),
        };
        assert!(dry(parse(&["n1", "--dry-run"]).unwrap()));
        assert!(
            dry(parse(&["--dry-run", "n1"]).unwrap()),
            "a bare switch never takes the next argument"
        );
        assert!(!dry(parse(&["n1", "--dry-run=false"]).unwrap()));
        assert!(dry(parse(&["n1", "--dry-run=yes"]).unwrap()));
        assert!(!dry(parse(&["n1"]).unwrap()));
        assert!(parse(&["n1", "--dry-run=maybe"]).is_err());
    }

    /// `--kubernetes-events` is a switch like the others (`--kubernetes-events=false` turns
    /// it off), and `imds` offers no flag only the queue can use.
    #[test]
    fn events_are_a_switch_and_imds_has_no_queue_flag() {
        let events = |extra: &[&str]| {
            let mut args = vec!["sih", "imds", "--node-name", "n"];
            args.extend_from_slice(extra);
            match Cli::try_parse_from(args).map(|c| c.command) {
                Ok(Some(Command::Imds(a))) => Ok(a.report.kubernetes_events),
                Ok(_) => unreachable!(),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(events(&[]), Ok(true));
        assert_eq!(events(&["--kubernetes-events"]), Ok(true));
        assert_eq!(events(&["--kubernetes-events=false"]), Ok(false));
        assert!(events(&["--kubernetes-events=perhaps"]).is_err());
        assert!(
            events(&["--state-change-action", "none"])
                .unwrap_err()
                .contains("unexpected argument")
        );
        let queue = Cli::try_parse_from([
            "sih",
            "queue",
            "--queue-url",
            "https://sqs.us-east-1.amazonaws.com/1/q",
            "--state-change-action",
            "none",
        ])
        .unwrap();
        let Some(Command::Queue(q)) = queue.command else {
            panic!("queue")
        };
        assert_eq!(q.state_change_action, sih_core::Action::None);
    }

    #[test]
    fn every_flag_has_an_environment_variable() {
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        assert_eq!(
            reference::flags_without_env(&cmd, "spot-interrupt-handler"),
            Vec::<String>::new()
        );
    }
}
