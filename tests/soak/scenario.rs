//! One random scenario from its seed: a workload, notices of every kind at random times
//! (overlapping ones included), faults from both simulators, and kills of the agent or the
//! controller. Times are seconds from the scenario's start. Everything is drawn from the seed
//! alone, so a failing seed replays the same scenario.

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Imds,
    Queue,
    /// The agent on Google Compute Engine's metadata server (`--cloud gce`).
    Gce,
    /// The agent on Azure's Scheduled Events (`--cloud azure`).
    Azure,
}

impl Mode {
    /// A per-node agent polling a metadata service (every mode but the queue's).
    pub fn agent(self) -> bool {
        self != Self::Queue
    }
}

/// GCE: `--gce-maintenance-notice` (a host maintenance's time after it is announced).
pub const GCE_MAINTENANCE: f64 = 20.0;

/// How much time the agent gets for a notice without a deadline (`--drain-budget`).
pub const DRAIN_BUDGET: f64 = 25.0;
/// `--deadline-margin`.
pub const MARGIN: f64 = 2.0;
/// `--poll-interval` of the agent.
pub const POLL: f64 = 0.5;

#[derive(Debug, Clone)]
pub struct Deployment {
    pub name: String,
    pub replicas: u32,
    pub grace: i64,
    /// PodDisruptionBudget `maxUnavailable: 1`.
    pub pdb: bool,
    /// The budget is `maxUnavailable: 0`: every eviction is refused, so its pods stay until
    /// the drain deletes them at their last moment.
    pub stuck: bool,
    pub empty_dir: bool,
    pub critical: bool,
}

/// A pod without a controller, bound to the node under notice.
#[derive(Debug, Clone)]
pub struct BarePod {
    pub name: String,
    pub grace: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// IMDS: the notice appears at `at` with its time `lead` ahead (restated on every read when
    /// `restate`). Queue: a warning arrives at `at` whose deadline is `lead` ahead.
    /// `unreadable` (IMDS): the notice's time cannot be read (`"2026-12-06 03:20:00"`); the
    /// kind is certain, so it is acted on at once with EC2's two minutes from detection.
    Spot {
        at: f64,
        lead: f64,
        restate: bool,
        unreadable: bool,
    },
    Rebalance {
        at: f64,
        gone_at: Option<f64>,
        restate: bool,
    },
    /// Created at `at` with `NotBefore` at `not_before` (before `at`: its window has started);
    /// cancelled at `cancel_at`.
    Scheduled {
        at: f64,
        not_before: f64,
        cancel_at: Option<f64>,
        code: &'static str,
    },
    /// IMDS: target lifecycle state `Terminated`; queue: a terminate lifecycle action.
    AsgTermination { at: f64 },
    /// Queue only: `stopping` / `shutting-down` for the instance under notice.
    StateChange { at: f64, state: &'static str },
}

impl Notice {
    pub fn at(&self) -> f64 {
        match *self {
            Self::Spot { at, .. }
            | Self::Rebalance { at, .. }
            | Self::Scheduled { at, .. }
            | Self::AsgTermination { at }
            | Self::StateChange { at, .. } => at,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Spot { .. } => "spot-interruption",
            Self::Rebalance { .. } => "rebalance-recommendation",
            Self::Scheduled { .. } => "scheduled-maintenance",
            Self::AsgTermination { .. } => "asg-termination",
            Self::StateChange { .. } => "instance-state-change",
        }
    }

    /// When the notice stops needing anything (withdrawn); `None`: never.
    pub fn ends(&self) -> Option<f64> {
        match *self {
            Self::Rebalance { gone_at, .. } => gone_at,
            Self::Scheduled { cancel_at, .. } => cancel_at,
            _ => None,
        }
    }

    /// Whether the default action drains (all but the rebalance's taint).
    pub fn drains(&self) -> bool {
        !matches!(self, Self::Rebalance { .. })
    }

