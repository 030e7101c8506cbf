//! Plays one scenario: a fresh simulated cluster and metadata service in this process (moto,
//! shared, for queue mode), the agent or the controller replicas as processes of the binary,
//! and the scenario's timeline (notices, faults, kills and restarts, the instance going at a
//! hard deadline). Returns what the simulators and the processes recorded, for the checker.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};
use sih_sim_cluster::{ClusterConfig, workload};
use sih_sim_imds::SimConfig;
use tokio::process::{Child, Command};

use crate::moto::Moto;
use crate::scenario::{DRAIN_BUDGET, GCE_MAINTENANCE, MARGIN, Mode, Notice, POLL, Scenario};

pub const BIN: &str = env!("CARGO_BIN_EXE_spot-interrupt-handler");

/// The VM `simulate azure` pretends to be (what its events list).
const AZURE_VM: &str = "aks-spotpool-12345678-vmss000000";

/// A webhook sink shared by every scenario: messages are told apart by the cluster name.
pub struct Webhooks {
    pub url: String,
    received: Arc<Mutex<Vec<(Timestamp, Value)>>>,
}

impl Webhooks {
    pub async fn start() -> Self {
        let received: Arc<Mutex<Vec<(Timestamp, Value)>>> = Default::default();
        let keep = received.clone();
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    keep.lock().unwrap().push((Timestamp::now(), v));
                }
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, received }
    }

    /// The messages of one scenario (by its cluster name).
    fn of(&self, cluster: &str) -> Vec<(Timestamp, Value)> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, v)| v["cluster"] == cluster)
            .cloned()
            .collect()
    }
}

/// What the soak shares between scenarios.
pub struct Shared {
    pub webhooks: Webhooks,
    /// Moto servers, each started on first use and shared by the scenarios whose seed picks
    /// it. One Python process serving 80 scenarios at once answered in seconds, which turned
    /// the harness's lateness into the product's (seed 40110): a few share the load.
    pub motos: Vec<tokio::sync::OnceCell<Moto>>,
    pub dir: PathBuf,
    /// Whether the scenarios play on the real control plane (else on `simulate cluster`).
    pub real: bool,
}

/// Scenarios that share one moto server at most.
pub const SCENARIOS_PER_MOTO: usize = 12;

impl Shared {
    pub fn new(webhooks: Webhooks, jobs: usize, dir: PathBuf, real: bool) -> Self {
        let motos = jobs.div_ceil(SCENARIOS_PER_MOTO).max(1);
        Self {
            webhooks,
            motos: (0..motos).map(|_| tokio::sync::OnceCell::new()).collect(),
            dir,
            real,
        }
    }

    async fn moto(&self, seed: u64) -> &Moto {
        self.motos[seed as usize % self.motos.len()]
            .get_or_init(Moto::start)
            .await
    }

    /// The moto server of a scenario that has started it.
    fn started_moto(&self, seed: u64) -> &Moto {
        self.motos[seed as usize % self.motos.len()]
            .get()
            .expect("moto started")
    }
}

/// One agent or controller process's life.
#[derive(Debug, Clone)]
pub struct Life {
    pub replica: usize,
    pub started: Timestamp,
    /// Killed (`SIGKILL`) or stopped at the end.
    pub ended: Option<Timestamp>,
    pub killed: bool,
}

/// What actually happened, on the wall clock.
#[derive(Debug, Default)]
pub struct Record {
    pub t0: Option<Timestamp>,
    /// For each scenario notice (same order): when it became visible (sent), its actual
    /// deadline (the simulator's whole-second time), and when it was withdrawn.
    pub visible: Vec<Option<Timestamp>>,
    /// When the harness began to make each notice visible: a send to a loaded service can
    /// return after the product has already read it and acted.
    pub sending: Vec<Option<Timestamp>>,
    pub deadlines: Vec<Option<Timestamp>>,
    pub withdrawn: Vec<Option<Timestamp>>,
    /// Queue: the body sent for each notice.
    pub bodies: Vec<Option<String>>,
    /// IMDS scheduled events: the `EventId` the simulator gave each.
    pub event_ids: Vec<Option<String>>,
    /// For each notice: the pods `(name, uid)` on the node when it became visible (what its
    /// drain must move).
    pub pods_at: Vec<Vec<(String, String)>>,
    /// Azure: acknowledgements `(time, EventId)` the metadata service received.
    pub acks: Vec<(Timestamp, String)>,
    /// When the metadata service received each request (the agent modes).
    pub metadata_requests: Vec<Timestamp>,
    /// The Kubernetes Events our reporting controller wrote: `(reason, regarding's name)`.
    pub events: Vec<(String, String)>,
    /// Whether the scenario played on the real control plane.
    pub real: bool,
    /// The pods `(name, uid)` still bound to the node when its instance went.
    pub left_at_end: Vec<(String, String)>,
    /// A flooded agent's `/healthz` probes: `(sent, seconds until the answer)`, `None` when
    /// none came within `PROBE_GIVE_UP`.
    pub probes: Vec<Probe>,
    /// Fault windows as they were applied: `(from, to, disrupts)`.
    pub cluster_faults: Vec<(Timestamp, Timestamp, bool, Value)>,
    pub imds_faults: Vec<(Timestamp, Timestamp, bool)>,
    pub lives: Vec<Life>,
    pub terminated: Option<Timestamp>,
    pub node: String,
    pub requests: Vec<sih_sim_cluster::journal::RequestRecord>,
    pub pods: Vec<sih_sim_cluster::journal::PodRecord>,
    pub nodes: Vec<sih_sim_cluster::journal::NodeRecord>,
    pub webhooks: Vec<(Timestamp, Value)>,
    /// Queue: messages deleted `(time, body)`.
    pub deletions: Vec<(Timestamp, String)>,
    /// Queue: lifecycle actions completed `(token)`.
    pub completions: Vec<Value>,
    pub fault_totals: std::collections::BTreeMap<&'static str, u64>,
    pub imds_fault_hits: u64,
    /// Something the harness itself could not do (not a verdict on the product).
    pub harness_error: Option<String>,
}

