//! The rehearsal binary's command line: every flag also reads an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use spot_interrupt_handler::cli::{LogArgs, parse_duration};

#[derive(Debug, Parser)]
#[command(
    name = "spot-interrupt-handler-sim",
    version,
    about = "Rehearse a spot reclamation without AWS or a cluster: the simulators and the demo",
    long_about = None,
    after_help = "The agent and the controller are in the other binary, spot-interrupt-handler."
)]
pub struct SimCli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: SimCommand,
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Run the whole story without AWS or a cluster: both simulators and the agent in one
    /// process, a spot interruption, a live timeline and a summary.
    Demo(DemoArgs),
    /// A live, read-only web page of a cluster's spot nodes (the simulated one or a real one
    /// through its kubeconfig): pods by node, fences, notices counting down, our Events.
    View(ViewArgs),
    /// Simulators for tests and rehearsals: no AWS account or cluster needed.
    #[command(subcommand)]
    Simulate(Simulate),
}

#[derive(Debug, Subcommand)]
pub enum Simulate {
    /// A faithful EC2 instance metadata service with interruption scenarios.
    Imds(Box<SimulateImdsArgs>),
    /// A small Kubernetes API server with simulated scheduler, kubelet and controllers.
    Cluster(Box<SimulateClusterArgs>),
    /// Google Compute Engine's metadata server: preemption and host maintenance, watched
    /// with long polls.
    Gce(Box<SimulateGceArgs>),
    /// Azure's instance metadata with Scheduled Events and their acknowledgements.
    Azure(Box<SimulateAzureArgs>),
}

#[derive(Debug, Args)]
pub struct SimulateGceArgs {
    /// Address to serve on (port 0 picks a free port; the address is printed on start).
    #[arg(long, env = "SIH_SIM_GCE_LISTEN", default_value = "127.0.0.1:1340")]
    pub listen: SocketAddr,
    /// `instance/name` (the node's name on GKE).
    #[arg(
        long,
        env = "SIH_SIM_GCE_INSTANCE_NAME",
        default_value = "gke-spot-pool-5f0c1a2b-x7kq"
    )]
    pub instance_name: String,
    /// `instance/id`.
    #[arg(
        long,
        env = "SIH_SIM_GCE_INSTANCE_ID",
        default_value = "4520031799277581759"
    )]
    pub instance_id: String,
    #[arg(long, env = "SIH_SIM_GCE_PROJECT", default_value = "rehearsal-project")]
    pub project: String,
    #[arg(long, env = "SIH_SIM_GCE_ZONE", default_value = "us-central1-a")]
    pub zone: String,
    #[arg(
        long,
        env = "SIH_SIM_GCE_MACHINE_TYPE",
        default_value = "e2-standard-4"
    )]
    pub machine_type: String,
    /// `instance/scheduling/preemptible` (Spot and preemptible VMs).
    #[arg(long, env = "SIH_SIM_GCE_PREEMPTIBLE", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", value_parser = BoolishValueParser::new())]
    pub preemptible: bool,
    /// `instance/preempted` turns TRUE this long after start.
    #[arg(long, env = "SIH_SIM_GCE_PREEMPT_AFTER", value_parser = parse_duration)]
    pub preempt_after: Option<Duration>,
    /// `instance/maintenance-event` turns to this value (MIGRATE_ON_HOST_MAINTENANCE,
    /// TERMINATE_ON_HOST_MAINTENANCE) after `--maintenance-after`.
    #[arg(long, env = "SIH_SIM_GCE_MAINTENANCE_EVENT")]
    pub maintenance_event: Option<String>,
    #[arg(long, env = "SIH_SIM_GCE_MAINTENANCE_AFTER", value_parser = parse_duration, default_value = "0s")]
    pub maintenance_after: Duration,
}