    /// Whether the deadline is the product's own drain budget counted from its detection (no
    /// time of the cloud's): an Auto Scaling termination, a scheduled event whose window had
    /// already started.
    pub fn budget_counted(&self) -> bool {
        match *self {
            Self::AsgTermination { .. } => true,
            Self::Scheduled { at, not_before, .. } => not_before <= at,
            _ => false,
        }
    }

    /// Whether the instance is gone at the deadline whatever happens.
    pub fn hard(&self) -> bool {
        matches!(self, Self::Spot { .. } | Self::StateChange { .. })
    }

    /// The deadline the drain must plan against, as the product's rules say: a spot notice's
    /// time; a state change's moment; a scheduled event's `NotBefore`, unless its window had
    /// already started when it was seen (then, like a notice without a deadline, the drain
    /// budget from detection).
    pub fn deadline(&self) -> Option<f64> {
        match *self {
            Self::Spot { at, lead, .. } => Some(at + lead),
            Self::Rebalance { .. } => None,
            Self::Scheduled { at, not_before, .. } => Some(if not_before > at {
                not_before
            } else {
                at + DRAIN_BUDGET
            }),
            Self::AsgTermination { at } => Some(at + DRAIN_BUDGET),
            Self::StateChange { at, .. } => Some(at),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClusterFault {
    pub from: f64,
    pub to: f64,
    pub spec: Value,
    /// Whether it can keep a pod from leaving (or the fence, which comes first) while active.
    pub disrupts: bool,
}

#[derive(Debug, Clone)]
pub struct ImdsFault {
    pub from: f64,
    pub to: f64,
    pub spec: Value,
    pub blocks: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Kill {
    pub at: f64,
    /// How long the process stays down before its replacement starts.
    pub down: f64,
    /// Queue mode with two replicas: which one.
    pub replica: usize,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub mode: Mode,
    pub deployments: Vec<Deployment>,
    pub bare: Vec<BarePod>,
    pub notices: Vec<Notice>,
    pub cluster_faults: Vec<ClusterFault>,
    pub imds_faults: Vec<ImdsFault>,
    pub kills: Vec<Kill>,
    /// Queue mode: controller replicas.
    pub replicas: usize,
    /// When the scenario ends (every deadline passed, and time to settle).
    pub horizon: f64,
    /// The agent's admin port is held by a flood of idle connections throughout, while a
    /// probe asks `/healthz` every half second.
    pub flood: bool,
    /// Capacity first (`--reserve-capacity=true`, a 10 s TTL): the Deployments' pods ask for
    /// a little CPU, so each has a placeholder while its drain lasts.
    pub reserve: bool,
}

fn pick<T: Copy>(rng: &mut fastrand::Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())]
}

fn between(rng: &mut fastrand::Rng, lo: f64, hi: f64) -> f64 {
    let v = lo + rng.f64() * (hi - lo);
    (v * 10.0).round() / 10.0
}

impl Scenario {
    pub fn generate(seed: u64, mode: Mode) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let r = &mut rng;
        let graces = [1, 1, 2, 3, 5, 8, 30, 90];
        let deployments = (0..r.usize(1..=3))
            .map(|i| Deployment {
                name: format!("app{i}"),
                replicas: r.u32(2..=6),
                grace: pick(r, &graces),
                pdb: r.bool(),
                stuck: false,
                empty_dir: r.f64() < 0.3,
                critical: r.f64() < 0.15,
            })
            .collect();
        let bare = if r.f64() < 0.3 {
            vec![BarePod {
                name: "solo".into(),
                grace: pick(r, &[1, 3, 10]),
            }]
        } else {
            Vec::new()
        };

        let mut notices = Vec::new();
        let spot = r.f64() < 0.7;
        if spot {
            notices.push(Notice::Spot {
                at: between(r, 1.0, 8.0),
                lead: between(r, 14.0, 30.0),
                restate: mode == Mode::Imds && r.f64() < 0.25,
                unreadable: false,
            });
        }
        if matches!(mode, Mode::Imds | Mode::Queue) && r.f64() < 0.4 {
            let at = between(r, 0.5, 8.0);
            notices.push(Notice::Rebalance {
                at,
                gone_at: (mode == Mode::Imds && r.bool()).then(|| at + between(r, 3.0, 10.0)),
                restate: mode == Mode::Imds && r.f64() < 0.3,
            });
        }
        if mode == Mode::Imds {
            for _ in 0..r.usize(0..=2) {
                let at = between(r, 0.0, 10.0);
                // Never within a second or two of its creation: whether it "has started" when
                // the agent first sees it must not depend on the poll's timing.
                let not_before = if r.bool() {
                    at - between(r, 2.0, 30.0)
                } else {
                    at + between(r, 4.0, 35.0)
                };
                notices.push(Notice::Scheduled {
                    at,
                    not_before,
                    cancel_at: r.bool().then(|| at + between(r, 2.0, 12.0)),
                    code: pick(r, &["system-reboot", "system-maintenance", "instance-stop"]),
                });
            }
        }
        if mode == Mode::Gce && r.f64() < 0.4 {
            // One host maintenance at a time: `maintenance-event` holds one value.
            let at = between(r, 0.0, 10.0);
            notices.push(Notice::Scheduled {
                at,
                not_before: at + GCE_MAINTENANCE,
                cancel_at: r.bool().then(|| at + between(r, 2.0, 12.0)),
                code: "TERMINATE_ON_HOST_MAINTENANCE",
            });
        }
        if mode == Mode::Azure {
            for _ in 0..r.usize(0..=2) {
                let at = between(r, 0.0, 10.0);
                let not_before = at + between(r, 4.0, 35.0);
                // Azure cancels only events that have not started.
                let cancel_at = r
                    .bool()
                    .then(|| at + between(r, 2.0, 12.0))
                    .filter(|c| *c < not_before - 1.0);
                notices.push(Notice::Scheduled {
                    at,
                    not_before,
                    cancel_at,
                    code: pick(r, &["Reboot", "Redeploy"]),
                });
            }
        }
        // GCE has no termination notice of a group's own; Azure's is a `Terminate` event.
        if mode != Mode::Gce && r.f64() < 0.15 {
            notices.push(Notice::AsgTermination {
                at: between(r, 1.0, 12.0),
            });
        }
        if mode == Mode::Queue && r.f64() < 0.5 {
            // The state changes EC2 sends when it takes a spot instance: after the warning.
            let after = notices
                .iter()
                .find_map(|n| match n {
                    Notice::Spot { at, lead, .. } => Some(at + lead - 2.0),
                    _ => None,
                })
                .unwrap_or_else(|| between(r, 3.0, 12.0));
            notices.push(Notice::StateChange {
                at: after,
                state: "stopping",
            });
            if r.bool() {
                notices.push(Notice::StateChange {
                    at: after + between(r, 0.2, 1.5),
                    state: "shutting-down",
                });
            }
        }
        if notices.is_empty() {
            notices.push(Notice::Spot {
                at: between(r, 1.0, 6.0),
                lead: between(r, 14.0, 30.0),
                restate: false,
                unreadable: false,
            });
        }
        notices.sort_by(|a, b| a.at().total_cmp(&b.at()));

        let last_deadline = notices
            .iter()
            .map(|n| n.deadline().unwrap_or(n.at()).max(n.at()))
            .fold(0.0, f64::max);
        let horizon = (last_deadline + 8.0).min(70.0);
        // Hard deadlines: faults and kills near them make a pod's failure to leave excusable,
        // so most scenarios keep clear of them and some do not.
        let hard: Vec<f64> = notices
            .iter()
            .filter(|n| n.hard())
            .filter_map(Notice::deadline)
            .collect();
        let near_hard = |t0: f64, t1: f64| hard.iter().any(|d| t1 > d - 9.0 && t0 < *d + 1.0);
        // GCE tells neither when a preemption or a maintenance began nor when it ends: the
        // agent counts its time from the moment it sees the value change. An outage of the
        // agent or the metadata server as it changes moves that moment, so none is played then.
        let starts: Vec<f64> = notices.iter().map(Notice::at).collect();
        let near_gce_start = |t0: f64, t1: f64| {
            mode == Mode::Gce && starts.iter().any(|a| t1 > a - 1.0 && t0 < a + 4.0)
        };

        let mut cluster_faults = Vec::new();
        for _ in 0..r.usize(0..=3) {
            let from = between(r, 0.0, horizon - 4.0);
            let to = from + between(r, 1.0, 7.0);
            if near_hard(from, to) && r.f64() < 0.5 {
                continue;
            }
            let (spec, disrupts) = cluster_fault(r, mode);
            if disrupts && near_hard(from, to) {
                continue;
            }
            cluster_faults.push(ClusterFault {
                from,
                to,
                spec,
                disrupts,
            });
        }
        let mut imds_faults = Vec::new();
        if mode.agent() && r.f64() < 0.4 {
            let from = between(r, 0.0, horizon - 4.0);
            let to = from + between(r, 1.0, 5.0);
            let aws = mode == Mode::Imds;
            let (spec, blocks) = match (r.usize(0..3), aws) {
                (0, true) => (json!({"status": 503, "rate": 1.0}), true),
                (1, true) => (json!({"status": 500, "rate": 0.5}), false),
                (_, true) => (json!({"latency_ms": 1500}), true),
                (0, false) => (json!({"status": 503}), true),
                (1, false) => (json!({"status": 500, "remaining": 2}), false),
                (_, false) => (json!({"latency_ms": 1500}), true),
            };
            if !near_gce_start(from, to) {
                imds_faults.push(ImdsFault {
                    from,
                    to,
                    spec,
                    blocks,
                });
            }
        }
        let replicas = if mode == Mode::Queue && r.bool() {
            2
        } else {
            1
        };
        let mut kills = Vec::new();
        for _ in 0..r.usize(0..=2) {
            let at = between(r, 1.0, horizon - 4.0);
            let down = between(r, 0.2, 3.0);
            if near_hard(at, at + down + 3.0) && r.f64() < 0.8
                || near_gce_start(at, at + down + 3.0)
            {
                continue;
            }
            kills.push(Kill {
                at,
                down,
                replica: r.usize(0..replicas),
            });
        }
        kills.sort_by(|a, b| a.at.total_cmp(&b.at));
        // One kill at a time per replica: a later kill of a process not yet back is dropped.
        let mut back_at = vec![f64::MIN; replicas];
        kills.retain(|k| {
            let ok = k.at > back_at[k.replica] + 1.0;
            if ok {
                back_at[k.replica] = k.at + k.down;
            }
            ok
        });
        // Drawn last, so that the draws above keep their meaning for a seed.
        for n in &mut notices {
            if let Notice::Spot {
                restate: false,
                unreadable,
                ..
            } = n
            {
                *unreadable = mode == Mode::Imds && r.f64() < 0.15;
            }
        }
        let mut deployments: Vec<Deployment> = deployments;
        for d in &mut deployments {
            d.stuck = d.pdb && r.f64() < 0.3;
        }
        // Evictions that hang far longer than the API timeout (10 s): a drain must give up on
        // them and still have every pod out by the deadline (a deletion is the other path).
        if r.f64() < 0.15 {
            let from = between(r, 0.0, 8.0);
            cluster_faults.push(ClusterFault {
                from,
                to: from + between(r, 12.0, 30.0),
                spec: json!({"resource": "pods/eviction", "verb": "create", "hang": true}),
                disrupts: false,
            });
        }
        // A kill in the first second after a draining notice: the replacement must resume
        // the drain the first one started.
        if r.f64() < 0.3
            && let Some(at) = notices.iter().filter(|n| n.drains()).map(Notice::at).next()
        {
            let replica = r.usize(0..replicas);
            let at = at + between(r, 0.3, 1.2);
            let down = between(r, 0.3, 1.5);
            if kills
                .iter()
                .all(|k| k.replica != replica || k.at + k.down + 1.0 < at || at + down + 1.0 < k.at)
            {
                kills.push(Kill { at, down, replica });
                kills.sort_by(|a, b| a.at.total_cmp(&b.at));
            }
        }
        let flood = mode.agent() && r.f64() < 0.25;
        // Drawn last: every earlier draw, and so every seed's story, stays as it was.
        let reserve = r.f64() < 0.3;
        Self {
            flood,
            reserve,
            seed,
            mode,
            deployments,
            bare,
            notices,
            cluster_faults,
            imds_faults,
            kills,
            replicas,
            horizon,
        }
    }

    /// The cluster's workload as YAML documents (nodes come from the simulator or, in queue
    /// mode, from the instances).
    pub fn workload_yaml(&self, target_node: &str) -> String {
        let mut docs = Vec::new();
        for d in &self.deployments {
            let volumes = if d.empty_dir {
                "\n      volumes: [{name: scratch, emptyDir: {}}]"
            } else {
                ""
            };
            let priority = if d.critical {
                "\n      priorityClassName: system-cluster-critical"
            } else {
                ""
            };
            docs.push(format!(
                r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {n}, namespace: default}}
spec:
  replicas: {r}
  selector: {{matchLabels: {{app: {n}}}}}
  template:
    metadata: {{labels: {{app: {n}}}}}
    spec:
      terminationGracePeriodSeconds: {g}{priority}
      containers: [{{name: c, image: nginx{requests}}}]{volumes}"#,
                n = d.name,
                r = d.replicas,
                g = d.grace,
                requests = if self.reserve {
                    ", resources: {requests: {cpu: 10m}}"
                } else {
                    ""
                },
            ));
            if d.pdb {
                docs.push(format!(
                    "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: {n}, namespace: default}}\nspec:\n  maxUnavailable: {u}\n  selector: {{matchLabels: {{app: {n}}}}}",
                    n = d.name,
                    u = if d.stuck { 0 } else { 1 },
                ));
            }
        }
        for b in &self.bare {
            docs.push(format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {n}, namespace: default}}\nspec:\n  nodeName: {target_node}\n  terminationGracePeriodSeconds: {g}\n  containers: [{{name: c, image: busybox}}]",
                n = b.name,
                g = b.grace
            ));
        }
        if self.reserve {
            let manifest = include_str!("../../deploy/manifests/reserve-capacity.yaml");
            docs.push(
                manifest
                    .split("\n---\n")
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        docs.push(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: ds, namespace: kube-system}\nspec:\n  selector: {matchLabels: {app: ds}}\n  template:\n    metadata: {labels: {app: ds}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers: [{name: c, image: busybox}]"
                .into(),
        );
        docs.join("\n---\n")
    }

    /// A pod's own grace period, from its name; `None` for a pod we never evict (DaemonSet).
    pub fn grace_of(&self, pod: &str) -> Option<i64> {
        if let Some(b) = self.bare.iter().find(|b| b.name == pod) {
            return Some(b.grace);
        }
        self.deployments
            .iter()
            .find(|d| pod.starts_with(&format!("{}-", d.name)))
            .map(|d| d.grace)
    }

    /// Whether the pod's budget refuses every eviction (`maxUnavailable: 0`).
    pub fn held_by_budget(&self, pod: &str) -> bool {
        self.deployments
            .iter()
            .any(|d| d.stuck && pod.starts_with(&format!("{}-", d.name)))
    }

    /// One line that says what the scenario is.
    pub fn describe(&self) -> String {
        let notices: Vec<String> = self
            .notices
            .iter()
            .map(|n| match n {
                Notice::Spot {
                    at,
                    lead,
                    restate,
                    unreadable,
                } => format!(
                    "spot@{at}+{lead}{}{}",
                    if *restate { "(restated)" } else { "" },
                    if *unreadable { "(time unreadable)" } else { "" }
                ),
                Notice::Rebalance {
                    at,
                    gone_at,
                    restate,
                } => format!(
                    "rebalance@{at}{}{}",
                    gone_at.map(|g| format!("-{g}")).unwrap_or_default(),
                    if *restate { "(restated)" } else { "" }
                ),
                Notice::Scheduled {
                    at,
                    not_before,
                    cancel_at,
                    code,
                } => format!(
                    "{code}@{at}(nb {not_before:.1}){}",
                    cancel_at
                        .map(|c| format!(" cancelled@{c}"))
                        .unwrap_or_default()
                ),
                Notice::AsgTermination { at } => format!("asg@{at}"),
                Notice::StateChange { at, state } => format!("{state}@{at:.1}"),
            })
            .collect();
        format!(
            "seed {} {:?}: {} | pods: {} | faults: {} cluster, {} imds | kills: {} | replicas {}{}{}",
            self.seed,
            self.mode,
            notices.join(", "),
            self.deployments
                .iter()
                .map(|d| format!(
                    "{}x{} g{}{}",
                    d.name,
                    d.replicas,
                    d.grace,
                    if d.stuck {
                        " pdb0"
                    } else if d.pdb {
                        " pdb"
                    } else {
                        ""
                    }
                ))
                .chain(self.bare.iter().map(|b| format!("{} g{}", b.name, b.grace)))
                .collect::<Vec<_>>()
                .join(", "),
            self.cluster_faults.len(),
            self.imds_faults.len(),
            self.kills.len(),
            self.replicas,
            if self.flood {
                " | admin port flooded"
            } else {
                ""
            },
            if self.reserve {
                " | capacity reserved"
            } else {
                ""
            }
        )
    }
}