/// A timeline step.
#[derive(Debug, Clone)]
enum Step {
    Notice(usize),
    Withdraw(usize),
    ClusterFaultOn(usize),
    ClusterFaultOff(usize),
    ImdsFaultOn(usize),
    ImdsFaultOff(usize),
    Kill(usize),
    Restart(usize),
    Terminate,
}

fn wall_at(t0: Timestamp, secs: f64) -> Timestamp {
    t0 + Duration::from_secs_f64(secs.max(0.0))
}

struct Procs {
    children: Vec<Option<Child>>,
    generation: Vec<usize>,
}

struct Ctx<'a> {
    sc: &'a Scenario,
    shared: &'a Shared,
    dir: PathBuf,
    cluster_name: String,
    kubeconfig: PathBuf,
    /// Queue mode: where the controllers' Leases go (the manifest's namespace on the real
    /// control plane, whose RBAC grants Leases there only).
    lease_namespace: &'static str,
    uptime: PathBuf,
    imds_url: Option<String>,
    queue_url: Option<String>,
    node: String,
    /// Queue: the instance behind `node`.
    instance: Option<String>,
    http: reqwest::Client,
    /// The agent's admin listener, when the scenario floods it.
    admin_port: Option<u16>,
}

/// A port for a flooded agent's admin listener. The agent binds it itself (each restart takes
/// it again), so it is chosen outside the kernel's ephemeral range (32768–60999 by default),
/// where no outgoing connection can take it between the choice and the agent's bind, and once
/// per harness: seed 66054 of attempt 12 was handed a port by binding to port 0, a client
/// socket of the busy harness took it before the agent started, and both of its lives refused
/// to start ("Address already in use"), counted as a product that never acted.
fn admin_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const PORTS: u32 = 12_000;
    // Two harnesses at once (a replay beside a run) start at different places.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % PORTS,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..PORTS {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % PORTS) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free port in {FIRST}..{} for an admin listener",
        FIRST + PORTS
    );
}

const TEMPLATE: &str = r#"{"cluster":"{{ .ClusterName }}","kind":"{{ .Kind }}","id":"{{ .EventID }}","phase":"{{ .Phase }}","node":"{{ .NodeName }}","instance":"{{ .InstanceID }}","description":"{{ .Description }}"}"#;