#[derive(Debug, Args)]
pub struct SimulateAzureArgs {
    /// Address to serve on (port 0 picks a free port; the address is printed on start).
    #[arg(long, env = "SIH_SIM_AZURE_LISTEN", default_value = "127.0.0.1:1341")]
    pub listen: SocketAddr,
    /// `compute/name`: what events list in `Resources` (the node's name on AKS).
    #[arg(
        long,
        env = "SIH_SIM_AZURE_VM_NAME",
        default_value = "aks-spotpool-12345678-vmss000000"
    )]
    pub vm_name: String,
    #[arg(
        long,
        env = "SIH_SIM_AZURE_VM_ID",
        default_value = "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
    )]
    pub vm_id: String,
    /// `compute/priority`: Spot or Regular.
    #[arg(long, env = "SIH_SIM_AZURE_PRIORITY", default_value = "Spot")]
    pub priority: String,
    /// List a `Preempt` event (30s notice) this long after start.
    #[arg(long, env = "SIH_SIM_AZURE_PREEMPT_AFTER", value_parser = parse_duration)]
    pub preempt_after: Option<Duration>,
    /// List an event of this type (Freeze, Reboot, Redeploy, Preempt, Terminate) after
    /// `--event-after`, due `--event-notice` later; repeatable.
    #[arg(long, env = "SIH_SIM_AZURE_EVENT", value_delimiter = ',')]
    pub event: Vec<String>,
    #[arg(long, env = "SIH_SIM_AZURE_EVENT_AFTER", value_parser = parse_duration, default_value = "0s")]
    pub event_after: Duration,
    #[arg(long, env = "SIH_SIM_AZURE_EVENT_NOTICE", value_parser = parse_duration, default_value = "5m")]
    pub event_notice: Duration,
    /// How long the first Scheduled Events call takes (Azure: up to two minutes).
    #[arg(long, env = "SIH_SIM_AZURE_FIRST_CALL_DELAY", value_parser = parse_duration, default_value = "500ms")]
    pub first_call_delay: Duration,
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
    /// A simulated cluster-autoscaler for one node group: `group=NAME,min=N,max=N,spot=BOOL,
    /// scale-up-delay=DUR,scale-down-after=DUR,expendable-cutoff=N,max-pods=N` (every key
    /// optional: `workers`, 0, 10, false, 10s, 60s, -10, the cluster's). Pods no node can take make it add nodes of the
    /// group (labelled `sim.spot-interrupt-handler/node-group`) after the delay, except pods
    /// below the cutoff priority and pods nominated to a node by preemption; a group node
    /// running only DaemonSet pods that long is removed, never below `min`.
    #[arg(long, env = "SIH_SIM_AUTOSCALER", value_parser = parse_autoscaler)]
    pub autoscaler: Option<sih_sim_cluster::controllers::autoscaler::AutoscalerConfig>,
}

fn parse_autoscaler(
    s: &str,
) -> Result<sih_sim_cluster::controllers::autoscaler::AutoscalerConfig, String> {
    sih_sim_cluster::controllers::autoscaler::AutoscalerConfig::parse_flag(s)
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
pub struct ViewArgs {
    /// Address to serve the page on (port 0 picks a free port; the URL is printed). Loopback
    /// unless told otherwise: the page shows the cluster to whoever reaches it.
    #[arg(long, env = "SIH_VIEW_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The cluster to show (default: `KUBECONFIG`, `~/.kube/config`, or in-cluster). Needs
    /// list and watch on nodes, pods and events only
    /// (deploy/manifests/view-clusterrole.yaml).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print the timeline and summary as JSON lines.
    #[arg(long, env = "SIH_DEMO_JSON", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub json: bool,
    /// Leave the simulated cluster running afterwards and print a kubeconfig path for kubectl.
    #[arg(long, env = "SIH_DEMO_KEEP_RUNNING", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub keep_running: bool,
    /// Time between the notice and the instance's end (it ends then: the node goes NotReady
    /// and is deleted 5 s later). Default: 120s, 30s for `autoscaler`. Range: 10s to 10m.
    #[arg(long, env = "SIH_DEMO_NOTICE", value_parser = spot_interrupt_handler::cli::duration_in("10s", "10m"))]
    pub notice: Option<Duration>,
    /// The story to tell: `drain` (the default evacuation), `surge` (the web Deployment is
    /// annotated `spot-interrupt-handler/surge`: its Ready replicas never drop below desired)
    /// `autoscaler` (the cluster is full: the evicted replicas wait until a simulated
    /// cluster-autoscaler adds a node, and the story goes on to the instance's end) or
    /// `capacity` (two full spot nodes reclaimed at once, an autoscaler whose nodes boot in a
    /// third of the notice: told without and with `--reserve-capacity`, side by side; AWS
    /// only; `--view` and `--keep-running` do not apply).
    #[arg(long, env = "SIH_DEMO_SCENARIO", value_enum, default_value_t = DemoScenario::Drain)]
    pub scenario: DemoScenario,
    /// Serve the live view of the demo's cluster on this address (`--view` alone:
    /// 127.0.0.1:8090), start the story once the page is open (or after a minute), and keep
    /// the cluster running afterwards until Ctrl-C.
    #[arg(long, env = "SIH_DEMO_VIEW", num_args = 0..=1, default_missing_value = "127.0.0.1:8090")]
    pub view: Option<SocketAddr>,
    /// With `--view`: `auto` begins the story once the page is open (or after a minute);
    /// `manual` waits for the page's start button (or the S key), at a presenter's pace.
    #[arg(long, env = "SIH_DEMO_START", value_enum, default_value_t = DemoStart::Auto)]
    pub start: DemoStart,
    /// `imds`: the node's agent reads the metadata service; `queue`: the cluster's controller
    /// consumes SQS (a rebalance, the spot warning, the Auto Scaling terminate hook answered
    /// with CONTINUE), on a built-in stand-in for SQS, EC2 and Auto Scaling (AWS, in the
    /// terminal: no `--view` or `--keep-running`).
    #[arg(long, env = "SIH_DEMO_MODE", value_enum, default_value_t = DemoMode::Imds)]
    pub mode: DemoMode,
    /// Whose metadata service tells of the reclamation: aws (a spot interruption notice),
    /// gce (`preempted` turns TRUE: 30 s) or azure (a `Preempt` scheduled event: 30 s,
    /// acknowledged once the node is drained, so Azure may go ahead early).
    #[arg(long, env = "SIH_DEMO_CLOUD", value_enum, default_value_t = DemoCloud::Aws)]
    pub cloud: DemoCloud,
}

impl DemoArgs {
    pub fn notice(&self) -> Duration {
        self.notice.unwrap_or(match (self.scenario, self.cloud) {
            (DemoScenario::Autoscaler, _) | (_, DemoCloud::Gce | DemoCloud::Azure) => {
                Duration::from_secs(30)
            }
            _ => Duration::from_secs(120),
        })
    }
}

/// Where the story's notices come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoMode {
    /// The node's agent reads the metadata service (`imds`, a DaemonSet).
    Imds,
    /// The cluster's controller reads EventBridge and Auto Scaling messages from SQS (`queue`,
    /// a Deployment), on a stand-in for the AWS calls it makes.
    Queue,
}

