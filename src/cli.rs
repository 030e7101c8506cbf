//! The command line: every flag also reads an environment variable (`--help` shows both).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "spot-interrupt-handler", version, about, long_about = None)]
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
    /// Run the whole story without AWS or a cluster: both simulators and the agent in one
    /// process, a spot interruption, a live timeline and a summary.
    Demo(DemoArgs),
    /// Fence NODE and drain it before a deadline (a deadline-aware `kubectl drain`).
    Drain(DrainCommandArgs),
    /// Undo a fence: remove our taints, label and notice; uncordon unless cordoned before us.
    Undrain(UndrainArgs),
    /// Simulators for tests and rehearsals: no AWS account or cluster needed.
    #[command(subcommand)]
    Simulate(Simulate),
}

#[derive(Debug, Subcommand)]
pub enum Simulate {
    /// A faithful EC2 instance metadata service with interruption scenarios.
    Imds(SimulateImdsArgs),
    /// A small Kubernetes API server with simulated scheduler, kubelet and controllers.
    Cluster(SimulateClusterArgs),
}

#[derive(Debug, Args)]
pub struct SimulateClusterArgs {
    /// Address to serve on (plain HTTP; port 0 picks a free port; the address is printed).
    #[arg(long, env = "SIH_SIM_CLUSTER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Nodes in all.
    #[arg(long, env = "SIH_SIM_NODES", default_value_t = 3)]
    pub nodes: usize,
    /// How many of the nodes are spot (labelled lifecycle=Ec2Spot and the like).
    #[arg(long, env = "SIH_SIM_SPOT_NODES", default_value_t = 1)]
    pub spot_nodes: usize,
    /// Multi-document YAML of objects to create at start (Nodes and Namespaces included);
    /// without it, a Deployment with a PodDisruptionBudget and a DaemonSet.
    #[arg(long, env = "SIH_SIM_WORKLOAD")]
    pub workload: Option<PathBuf>,
    /// Write a kubeconfig pointing at the simulator to this file.
    #[arg(long, env = "SIH_SIM_KUBECONFIG_OUT")]
    pub kubeconfig_out: Option<PathBuf>,
    /// Pods allowed per node.
    #[arg(long, env = "SIH_SIM_MAX_PODS", default_value_t = 110)]
    pub max_pods: usize,
    /// How long a scheduled pod takes to become Running and Ready.
    #[arg(long, env = "SIH_SIM_POD_START_DELAY", value_parser = parse_duration, default_value = "300ms")]
    pub pod_start_delay: Duration,
    /// Speak like a production API server: HTTPS with a self-signed CA, bearer tokens (401
    /// without one) and RBAC (403). The kubeconfig written carries the CA and an admin token.
    #[arg(long, env = "SIH_SIM_TLS", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub tls: bool,
    /// Create this ServiceAccount `NAMESPACE/NAME` at start, with a token. Repeatable;
    /// comma-separated in the variable.
    #[arg(long, env = "SIH_SIM_SERVICE_ACCOUNTS", value_delimiter = ',', value_parser = parse_service_account)]
    pub service_account: Vec<(String, String)>,
    /// Write each service account's `token`, `ca.crt`, `namespace` (as a pod sees them) and a
    /// `kubeconfig` into DIR/NAMESPACE/NAME/, the first one's also into DIR.
    #[arg(long, env = "SIH_SIM_IN_CLUSTER_DIR")]
    pub in_cluster_dir: Option<PathBuf>,
    /// A fault active from the start, as `POST /_sim/faults` takes it: JSON, or `key=value`
    /// pairs (`resource=pods/eviction,verb=create,hang`; `status=429,retry_after=2,rate=0.5`;
    /// `resource=nodes,verb=watch,drop`). Repeatable; `;`-separated in the variable.
    #[arg(long, env = "SIH_SIM_FAULTS", value_delimiter = ';', value_parser = parse_fault)]
    pub fault: Vec<sih_sim_cluster::faults::FaultSpec>,
}

fn parse_fault(s: &str) -> Result<sih_sim_cluster::faults::FaultSpec, String> {
    sih_sim_cluster::faults::FaultSpec::parse_flag(s)
}

fn parse_service_account(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!(
            "{s:?} is not NAMESPACE/NAME, e.g. kube-system/spot-interrupt-handler"
        )),
    }
}