impl Ctx<'_> {
    fn spawn(&self, replica: usize, generation: usize, rec: &mut Record) -> Child {
        let log = self.dir.join(format!("proc-{replica}-{generation}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let margin = format!("{MARGIN}s");
        let budget = format!("{DRAIN_BUDGET}s");
        let kubeconfig = self.kubeconfig.to_str().unwrap().to_owned();
        // The agent's listener on a port the harness knows (a restart takes it again), so
        // that a flood and the probes can find it; the controllers' anywhere.
        let admin = match self.admin_port {
            Some(port) if self.sc.mode.agent() => format!("127.0.0.1:{port}"),
            _ => "127.0.0.1:0".to_owned(),
        };
        let mut args: Vec<String> = vec![
            "--log-format".into(),
            "json".into(),
            "--log-level".into(),
            // A replay may ask for more (`SOAK_LOG_LEVEL=debug`); the runs keep info.
            std::env::var("SOAK_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
        ];
        let common = [
            "--kubeconfig",
            &kubeconfig,
            "--admin-listen",
            &admin,
            "--deadline-margin",
            &margin,
            "--drain-budget",
            &budget,
            "--webhook-url",
            &self.shared.webhooks.url,
            "--webhook-template",
            TEMPLATE,
            "--cluster-name",
            &self.cluster_name,
        ];
        let mut cmd = Command::new(BIN);
        match self.sc.mode {
            Mode::Imds | Mode::Gce | Mode::Azure => {
                args.push("imds".into());
                let cloud = match self.sc.mode {
                    Mode::Gce => "gce",
                    Mode::Azure => "azure",
                    _ => "aws",
                };
                args.extend(["--cloud".into(), cloud.into()]);
                if self.sc.mode == Mode::Gce {
                    // GCE's 30 s, as long as the scenario's notice.
                    let lead = self
                        .sc
                        .notices
                        .iter()
                        .find_map(|n| match n {
                            Notice::Spot { lead, .. } => Some(lead.round()),
                            _ => None,
                        })
                        .unwrap_or(30.0);
                    args.extend([
                        "--gce-preemption-notice".into(),
                        format!("{lead}s"),
                        "--gce-maintenance-notice".into(),
                        format!("{GCE_MAINTENANCE}s"),
                    ]);
                }
                args.extend(common.iter().map(|s| (*s).to_owned()));
                args.extend(
                    [
                        "--node-name",
                        &self.node,
                        "--imds-endpoint",
                        self.imds_url.as_deref().unwrap(),
                        "--poll-interval",
                        &format!("{}ms", (POLL * 1000.0) as u64),
                        "--uptime-file",
                        self.uptime.to_str().unwrap(),
                    ]
                    .map(str::to_owned),
                );
            }
            Mode::Queue => {
                args.push("queue".into());
                args.extend(common.iter().map(|s| (*s).to_owned()));
                let moto = self.shared.started_moto(self.sc.seed);
                args.extend(
                    [
                        "--queue-url",
                        self.queue_url.as_deref().unwrap(),
                        "--aws-endpoint",
                        &moto.url,
                        "--visibility-timeout",
                        "4s",
                    ]
                    .map(str::to_owned),
                );
                cmd.envs([
                    ("AWS_ACCESS_KEY_ID", "test"),
                    ("AWS_SECRET_ACCESS_KEY", "test"),
                    ("AWS_REGION", "us-east-1"),
                    ("NAMESPACE", self.lease_namespace),
                ])
                .env("POD_NAME", format!("controller-{replica}-{generation}"));
            }
        }
        if self.sc.reserve {
            args.extend(
                ["--reserve-capacity=true", "--reserve-ttl", RESERVE_TTL].map(str::to_owned),
            );
        }
        cmd.args(&args)
            .env_remove("NODE_NAME")
            .env_remove("KUBECONFIG")
            .env_remove("RUST_BACKTRACE")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        let child = cmd.spawn().expect("the binary starts");
        rec.lives.push(Life {
            replica,
            started: Timestamp::now(),
            ended: None,
            killed: false,
        });
        child
    }

    async fn imds_post(&self, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}/_sim/{path}", self.imds_url.as_deref().unwrap());
        let r = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("POST /_sim/{path}: {}", r.status()));
        }
        r.json().await.map_err(|e| e.to_string())
    }

    async fn send_message(&self, body: &str) -> Result<(), String> {
        let moto = self.shared.started_moto(self.sc.seed);
        moto.sqs()
            .await
            .send_message()
            .queue_url(self.queue_url.as_deref().unwrap())
            .message_body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn event_bridge(detail_type: &str, source: &str, time: Timestamp, detail: Value) -> String {
    json!({
        "version": "0", "id": format!("{:032x}", fastrand::u128(..)), "detail-type": detail_type,
        "source": source, "account": "111122223333",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "region": "us-east-1", "resources": [], "detail": detail,
    })
    .to_string()
}

pub async fn play(sc: &Scenario, shared: &Shared) -> Record {
    let mut rec = Record {
        real: shared.real,
        ..Record::default()
    };
    if let Err(e) = play_into(sc, shared, &mut rec).await {
        rec.harness_error = Some(e);
    }
    rec
}

async fn play_into(sc: &Scenario, shared: &Shared, rec: &mut Record) -> Result<(), String> {
    let dir = shared.dir.join(format!("seed-{}", sc.seed));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cluster_name = if shared.real {
        format!("soak-real-{}", sc.seed)
    } else {
        format!("soak-{}", sc.seed)
    };

    // Nodes: the simulator's three (one spot), or in queue mode moto's instances.
    let (node, instance, nodes_yaml) = match sc.mode {
        Mode::Imds | Mode::Gce | Mode::Azure => (
            workload::node(0, true)["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_owned(),
            None,
            None,
        ),
        Mode::Queue => {
            let moto = shared.moto(sc.seed).await;
            let ids = moto.run_instances(3, None).await;
            let instances = moto.instances(&ids).await;
            let yaml = instances
                .iter()
                .enumerate()
                .map(|(i, inst)| {
                    let mut n = workload::node(i, i == 0);
                    let name = inst.private_dns_name.clone().unwrap_or_default();
                    let zone = inst.availability_zone.clone().unwrap_or_default();
                    n["metadata"]["name"] = json!(name);
                    n["metadata"]["labels"]["kubernetes.io/hostname"] = json!(name);
                    n["spec"]["providerID"] = json!(format!("aws:///{zone}/{}", inst.id));
                    n.to_string()
                })
                .collect::<Vec<_>>()
                .join("\n---\n");
            (
                instances[0].private_dns_name.clone().unwrap_or_default(),
                Some(instances[0].id.clone()),
                Some(yaml),
            )
        }
    };
    rec.node = node.clone();
    let mut objects = sc.workload_yaml(&node);
    if let Some(n) = &nodes_yaml {
        objects = format!("{n}\n---\n{objects}");
    }
    let cluster = if shared.real {
        let nodes: Vec<Value> = match &nodes_yaml {
            Some(y) => workload::parse(y).map_err(|e| format!("nodes: {e}"))?,
            None => (0..3).map(|i| workload::node(i, i == 0)).collect(),
        };
        let workload = sc.workload_yaml(&node);
        Cluster::Real(crate::real::RealCluster::start(&nodes, &workload).await?)
    } else {
        let config = ClusterConfig {
            nodes: if nodes_yaml.is_some() { 0 } else { 3 },
            spot_nodes: if nodes_yaml.is_some() { 0 } else { 1 },
            workload: Some(workload::parse(&objects).map_err(|e| format!("workload: {e}"))?),
            pod_start_delay: Duration::from_millis(100),
            ..ClusterConfig::default()
        };
        Cluster::Sim(
            sih_sim_cluster::start(config, "127.0.0.1:0".parse().unwrap())
                .await
                .map_err(|e| format!("cluster: {e}"))?,
        )
    };
    let kubeconfig = match &cluster {
        Cluster::Sim(c) => {
            let file = dir.join("kubeconfig");
            std::fs::write(&file, c.kubeconfig()).map_err(|e| e.to_string())?;
            file
        }
        Cluster::Real(r) => {
            r.product_kubeconfig(sc.mode == Mode::Queue, &node, &dir)
                .await?
        }
    };
    let uptime = dir.join("uptime");
    std::fs::write(&uptime, "86400.00 1000.00\n").map_err(|e| e.to_string())?;

    let loopback = "127.0.0.1:0".parse().unwrap();
    let (imds, cloud) = match sc.mode {
        Mode::Imds => (
            Some(
                sih_sim_imds::start(SimConfig::default(), loopback)
                    .await
                    .map_err(|e| format!("imds: {e}"))?,
            ),
            None,
        ),
        Mode::Gce => (
            None,
            Some(
                sih_sim_clouds::gce::start(Default::default(), loopback)
                    .await
                    .map_err(|e| format!("gce: {e}"))?,
            ),
        ),
        Mode::Azure => (
            None,
            Some(
                sih_sim_clouds::azure::start(
                    sih_sim_clouds::azure::Config {
                        first_call_delay: Duration::from_millis(200),
                        ..Default::default()
                    },
                    loopback,
                )
                .await
                .map_err(|e| format!("azure: {e}"))?,
            ),
        ),
        Mode::Queue => (None, None),
    };
    let metadata_url = imds
        .as_ref()
        .map(|i| i.url())
        .or_else(|| cloud.as_ref().map(|c| c.url()));
    let queue_url = match sc.mode {
        Mode::Queue => {
            let moto = shared.moto(sc.seed).await;
            let sqs = moto.sqs().await;
            let url = sqs
                .create_queue()
                .queue_name(format!("soak-{}-{}", sc.seed, fastrand::u32(..)))
                .send()
                .await
                .map_err(|e| format!("create queue: {e}"))?
                .queue_url
                .unwrap_or_default();
            let group = format!("soak-{}", sc.seed);
            let asg = moto.autoscaling().await;
            let _ = asg
                .create_launch_configuration()
                .launch_configuration_name(&group)
                .image_id("ami-12345678")
                .instance_type("m5.large")
                .send()
                .await;
            let _ = asg
                .create_auto_scaling_group()
                .auto_scaling_group_name(&group)
                .launch_configuration_name(&group)
                .min_size(0)
                .max_size(0)
                .availability_zones("us-east-1a")
                .send()
                .await;
            asg.put_lifecycle_hook()
                .auto_scaling_group_name(&group)
                .lifecycle_hook_name("drain")
                .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
                .heartbeat_timeout(300)
                .send()
                .await
                .map_err(|e| format!("lifecycle hook: {e}"))?;
            Some(url)
        }
        Mode::Imds | Mode::Gce | Mode::Azure => None,
    };

    // Settle: every workload pod running before the story starts.
    let want: u32 = sc.deployments.iter().map(|d| d.replicas).sum::<u32>() + sc.bare.len() as u32;
    // The real control plane's pods go through its scheduler and kwok first.
    let settle =
        tokio::time::Instant::now() + Duration::from_secs(if shared.real { 60 } else { 20 });
    loop {
        let running = cluster.running().await;
        if running as u32 >= want {
            break;
        }
        if tokio::time::Instant::now() > settle {
            return Err(format!("workload never ran ({running}/{want})"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ctx = Ctx {
        sc,
        shared,
        dir: dir.clone(),
        cluster_name: cluster_name.clone(),
        kubeconfig,
        lease_namespace: if shared.real {
            crate::real::NAMESPACE
        } else {
            "default"
        },
        uptime,
        imds_url: metadata_url.clone(),
        queue_url,
        node: node.clone(),
        instance,
        http: reqwest::Client::new(),
        admin_port: sc.flood.then(admin_port),
    };

    let mut procs = Procs {
        children: Vec::new(),
        generation: vec![0; sc.replicas],
    };
    for replica in 0..sc.replicas {
        procs.children.push(Some(ctx.spawn(replica, 0, rec)));
    }
    // The story starts once the processes are up (their logs say so soon after start).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t0 = Timestamp::now();
    rec.t0 = Some(t0);
    rec.visible = vec![None; sc.notices.len()];
    rec.sending = vec![None; sc.notices.len()];
    rec.deadlines = vec![None; sc.notices.len()];
    rec.withdrawn = vec![None; sc.notices.len()];
    rec.bodies = vec![None; sc.notices.len()];
    rec.event_ids = vec![None; sc.notices.len()];
    rec.pods_at = vec![Vec::new(); sc.notices.len()];

    let flood = ctx
        .admin_port
        .map(|port| (tokio::spawn(flood(port)), Prober::start(port)));

    let mut steps: Vec<(f64, Step)> = Vec::new();
    for (i, n) in sc.notices.iter().enumerate() {
        steps.push((n.at(), Step::Notice(i)));
        if let Some(end) = n.ends() {
            steps.push((end, Step::Withdraw(i)));
        }
    }
    for (i, f) in sc.cluster_faults.iter().enumerate() {
        steps.push((f.from, Step::ClusterFaultOn(i)));
        steps.push((f.to, Step::ClusterFaultOff(i)));
    }
    for (i, f) in sc.imds_faults.iter().enumerate() {
        steps.push((f.from, Step::ImdsFaultOn(i)));
        steps.push((f.to, Step::ImdsFaultOff(i)));
    }
    for (i, k) in sc.kills.iter().enumerate() {
        steps.push((k.at, Step::Kill(i)));
        steps.push((k.at + k.down, Step::Restart(i)));
    }
    if let Some(d) = sc
        .notices
        .iter()
        // An unreadable time is no instance's end: the harness cannot say when it would go.
        .filter(|n| {
            matches!(
                n,
                Notice::Spot {
                    unreadable: false,
                    ..
                }
            )
        })
        .filter_map(Notice::deadline)
        .reduce(f64::min)
    {
        // The instance goes at its hard deadline (a second late, for the clocks' sake).
        steps.push((d + 1.0, Step::Terminate));
    }
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));

    let mut fault_ids = vec![None; sc.cluster_faults.len()];
    let mut fault_from = vec![t0; sc.cluster_faults.len()];
    let mut imds_from = vec![t0; sc.imds_faults.len()];
    let mut event_ids: Vec<Option<String>> = vec![None; sc.notices.len()];
    for (at, step) in steps {
        if at > sc.horizon {
            break;
        }
        let when = wall_at(t0, at);
        let wait = when.duration_since(Timestamp::now());
        if let Ok(w) = Duration::try_from(wait) {
            tokio::time::sleep(w).await;
        }
        let now = Timestamp::now();
        match step {
            Step::Notice(i) => {
                let (deadline, body) = notice(&ctx, &sc.notices[i], now, &mut event_ids[i]).await?;
                // Visible once the service has it: a slow send (a loaded moto) is time the
                // product never had, and the deadline was fixed before it.
                rec.visible[i] = Some(Timestamp::now());
                rec.sending[i] = Some(now);
                rec.deadlines[i] = deadline;
                rec.bodies[i] = body;
                rec.event_ids[i] = event_ids[i].clone();
                rec.pods_at[i] = cluster.pods_on(&node).await;
            }
            Step::Withdraw(i) => {
                withdraw(&ctx, &sc.notices[i], event_ids[i].as_deref()).await?;
                rec.withdrawn[i] = Some(now);
            }
            Step::ClusterFaultOn(i) => {
                let spec = serde_json::from_value(sc.cluster_faults[i].spec.clone())
                    .map_err(|e| format!("fault spec: {e}"))?;
                fault_ids[i] = Some(cluster.faults().add(spec)?);
                fault_from[i] = now;
            }
            Step::ClusterFaultOff(i) => {
                if let Some(id) = fault_ids[i].take() {
                    cluster.faults().remove(id);
                }
                let f = &sc.cluster_faults[i];
                rec.cluster_faults
                    .push((fault_from[i], now, f.disrupts, f.spec.clone()));
            }
            Step::ImdsFaultOn(i) => {
                ctx.imds_post("faults", sc.imds_faults[i].spec.clone())
                    .await?;
                imds_from[i] = now;
            }
            Step::ImdsFaultOff(i) => {
                ctx.imds_post("faults", json!({})).await?;
                rec.imds_faults
                    .push((imds_from[i], now, sc.imds_faults[i].blocks));
            }
            Step::Kill(i) => {
                let r = sc.kills[i].replica;
                if let Some(mut c) = procs.children[r].take() {
                    let _ = c.start_kill();
                    let _ = c.wait().await;
                    if let Some(l) = rec.lives.iter_mut().rev().find(|l| l.replica == r) {
                        l.ended = Some(now);
                        l.killed = true;
                    }
                }
            }
            Step::Restart(i) => {
                let r = sc.kills[i].replica;
                // An agent runs on its instance: once that is gone, nothing starts again.
                let instance_gone = sc.mode.agent() && rec.terminated.is_some();
                if procs.children[r].is_none() && !instance_gone {
                    procs.generation[r] += 1;
                    procs.children[r] = Some(ctx.spawn(r, procs.generation[r], rec));
                }
            }
            Step::Terminate => {
                rec.left_at_end = cluster.pods_on(&node).await;
                cluster.terminate(&node).await?;
                // The agent goes with its instance (the controllers run elsewhere).
                if sc.mode.agent() {
                    for (r, child) in procs.children.iter_mut().enumerate() {
                        if let Some(mut c) = child.take() {
                            let _ = c.start_kill();
                            let _ = c.wait().await;
                            if let Some(l) = rec.lives.iter_mut().rev().find(|l| l.replica == r) {
                                l.ended = Some(now);
                            }
                        }
                    }
                }
                rec.terminated = Some(now);
            }
        }
    }
    let end = wall_at(t0, sc.horizon);
    if let Ok(w) = Duration::try_from(end.duration_since(Timestamp::now())) {
        tokio::time::sleep(w).await;
    }
    if let Some((flooding, prober)) = flood {
        flooding.abort();
        rec.probes = prober.stop();
    }
    // Faults still on at the end are cleared, so the processes can stop.
    for (i, id) in fault_ids.iter().enumerate() {
        if let Some(id) = id {
            cluster.faults().remove(*id);
            let f = &sc.cluster_faults[i];
            rec.cluster_faults
                .push((fault_from[i], Timestamp::now(), f.disrupts, f.spec.clone()));
        }
    }
    for (r, child) in procs.children.iter_mut().enumerate() {
        if let Some(mut c) = child.take() {
            if let Some(pid) = c.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            if tokio::time::timeout(Duration::from_secs(5), c.wait())
                .await
                .is_err()
            {
                let _ = c.start_kill();
            }
            if let Some(l) = rec.lives.iter_mut().rev().find(|l| l.replica == r) {
                l.ended = Some(Timestamp::now());
            }
        }
    }
    // Let the last webhooks land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rec.requests = match &cluster {
        Cluster::Sim(c) => c.journal().requests(),
        Cluster::Real(r) => r.requests(),
    };
    rec.pods = cluster.journal().pod_events();
    rec.nodes = cluster.journal().node_changes();
    rec.fault_totals = cluster.faults().totals();
    rec.events = cluster.events().await;
    rec.webhooks = shared.webhooks.of(&cluster_name);
    if metadata_url.is_some() {
        rec.imds_fault_hits = imds_fault_hits(&ctx).await;
        rec.metadata_requests = metadata_requests(&ctx).await;
        if sc.mode == Mode::Azure {
            rec.acks = azure_acks(&ctx).await;
        }
    }
    drop((imds, cloud));
    if sc.mode == Mode::Queue {
        let moto = shared.started_moto(sc.seed);
        let queue_name = ctx
            .queue_url
            .as_deref()
            .and_then(|u| u.rsplit('/').next())
            .unwrap_or_default()
            .to_owned();
        for d in moto.deletions() {
            if d["queue"] == queue_name.as_str() {
                let t = Timestamp::from_millisecond(
                    (d["time"].as_f64().unwrap_or(0.0) * 1000.0) as i64,
                )
                .unwrap_or(Timestamp::UNIX_EPOCH);
                rec.deletions
                    .push((t, d["body"].as_str().unwrap_or_default().to_owned()));
            }
        }
        let group = format!("soak-{}", sc.seed);
        rec.completions = moto
            .lifecycle_calls()
            .into_iter()
            .filter(|c| c["group"] == group.as_str() && c["action"] == "CompleteLifecycleAction")
            .collect();
    }
    Ok(())
}

/// `--reserve-ttl` of a scenario that reserves (the shortest the flag takes: most placeholders meet it).
pub const RESERVE_TTL: &str = "10s";

/// Connections that hold the agent's admin port, reopened as soon as one is closed: the flood
/// of issue 32 (256 idle connections from one peer once failed every probe).
const FLOOD_CONNECTIONS: usize = 256;

async fn flood(port: u16) {
    let mut holders = tokio::task::JoinSet::new();
    for _ in 0..FLOOD_CONNECTIONS {
        holders.spawn(async move {
            loop {
                match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    // Held silent until the server closes it.
                    Ok(mut c) => {
                        let mut sink = [0u8; 64];
                        while matches!(
                            tokio::io::AsyncReadExt::read(&mut c, &mut sink).await,
                            Ok(n) if n > 0
                        ) {}
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
    }
    while holders.join_next().await.is_some() {}
}

/// A kubelet's liveness probe: a new connection every half second, a second to answer.
/// One `/healthz` probe: when it was sent, and how many seconds its answer took (`None`: no
/// answer within `PROBE_GIVE_UP`).
pub type Probe = (Timestamp, Option<f64>);

/// How long a probe waits for its answer; the checker's bound per backend is shorter.
const PROBE_GIVE_UP: Duration = Duration::from_secs(5);

/// The prober of one flooded agent, on an OS thread and a runtime of its own, as a kubelet is
/// a process of its own. On the harness's runtime it shared two workers with every scenario's
/// simulators, floods and recorders, and its own wake-up could lag an answer by a second: the
/// long run's attempt 10 flagged 62640, 66746 and 67241 (one probe each; 62640 replays clean), and
/// with every agent scenario flooded (400 scenarios, 80 at once) 40 and more scenarios missed
/// probes on the workers, none on a thread of its own (answered probes: p99 0.94 s → 8 ms).
struct Prober {
    probes: Arc<Mutex<Vec<Probe>>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Prober {
    fn start(port: u16) -> Prober {
        let probes = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let out = probes.clone();
        std::thread::Builder::new()
            .name(format!("probe-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a probe runtime");
                rt.block_on(async move {
                    tokio::select! {
                        _ = probe(port, out) => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("a probe thread");
        Prober { probes, stop }
    }

    /// Stops probing (a probe in flight is not recorded) and returns what was recorded.
    fn stop(self) -> Vec<Probe> {
        let _ = self.stop.send(());
        self.probes.lock().unwrap().clone()
    }
}

async fn probe(port: u16, out: Arc<Mutex<Vec<Probe>>>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(PROBE_GIVE_UP)
        .build()
        .expect("a client");
    let url = format!("http://127.0.0.1:{port}/healthz");
    loop {
        let sent = Timestamp::now();
        let started = std::time::Instant::now();
        let answered = client
            .get(&url)
            .send()
            .await
            .ok()
            .map(|_| started.elapsed().as_secs_f64());
        out.lock().unwrap().push((sent, answered));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Azure: the acknowledgements (`POST` with `StartRequests`) the metadata service took.
async fn azure_acks(ctx: &Ctx<'_>) -> Vec<(Timestamp, String)> {
    let url = format!("{}/_sim/requests", ctx.imds_url.as_deref().unwrap());
    let Ok(r) = ctx.http.get(url).send().await else {
        return Vec::new();
    };
    let log: Vec<Value> = r.json().await.unwrap_or_default();
    let mut out = Vec::new();
    for e in log
        .iter()
        .filter(|e| e["method"] == "POST" && e["status"] == 200)
    {
        let (Some(at), Some(body)) = (
            e["at"].as_str().and_then(|t| t.parse::<Timestamp>().ok()),
            e["body"]
                .as_str()
                .and_then(|b| serde_json::from_str::<Value>(b).ok()),
        ) else {
            continue;
        };
        for r in body["StartRequests"].as_array().into_iter().flatten() {
            if let Some(id) = r["EventId"].as_str() {
                out.push((at, id.to_owned()));
            }
        }
    }
    out
}

/// When each request reached the metadata simulator (its log: `time` for EC2's, `at` for
/// GCE's and Azure's).
async fn metadata_requests(ctx: &Ctx<'_>) -> Vec<Timestamp> {
    let url = format!("{}/_sim/requests", ctx.imds_url.as_deref().unwrap());
    let Ok(r) = ctx.http.get(url).send().await else {
        return Vec::new();
    };
    let log: Vec<Value> = r.json().await.unwrap_or_default();
    log.iter()
        .filter(|e| !e["path"].as_str().unwrap_or_default().starts_with("/_sim"))
        .filter_map(|e| e["time"].as_str().or(e["at"].as_str())?.parse().ok())
        .collect()
}

/// Requests the metadata simulator answered with a fault (its log says 5xx it was told to).
async fn imds_fault_hits(ctx: &Ctx<'_>) -> u64 {
    let url = format!("{}/_sim/requests", ctx.imds_url.as_deref().unwrap());
    let Ok(r) = ctx.http.get(url).send().await else {
        return 0;
    };
    let log: Vec<Value> = r.json().await.unwrap_or_default();
    log.iter()
        .filter(|e| e["status"].as_u64().is_some_and(|s| s >= 500))
        .count() as u64
}

/// Makes a notice visible; returns its actual deadline and (queue) the body sent.
async fn notice(
    ctx: &Ctx<'_>,
    n: &Notice,
    now: Timestamp,
    event_id: &mut Option<String>,
) -> Result<(Option<Timestamp>, Option<String>), String> {
    let t0 = now;
    match ctx.sc.mode {
        Mode::Imds => match *n {
            Notice::Spot {
                unreadable: true, ..
            } => {
                ctx.imds_post(
                    "items",
                    json!({"path": "meta-data/spot/instance-action",
                           "body": "{\"action\":\"terminate\",\"time\":\"2026-12-06 03:20:00\"}"}),
                )
                .await?;
                Ok((None, None))
            }
            Notice::Spot { lead, restate, .. } => {
                let lead = lead.round() as u64;
                let v = ctx
                    .imds_post(
                        "spot-interruption",
                        json!({"action": "terminate", "lead_seconds": lead, "restate": restate}),
                    )
                    .await?;
                let time = v["time"].as_str().and_then(|s| s.parse().ok());
                Ok((time, None))
            }
            Notice::Rebalance { restate, .. } => {
                // Back from an earlier withdrawal, if any.
                ctx.imds_post(
                    "items",
                    json!({"path": "meta-data/events/recommendations/rebalance", "remove": true}),
                )
                .await?;
                ctx.imds_post("rebalance-recommendation", json!({"restate": restate}))
                    .await?;
                Ok((None, None))
            }
            Notice::Scheduled {
                at,
                not_before,
                code,
                ..
            } => {
                let nb = t0 + jiff::SignedDuration::from_secs_f64(not_before - at);
                let v = ctx
                    .imds_post(
                        "scheduled-event",
                        json!({"code": code, "not_before": nb.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}),
                    )
                    .await?;
                *event_id = v["EventId"].as_str().map(str::to_owned);
                let nb: Timestamp = nb
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
                    .parse()
                    .unwrap_or(nb);
                let deadline = if nb > t0 {
                    nb
                } else {
                    t0 + Duration::from_secs_f64(DRAIN_BUDGET)
                };
                Ok((Some(deadline), None))
            }
            Notice::AsgTermination { .. } => {
                ctx.imds_post("asg-lifecycle", json!({"state": "Terminated"}))
                    .await?;
                Ok((Some(t0 + Duration::from_secs_f64(DRAIN_BUDGET)), None))
            }
            Notice::StateChange { .. } => Err("state changes are queue messages".into()),
        },
        Mode::Gce => match *n {
            Notice::Spot { lead, .. } => {
                ctx.imds_post("preempt", json!({})).await?;
                Ok((Some(t0 + Duration::from_secs_f64(lead.round())), None))
            }
            Notice::Scheduled { code, .. } => {
                ctx.imds_post("maintenance", json!({"value": code})).await?;
                Ok((Some(t0 + Duration::from_secs_f64(GCE_MAINTENANCE)), None))
            }
            _ => Err(format!("no {} on GCE", n.kind())),
        },
        Mode::Azure => {
            // NotBefore is written in whole seconds.
            let whole =
                |t: Timestamp| -> Timestamp { Timestamp::from_second(t.as_second()).unwrap_or(t) };
            let (body, seconds) = match *n {
                Notice::Spot { lead, .. } => (json!({"type": "Preempt"}), lead.round()),
                Notice::Scheduled {
                    at,
                    not_before,
                    code,
                    ..
                } => (
                    // It names another VM too: never acknowledged, so it can be cancelled; and
                    // once started it lasts past the scenario (the VM is not rebooted here).
                    json!({"type": code, "resources": [AZURE_VM, "aks-spotpool-12345678-vmss000009"],
                           "duration_seconds": 600}),
                    (not_before - at).round(),
                ),
                Notice::AsgTermination { .. } => (json!({"type": "Terminate"}), DRAIN_BUDGET),
                _ => return Err(format!("no {} on Azure", n.kind())),
            };
            let mut body = body;
            body["not_before_seconds"] = json!(seconds as i64);
            let v = ctx.imds_post("events", body).await?;
            *event_id = v["EventId"].as_str().map(str::to_owned);
            Ok((Some(whole(t0 + Duration::from_secs_f64(seconds))), None))
        }
        Mode::Queue => {
            let instance = ctx.instance.clone().unwrap_or_default();
            let (body, deadline) = match *n {
                Notice::Spot { lead, .. } => {
                    // The warning's time is two minutes before the action: sent late so that
                    // the deadline is `lead` ahead.
                    let time = t0 - Duration::from_secs_f64(120.0 - lead);
                    let time: Timestamp = time
                        .strftime("%Y-%m-%dT%H:%M:%SZ")
                        .to_string()
                        .parse()
                        .unwrap_or(time);
                    (
                        event_bridge(
                            "EC2 Spot Instance Interruption Warning",
                            "aws.ec2",
                            time,
                            json!({"instance-id": instance, "instance-action": "terminate"}),
                        ),
                        Some(time + Duration::from_secs(120)),
                    )
                }
                Notice::Rebalance { .. } => (
                    event_bridge(
                        "EC2 Instance Rebalance Recommendation",
                        "aws.ec2",
                        t0,
                        json!({"instance-id": instance}),
                    ),
                    None,
                ),
                Notice::StateChange { state, .. } => (
                    event_bridge(
                        "EC2 Instance State-change Notification",
                        "aws.ec2",
                        t0,
                        json!({"instance-id": instance, "state": state}),
                    ),
                    Some(t0),
                ),
                Notice::AsgTermination { .. } => (
                    event_bridge(
                        "EC2 Instance-terminate Lifecycle Action",
                        "aws.autoscaling",
                        t0,
                        json!({"LifecycleActionToken": format!("{:x}", fastrand::u64(..)),
                               "AutoScalingGroupName": format!("soak-{}", ctx.sc.seed),
                               "LifecycleHookName": "drain", "EC2InstanceId": instance,
                               "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING"}),
                    ),
                    Some(t0 + Duration::from_secs_f64(DRAIN_BUDGET)),
                ),
                Notice::Scheduled { .. } => return Err("no scheduled events in queue mode".into()),
            };
            ctx.send_message(&body).await?;
            Ok((deadline, Some(body)))
        }
    }
}

async fn withdraw(ctx: &Ctx<'_>, n: &Notice, event_id: Option<&str>) -> Result<(), String> {
    match n {
        Notice::Rebalance { .. } => {
            ctx.imds_post(
                "items",
                json!({"path": "meta-data/events/recommendations/rebalance", "status": 404,
                       "body": "<?xml version=\"1.0\"?><Error>Not Found</Error>"}),
            )
            .await?;
        }
        Notice::Scheduled { .. } if ctx.sc.mode == Mode::Gce => {
            ctx.imds_post("maintenance", json!({"value": "NONE"}))
                .await?;
        }
        Notice::Scheduled { .. } if ctx.sc.mode == Mode::Azure => {
            if let Some(id) = event_id {
                ctx.imds_post(&format!("events/{id}/cancel"), json!({}))
                    .await?;
            }
        }
        Notice::Scheduled { .. } => {
            if let Some(id) = event_id {
                ctx.imds_post(&format!("scheduled-event/{id}/cancel"), json!({}))
                    .await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The cluster a scenario plays on.
enum Cluster {
    Sim(sih_sim_cluster::RunningCluster),
    Real(crate::real::RealCluster),
}

impl Cluster {
    fn faults(&self) -> &sih_sim_cluster::faults::Faults {
        match self {
            Self::Sim(c) => c.faults(),
            Self::Real(r) => r.faults(),
        }
    }

    fn journal(&self) -> &sih_sim_cluster::journal::Journal {
        match self {
            Self::Sim(c) => c.journal(),
            Self::Real(r) => r.journal(),
        }
    }

    /// The pods bound to `node` now: `(name, uid)`.
    async fn pods_on(&self, node: &str) -> Vec<(String, String)> {
        match self {
            Self::Sim(c) => c.store().read(|i| {
                i.list(sih_sim_cluster::resources::PODS, None)
                    .filter(|p| p["spec"]["nodeName"] == node)
                    .map(|p| {
                        (
                            p["metadata"]["name"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                            p["metadata"]["uid"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            }),
            Self::Real(r) => r.pods_on(node).await,
        }
    }

    /// Our Events (events.k8s.io): `(reason, regarding's name)`.
    async fn events(&self) -> Vec<(String, String)> {
        // Either shape: events.k8s.io's (`reportingController`, `regarding`) or core's
        // (`reportingComponent`, `involvedObject`), however the server stores them.
        let ours = |e: &Value| -> Option<(String, String)> {
            let controller = e["reportingController"]
                .as_str()
                .or(e["reportingComponent"].as_str());
            let regarding = e["regarding"]["name"]
                .as_str()
                .or(e["involvedObject"]["name"].as_str());
            (controller == Some("spot-interrupt-handler")).then(|| {
                (
                    e["reason"].as_str().unwrap_or_default().to_owned(),
                    regarding.unwrap_or_default().to_owned(),
                )
            })
        };
        match self {
            Self::Sim(c) => c.store().read(|i| {
                i.list(sih_sim_cluster::resources::EVENTS_V1, None)
                    .chain(i.list(sih_sim_cluster::resources::EVENTS, None))
                    .filter_map(|e| ours(e))
                    .collect()
            }),
            Self::Real(r) => r.events().await.iter().filter_map(ours).collect(),
        }
    }

    /// Workload pods running (in `default`).
    async fn running(&self) -> usize {
        match self {
            Self::Sim(c) => c.store().read(|i| {
                i.list(sih_sim_cluster::resources::PODS, Some("default"))
                    .filter(|p| p["status"]["phase"] == "Running")
                    .count()
            }),
            Self::Real(r) => r.running().await,
        }
    }

    /// The instance behind `node` goes (the simulator: NotReady, deleted 4 s later).
    async fn terminate(&self, node: &str) -> Result<(), String> {
        match self {
            Self::Sim(c) => c.terminate_node(node, Duration::from_secs(4)),
            Self::Real(r) => r.terminate(node).await,
        }
    }
}