/// When a story shown in the view begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoStart {
    /// Once the page is open (or after a minute).
    Auto,
    /// When the presenter presses the page's start button (or S).
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoCloud {
    Aws,
    Gce,
    Azure,
}

impl DemoCloud {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::Gce => "gce",
            Self::Azure => "azure",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoScenario {
    Drain,
    Surge,
    Autoscaler,
    Capacity,
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
    /// Serve the control API (`/_sim/`) on this address alone instead of with the metadata:
    /// in a cluster, keep it on the pod's loopback (reached with `kubectl port-forward`) while
    /// the metadata is served to the agents.
    #[arg(long, env = "SIH_SIM_IMDS_CONTROL_LISTEN")]
    pub control_listen: Option<SocketAddr>,
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
    /// The private IPv4 address served (by default `simulate cluster`'s spot node's).
    #[arg(long, env = "SIH_SIM_LOCAL_IPV4", default_value = "10.0.0.10")]
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
        fn no_flag_value_makes_a_parser_panic(s in ".{0,30}") {
            let _ = parse_scheduled_event(&s);
            let _ = parse_service_account(&s);
            let _ = parse_fault(&s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use spot_interrupt_handler::cli::{Cli, reference};

    /// `demo --view ADDR` works as `view --listen ADDR` does (it failed with a space), and
    /// `--view` alone still takes the default address.
    #[test]
    fn demo_view_takes_its_address_with_a_space_or_an_equals_sign_or_none() {
        use clap::Parser;
        let view = |args: &[&str]| match SimCli::try_parse_from(args).unwrap().command {
            SimCommand::Demo(d) => d.view.map(|a| a.to_string()),
            _ => panic!("demo"),
        };
        assert_eq!(
            view(&["sim", "demo", "--view", "127.0.0.1:9000"]).as_deref(),
            Some("127.0.0.1:9000")
        );
        assert_eq!(
            view(&["sim", "demo", "--view=127.0.0.1:9001"]).as_deref(),
            Some("127.0.0.1:9001")
        );
        assert_eq!(
            view(&["sim", "demo", "--view", "--json"]).as_deref(),
            Some("127.0.0.1:8090")
        );
        assert_eq!(view(&["sim", "demo"]), None);
    }

    /// docs/configuration.md: both binaries' flags, generated from their definitions.
    fn reference_markdown() -> String {
        let mut out = String::from(
            "# Configuration reference\n\nGenerated from the command-line definitions (`src/cli/`, \
             `src/bin/spot-interrupt-handler-sim/cli.rs`); regenerate with \
             `SIH_UPDATE_DOCS=1 cargo test --bin spot-interrupt-handler-sim reference`. \
             A test fails when this file and the binaries disagree. Every flag also reads the \
             environment variable shown; a flag given on the command line wins. Durations are \
             written like `1s`, `250ms`, `2m`. Switches take an optional value: `--dry-run`, \
             `--dry-run=false`.\n",
        );
        out.push_str(&reference::section(
            &Cli::command(),
            "spot-interrupt-handler",
        ));
        out.push_str(&reference::section(
            &SimCli::command(),
            "spot-interrupt-handler-sim",
        ));
        out
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
            "docs/configuration.md is out of date: run SIH_UPDATE_DOCS=1 cargo test --bin spot-interrupt-handler-sim reference"
        );
        assert!(generated.contains("| `--poll-interval` | `POLL_INTERVAL` | `1s` |"));
    }

    #[test]
    fn every_flag_has_an_environment_variable() {
        let cmd = SimCli::command();
        cmd.clone().debug_assert();
        assert_eq!(
            reference::flags_without_env(&cmd, "spot-interrupt-handler-sim"),
            Vec::<String>::new()
        );
    }
}