#[derive(Debug, Args)]
pub struct KubeArgs {
    /// Kubeconfig file; without it, the in-cluster configuration, else `KUBECONFIG`, else
    /// `~/.kube/config`.
    #[arg(long, env = "SIH_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The longest one Kubernetes API call may take: an API server that accepts a request and
    /// never answers holds nothing up longer (writes are retried, a drain step moves on).
    #[arg(long, env = "API_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub api_timeout: Duration,
}

/// Who we are when we run in a pod (from the downward API): a drain never evicts our own pod,
/// and Events name it as their reporter.
#[derive(Debug, Args)]
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
pub struct DrainFlags {
    /// Evictions in flight at once.
    #[arg(long, env = "MAX_CONCURRENT_EVICTIONS", default_value_t = 50)]
    pub max_concurrent_evictions: usize,
    /// Upper bound on every pod's grace period, in seconds (default: the pod's own).
    #[arg(
        long,
        env = "POD_TERMINATION_GRACE_PERIOD",
        allow_negative_numbers = true
    )]
    pub pod_termination_grace_period: Option<i64>,
    /// Time kept free before the deadline (at least 1s).
    #[arg(long, env = "DEADLINE_MARGIN", value_parser = parse_duration, default_value = "5s")]
    pub deadline_margin: Duration,
    /// What to do with a pod its PodDisruptionBudget still protects near a hard deadline.
    #[arg(long, env = "ON_PDB_DEADLINE", value_enum, default_value_t = OnPdbDeadline::Delete)]
    pub on_pdb_deadline: OnPdbDeadline,
    /// Taint effect (default: NoSchedule, PreferNoSchedule for rebalance recommendations).
    #[arg(long, env = "TAINT_EFFECT", value_parser = ["NoSchedule", "PreferNoSchedule", "NoExecute"])]
    pub taint_effect: Option<String>,
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

/// What to do about each kind of notice: `none` < `notify` < `taint` < `cordon` < `drain`.
#[derive(Debug, Args)]
pub struct ActionFlags {
    /// On a spot interruption notice: none, notify, taint, cordon or drain.
    #[arg(long, env = "SPOT_INTERRUPTION_ACTION", default_value = "drain")]
    pub spot_interruption_action: sih_core::Action,
    /// On a rebalance recommendation (taint: PreferNoSchedule).
    #[arg(long, env = "REBALANCE_ACTION", default_value = "taint")]
    pub rebalance_action: sih_core::Action,
    /// On an active scheduled maintenance event.
    #[arg(long, env = "SCHEDULED_MAINTENANCE_ACTION", default_value = "drain")]
    pub scheduled_maintenance_action: sih_core::Action,
    /// On an ASG target lifecycle state of Terminated (or a terminate lifecycle hook).
    #[arg(long, env = "ASG_TERMINATION_ACTION", default_value = "drain")]
    pub asg_termination_action: sih_core::Action,
    /// On an instance state change to stopping, stopped, shutting-down or terminated (queue).
    #[arg(long, env = "STATE_CHANGE_ACTION", default_value = "drain")]
    pub state_change_action: sih_core::Action,
    /// Never go beyond a cordon, whatever the kind (NTH's CORDON_ONLY).
    #[arg(long, env = "CORDON_ONLY", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub cordon_only: bool,
}

impl ActionFlags {
    pub fn policy(&self) -> sih_core::ActionPolicy {
        sih_core::ActionPolicy {
            spot_interruption: self.spot_interruption_action,
            rebalance: self.rebalance_action,
            scheduled_maintenance: self.scheduled_maintenance_action,
            asg_termination: self.asg_termination_action,
            state_change: self.state_change_action,
            cap: self.cordon_only.then_some(sih_core::Action::Cordon),
        }
    }
}