/// A fault for the cluster: what it is and whether it can hold up the evacuation.
fn cluster_fault(r: &mut fastrand::Rng, mode: Mode) -> (Value, bool) {
    // An eviction or a pod read that fails leaves another graceful path (a deletion with the
    // grace that fits): those faults excuse nothing.
    let mut targets: Vec<(&str, Option<&str>, bool)> = vec![
        ("pods/eviction", Some("create"), false),
        ("pods/eviction", Some("create"), false),
        ("pods", Some("delete"), true),
        ("pods", Some("list"), true),
        ("pods", Some("get"), false),
        ("nodes", Some("patch"), true),
        ("nodes", Some("get"), true),
        ("events", Some("create"), false),
        ("*", None, true),
    ];
    if mode == Mode::Queue {
        targets.push(("leases", None, true));
        targets.push(("nodes", Some("watch"), true));
    }
    let (resource, verb, disrupts) = targets[r.usize(..targets.len())];
    let mut spec = json!({"resource": resource});
    if let Some(v) = verb {
        spec["verb"] = json!(v);
    }
    let rate = if r.f64() < 0.3 { 0.5 } else { 1.0 };
    match (verb, r.usize(0..6)) {
        (Some("watch"), 0..=2) => spec["drop"] = json!(true),
        (Some("watch"), _) => spec["expire"] = json!(true),
        (_, 0) => spec["status"] = json!(pick(r, &[500, 503, 429])),
        (_, 1) => {
            spec["status"] = json!(500);
        }
        (_, 2) => spec["latency_ms"] = json!(pick(r, &[300, 1000, 2500])),
        (_, 3 | 4) => spec["hang"] = json!(true),
        _ => spec["reset"] = json!(true),
    }
    if spec.get("hang").is_none() {
        spec["rate"] = json!(rate);
    }
    (spec, disrupts)
}