/// What both the agent and the queue controller do after deciding to act on a notice.
#[derive(Debug, Args)]
pub struct NoticeFlags {
    /// Drain time budget when the notice has no deadline (ASG termination, a rebalance drain,
    /// lifecycle hooks).
    #[arg(long, env = "DRAIN_BUDGET", value_parser = parse_duration, default_value = "120s")]
    pub drain_budget: Duration,
    /// After a drain, taint the node `node.kubernetes.io/out-of-service=nodeshutdown:NoExecute`
    /// so volumes detach at once once the instance is gone.
    #[arg(long, env = "ENABLE_OUT_OF_SERVICE_TAINT", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub out_of_service_taint: bool,
    /// Write nothing anywhere (Kubernetes, AWS, webhooks); log what would be done.
    #[arg(long, env = "DRY_RUN", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub dry_run: bool,
}

/// How we tell people: admin endpoint (metrics, probes), Kubernetes Events, webhooks.
#[derive(Debug, Args)]
pub struct ReportFlags {
    /// Serves /metrics, /healthz and /readyz.
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
    /// Record Kubernetes Events on the node and on evicted pods.
    #[arg(long, env = "KUBERNETES_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
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
    /// HTTP(S) proxy for webhook requests.
    #[arg(long, env = "WEBHOOK_PROXY")]
    pub webhook_proxy: Option<String>,
    /// Per attempt.
    #[arg(long, env = "WEBHOOK_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub webhook_timeout: Duration,
    /// Attempts per message (retries back off and stop at the notice's deadline).
    #[arg(long, env = "WEBHOOK_ATTEMPTS", default_value_t = 5)]
    pub webhook_attempts: u32,
}

#[derive(Debug, Args)]
pub struct ImdsArgs {
    /// The node this agent runs on (downward API `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The instance metadata service.
    #[arg(
        long,
        env = "INSTANCE_METADATA_URL",
        default_value = "http://169.254.169.254"
    )]
    pub imds_endpoint: String,
    /// How often every interruption item is read.
    #[arg(long, env = "POLL_INTERVAL", value_parser = parse_duration, default_value = "1s")]
    pub poll_interval: Duration,
    /// Attempts per metadata read (NTH's METADATA_TRIES).
    #[arg(long, env = "METADATA_TRIES", default_value_t = 3)]
    pub imds_attempts: u32,
    /// Per metadata request.
    #[arg(long, env = "IMDS_TIMEOUT", value_parser = parse_duration, default_value = "1s")]
    pub imds_timeout: Duration,
    /// Seconds since boot, read at start to tell that a scheduled reboot happened.
    #[arg(long, env = "UPTIME_FILE", default_value = "/proc/uptime")]
    pub uptime_file: PathBuf,
    #[command(flatten)]
    pub act: NoticeFlags,
    #[command(flatten)]
    pub actions: ActionFlags,
    #[command(flatten)]
    pub drain: DrainFlags,
    #[command(flatten)]
    pub report: ReportFlags,
    #[command(flatten)]
    pub me: SelfArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Debug, Args)]
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
    /// Drains in flight at once (fences never wait for them).
    #[arg(long, env = "WORKERS", default_value_t = 10)]
    pub workers: usize,
    /// How long a received message stays hidden from other consumers; extended while its
    /// drain runs.
    #[arg(long, env = "SQS_MSG_VISIBILITY_TIMEOUT", value_parser = parse_duration, default_value = "20s")]
    pub visibility_timeout: Duration,
    /// While a terminate hook's drain runs, record a lifecycle heartbeat this often (0s: never;
    /// the hook's own heartbeat timeout then bounds the drain).
    #[arg(long, env = "SIH_HEARTBEAT_INTERVAL", value_parser = parse_duration, default_value = "0s")]
    pub heartbeat_interval: Duration,
    /// Stop recording heartbeats this long after the lifecycle event (a hook cannot be held
    /// longer than 48 h, or 100 heartbeat timeouts).
    #[arg(long, env = "SIH_HEARTBEAT_UNTIL", value_parser = parse_duration, default_value = "48h")]
    pub heartbeat_until: Duration,
    /// Match instances to nodes by `spec.providerID` only, never asking EC2 (for clusters whose
    /// node names are not the instances' private DNS names). Without it, EC2's
    /// `DescribeInstances` gives the private DNS name, matched against node names and
    /// `kubernetes.io/hostname` labels, with the providerID as a second try.
    #[arg(long, env = "USE_PROVIDER_ID", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub use_provider_id: bool,
    /// Act only on instances carrying this tag key (off by default; aws-node-termination-handler
    /// defaults it on). Needs `ec2:DescribeInstances`.
    #[arg(long, env = "SIH_MANAGED_TAG")]
    pub managed_tag: Option<String>,
    /// Delete a message whose instance is not a node of this cluster (or lacks the managed
    /// tag) and complete its terminate hook; with `false` it is left to come back until the
    /// queue's retention drops it.
    #[arg(long, env = "DELETE_SQS_MSG_IF_NODE_NOT_FOUND", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", value_parser = BoolishValueParser::new())]
    pub delete_if_node_not_found: bool,
    /// Wait this long after a drain before completing its terminate hook.
    #[arg(long, env = "SIH_COMPLETE_LIFECYCLE_ACTION_DELAY", value_parser = parse_duration, default_value = "0s")]
    pub complete_lifecycle_action_delay: Duration,
    /// A launch hook is completed with CONTINUE once its node is Ready, ABANDON after this.
    #[arg(long, env = "LAUNCH_READY_TIMEOUT", value_parser = parse_duration, default_value = "10m")]
    pub launch_ready_timeout: Duration,
    /// A replica's claim on a node (a Lease) lives this long without a renewal; it is renewed
    /// three times per life. A replica that dies mid-drain is taken over about this long
    /// after its death (at least 3s).
    #[arg(long, env = "SIH_CLAIM_TTL", value_parser = parse_duration, default_value = "6s")]
    pub claim_ttl: Duration,
    /// Released claims are deleted this long after their release.
    #[arg(long, env = "SIH_CLAIM_RETENTION", value_parser = parse_duration, default_value = "10m")]
    pub claim_retention: Duration,
    #[command(flatten)]
    pub act: NoticeFlags,
    #[command(flatten)]
    pub actions: ActionFlags,
    #[command(flatten)]
    pub drain: DrainFlags,
    #[command(flatten)]
    pub report: ReportFlags,
    #[command(flatten)]
    pub me: SelfArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print the timeline and summary as JSON lines.
    #[arg(long, env = "SIH_DEMO_JSON", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub json: bool,
    /// Leave the simulated cluster running afterwards and print a kubeconfig path for kubectl.
    #[arg(long, env = "SIH_DEMO_KEEP_RUNNING", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub keep_running: bool,
    /// Seconds between the notice and the instance's end.
    #[arg(long, env = "SIH_DEMO_NOTICE", value_parser = parse_duration, default_value = "120s")]
    pub notice: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, global = true, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level or tracing filter (e.g. `debug`, `info,sih_imds=debug`).
    #[arg(long, global = true, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImdsV2 {
    Optional,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SpotActionArg {
    Terminate,
    Stop,
    Hibernate,
}

/// `CODE@DURATION`: a scheduled event listed from the start with `NotBefore` that far ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledEventArg {
    pub code: String,
    pub not_before_in: jiff::SignedDuration,
}

#[derive(Debug, Args)]
pub struct SimulateImdsArgs {
    /// Address to serve on (port 0 picks a free port; the address is printed on start).
    #[arg(long, env = "SIH_SIM_IMDS_LISTEN", default_value = "127.0.0.1:1338")]
    pub listen: SocketAddr,
    /// Whether GETs need an IMDSv2 token.
    #[arg(long, env = "SIH_SIM_IMDSV2", value_enum, default_value_t = ImdsV2::Optional)]
    pub imdsv2: ImdsV2,

    /// The instance's id in metadata and the identity document.
    #[arg(
        long,
        env = "SIH_SIM_INSTANCE_ID",
        default_value = "i-0123456789abcdef0"
    )]
    pub instance_id: String,
    /// The instance type served.
    #[arg(long, env = "SIH_SIM_INSTANCE_TYPE", default_value = "m5.large")]
    pub instance_type: String,
    /// The zone served (the region is derived from it).
    #[arg(long, env = "SIH_SIM_AVAILABILITY_ZONE", default_value = "us-east-1a")]
    pub availability_zone: String,
    /// The private IPv4 address served.
    #[arg(long, env = "SIH_SIM_LOCAL_IPV4", default_value = "10.0.0.12")]
    pub local_ipv4: String,
    /// Defaults to EC2's private DNS name for the local IPv4 address.
    #[arg(long, env = "SIH_SIM_LOCAL_HOSTNAME")]
    pub local_hostname: Option<String>,
    /// `spot` or `on-demand`.
    #[arg(long, env = "SIH_SIM_INSTANCE_LIFE_CYCLE", default_value = "spot")]
    pub instance_life_cycle: String,

    /// Schedule a spot interruption with this action (at `--spot-after`, default at once).
    #[arg(long, env = "SIH_SIM_SPOT_ACTION", value_enum)]
    pub spot_action: Option<SpotActionArg>,
    /// When the spot notice appears, from start (implies `--spot-action terminate`).
    #[arg(long, env = "SIH_SIM_SPOT_AFTER", value_parser = parse_duration)]
    pub spot_after: Option<Duration>,
    /// The notice's time minus the moment it appears.
    #[arg(long, env = "SIH_SIM_SPOT_LEAD", value_parser = parse_duration, default_value = "120s")]
    pub spot_lead: Duration,
    /// When a rebalance recommendation appears, from start.
    #[arg(long, env = "SIH_SIM_REBALANCE_AFTER", value_parser = parse_duration)]
    pub rebalance_after: Option<Duration>,
    /// A scheduled event `CODE@DURATION` (e.g. `system-reboot@10m`): listed from start,
    /// `NotBefore` DURATION ahead (`system-reboot@-5m`: a window that started five minutes
    /// ago), `NotAfter` two hours later. Repeatable; comma-separated in the variable.
    #[arg(long, env = "SIH_SIM_SCHEDULED_EVENTS", value_delimiter = ',', value_parser = parse_scheduled_event)]
    pub scheduled_event: Vec<ScheduledEventArg>,
    /// Target lifecycle state is `InService` from start and `Terminated` after this.
    #[arg(long, env = "SIH_SIM_ASG_TERMINATE_AFTER", value_parser = parse_duration)]
    pub asg_terminate_after: Option<Duration>,
    /// Restate the spot notice's time (now + lead) and the rebalance `noticeTime` (now) on
    /// every read, as amazon-ec2-metadata-mock does (EC2 keeps them fixed).
    #[arg(long, env = "SIH_SIM_RESTATE_TIMES", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub restate_times: bool,
    /// Start with amazon-ec2-metadata-mock's default scenario: a spot notice (`--spot-lead`
    /// ahead), a rebalance recommendation and a `system-reboot` event whose window has already
    /// started, times restated on every read.
    #[arg(long, env = "SIH_SIM_AEMM_DEFAULTS", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub aemm_defaults: bool,
}

/// The configuration reference (docs/configuration.md), generated from this file's
/// definitions so it never drifts: every subcommand's flags with their environment variables,
/// defaults and help. Written by a test (`SIH_UPDATE_DOCS=1`), which also checks it.
#[cfg(test)]
pub fn reference_markdown() -> String {
    use clap::CommandFactory;
    let root = Cli::command();
    let mut out = String::from(
        "# Configuration reference\n\nGenerated from the command-line definition (`src/cli.rs`); \
         regenerate with `SIH_UPDATE_DOCS=1 cargo test --bin spot-interrupt-handler reference`. \
         A test fails when this file and the binary disagree. Every flag also reads the \
         environment variable shown; a flag given on the command line wins. Durations are \
         written like `1s`, `250ms`, `2m`. Switches take an optional value: `--dry-run`, \
         `--dry-run=false`.\n",
    );
    fn table(out: &mut String, cmd: &clap::Command) {
        out.push_str("\n| flag | environment | default | meaning |\n|---|---|---|---|\n");
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if a.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            let flag = match a.get_long() {
                Some(l) => format!("`--{l}`"),
                None => format!("`{}` (argument)", id.to_uppercase()),
            };
            let env = a
                .get_env()
                .map(|e| format!("`{}`", e.to_string_lossy()))
                .unwrap_or_default();
            let default: Vec<String> = a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .filter(|v| !v.is_empty())
                .collect();
            let default = if default.is_empty() {
                String::new()
            } else {
                format!("`{}`", default.join(","))
            };
            let mut help = a
                .get_long_help()
                .or(a.get_help())
                .map(|h| h.to_string().replace('\n', " "))
                .unwrap_or_default();
            let values: Vec<String> = a
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| format!("`{}`", v.get_name()))
                .collect();
            if !values.is_empty()
                && a.get_action().takes_values()
                && !matches!(
                    id,
                    "tls"
                        | "dry_run"
                        | "cordon_only"
                        | "out_of_service_taint"
                        | "json"
                        | "keep_running"
                )
            {
                let sep = if help.is_empty() { "" } else { ". " };
                help.push_str(&format!("{sep}One of {}.", values.join(", ")));
            }
            out.push_str(&format!(
                "| {flag} | {env} | {default} | {} |\n",
                help.replace('|', "\\|")
            ));
        }
    }
    out.push_str("\n## Every command\n");
    table(&mut out, &root);
    fn walk(out: &mut String, cmd: &clap::Command, path: &str) {
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let name = format!("{path} {}", sub.get_name());
            if sub.has_subcommands() {
                walk(out, sub, &name);
                continue;
            }
            out.push_str(&format!("\n## `{name}`\n\n"));
            if let Some(about) = sub.get_about() {
                out.push_str(&format!("{about}\n"));
            }
            table(out, sub);
        }
    }
    walk(&mut out, &root, "spot-interrupt-handler");
    out
}

/// Durations as people write them: `1s`, `250ms`, `2m`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a duration like 1s, 250ms or 2m: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("{s:?} must not be negative"))
}

fn parse_scheduled_event(s: &str) -> Result<ScheduledEventArg, String> {
    let (code, after) = s
        .split_once('@')
        .ok_or_else(|| format!("{s:?} is not CODE@DURATION, e.g. system-reboot@10m"))?;
    if !sih_sim_imds::SCHEDULED_EVENT_CODES.contains(&code) {
        return Err(format!(
            "unknown code {code:?}; one of {}",
            sih_sim_imds::SCHEDULED_EVENT_CODES.join(", ")
        ));
    }
    // `system-reboot@-5m`: the window started five minutes before the simulator did.
    let not_before_in = match after.trim().strip_prefix('-') {
        Some(ago) => -jiff::SignedDuration::try_from(parse_duration(ago)?)
            .map_err(|e| format!("{s:?}: {e}"))?,
        None => jiff::SignedDuration::try_from(parse_duration(after)?)
            .map_err(|e| format!("{s:?}: {e}"))?,
    };
    Ok(ScheduledEventArg {
        code: code.to_owned(),
        not_before_in,
    })
}

#[cfg(test)]
mod properties {
    //! Flag values as people may type them: a value or a message, never a panic.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn no_duration_or_scheduled_event_makes_a_parser_panic(s in ".{0,30}") {
            let _ = parse_duration(&s);
            let _ = parse_scheduled_event(&s);
            let _ = parse_service_account(&s);
            let _ = sih_sim_cluster::faults::FaultSpec::parse_flag(&s);
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
    use clap::CommandFactory;

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

    #[test]
    fn scheduled_event_flag_takes_code_at_duration() {
        assert_eq!(
            parse_scheduled_event("system-reboot@10m"),
            Ok(ScheduledEventArg {
                code: "system-reboot".into(),
                not_before_in: jiff::SignedDuration::from_secs(600)
            })
        );
        assert_eq!(
            parse_scheduled_event("instance-stop@-90s").map(|e| e.not_before_in),
            Ok(jiff::SignedDuration::from_secs(-90)),
            "a window that has already started"
        );
        assert!(parse_scheduled_event("system-reboot").is_err());
        assert!(parse_scheduled_event("reboot-please@1m").is_err());
    }

    #[test]
    fn the_configuration_reference_matches_the_binary() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
        let generated = reference_markdown();
        if std::env::var_os("SIH_UPDATE_DOCS").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "docs/configuration.md is out of date: run SIH_UPDATE_DOCS=1 cargo test --bin spot-interrupt-handler reference"
        );
        assert!(generated.contains("| `--poll-interval` | `POLL_INTERVAL` | `1s` |"));
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

    #[test]
    fn every_flag_has_an_environment_variable() {
        fn check(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                // Positional arguments (NODE) are not flags.
                if id == "help" || id == "version" || arg.is_positional() {
                    continue;
                }
                assert!(arg.get_env().is_some(), "{path} --{id} has no env");
            }
            for sub in cmd.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        check(&cmd, "spot-interrupt-handler");
    }
}
