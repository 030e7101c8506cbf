//! A faithful EC2 instance metadata service (IMDS) with interruption scenarios.
//!
//! It serves what the agent reads on a real instance (identity items, spot notices, rebalance
//! recommendations, scheduled events, the ASG target lifecycle state) with EC2's status codes,
//! IMDSv2 token rules and body formats, plus a control API under `/_sim/` to change the
//! scenario, inject faults and read the request log. It is written independently of our client
//! (it does not share its types), so a test of one against the other can catch either's bug.
//!
//! Not simulated: the IP hop limit on token answers (it lives in the IP header, below HTTP) and
//! the network-interface tree beyond the primary interface.
#![forbid(unsafe_code)]

mod control;
mod ec2;
mod state;
mod tree;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::time::Instant;

pub use state::{ENDED_EVENT_LINGER, SCHEDULED_EVENT_CODES, TARGET_LIFECYCLE_STATES};

/// Whether GETs need an IMDSv2 token (`required`) or may go without one (`optional`, EC2's
/// default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenMode {
    #[default]
    Optional,
    Required,
}

impl FromStr for TokenMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "optional" => Ok(Self::Optional),
            "required" => Ok(Self::Required),
            other => Err(format!("{other:?} is not optional or required")),
        }
    }
}

/// What the spot notice says EC2 will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeAction {
    Terminate,
    Stop,
    Hibernate,
}

impl fmt::Display for NoticeAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Terminate => "terminate",
            Self::Stop => "stop",
            Self::Hibernate => "hibernate",
        })
    }
}

/// The instance the simulator pretends to be.
#[derive(Debug, Clone)]
pub struct Identity {
    pub instance_id: String,
    pub instance_type: String,
    pub availability_zone: String,
    pub local_hostname: String,
    pub local_ipv4: String,
    /// `None`: an instance without a public address (the items answer 404).
    pub public_ipv4: Option<String>,
    /// The Auto Scaling group, served as the instance's tag in the metadata (`None`: tags
    /// are not allowed into the metadata, EC2's default).
    pub auto_scaling_group: Option<String>,
    pub life_cycle: String,
    pub mac: String,
    pub ami_id: String,
    pub account_id: String,
    pub pending_time: String,
}

impl Default for Identity {
    fn default() -> Self {
        let availability_zone = "us-east-1a".to_owned();
        // The first node of `simulate cluster` (its spot node): one instance in every
        // simulator, so an agent that finds its node from the metadata finds that one.
        let local_ipv4 = "10.0.0.10".to_owned();
        Self {
            instance_id: "i-0123456789abcdef0".into(),
            instance_type: "m5.large".into(),
            local_hostname: hostname_for(&local_ipv4, &region_of(&availability_zone)),
            availability_zone,
            local_ipv4,
            // TEST-NET-3: documentation addresses, never routed.
            public_ipv4: Some("203.0.113.10".into()),
            auto_scaling_group: Some("spot-nodes".into()),
            life_cycle: "spot".into(),
            mac: "0e:49:61:0f:c3:11".into(),
            ami_id: "ami-0abcdef1234567890".into(),
            account_id: "123456789012".into(),
            pending_time: state::rfc3339(Timestamp::now()),
        }
    }
}

impl Identity {
    /// EC2's public DNS name for the public address: `ec2-203-0-113-12.compute-1.amazonaws.com`.
    pub fn public_hostname(&self) -> Option<String> {
        let ip = self.public_ipv4.as_ref()?.replace('.', "-");
        Some(match self.region().as_str() {
            "us-east-1" => format!("ec2-{ip}.compute-1.amazonaws.com"),
            region => format!("ec2-{ip}.{region}.compute.amazonaws.com"),
        })
    }

    pub fn region(&self) -> String {
        region_of(&self.availability_zone)
    }

    /// A plausible zone id (`use1-az1` for `us-east-1a`).
    pub fn availability_zone_id(&self) -> String {
        let region = self.region();
        let short: String = region
            .split('-')
            .map(|part| {
                if part.chars().all(|c| c.is_ascii_digit()) {
                    part.to_owned()
                } else {
                    part.chars()
                        .take(if part.len() <= 2 { 2 } else { 1 })
                        .collect()
                }
            })
            .collect();
        let letter = self.availability_zone.chars().last().unwrap_or('a');
        let n = (letter as u32).saturating_sub('a' as u32) + 1;
        format!("{short}-az{n}")
    }
}

/// `us-east-1a` → `us-east-1`.
pub fn region_of(availability_zone: &str) -> String {
    availability_zone
        .trim_end_matches(|c: char| c.is_ascii_lowercase())
        .to_owned()
}

/// EC2's private DNS name for an address: `ip-10-0-0-12.ec2.internal` in us-east-1,
/// `ip-10-0-0-12.<region>.compute.internal` elsewhere.
pub fn hostname_for(ipv4: &str, region: &str) -> String {
    let host = format!("ip-{}", ipv4.replace('.', "-"));
    if region == "us-east-1" {
        format!("{host}.ec2.internal")
    } else {
        format!("{host}.{region}.compute.internal")
    }
}

#[derive(Debug, Clone)]
pub struct SpotPlan {
    pub action: NoticeAction,
    /// When the notice appears, from start.
    pub after: Duration,
    /// Notice time minus appearance time.
    pub lead: Duration,
}

#[derive(Debug, Clone)]
pub struct ScheduledPlan {
    pub code: String,
    /// `NotBefore`, from start (negative: the window started before; EC2 lists such events,
    /// and amazon-ec2-metadata-mock's default is one). The event is listed from the start.
    pub not_before_in: jiff::SignedDuration,
}

/// What happens on its own after start; the control API can change all of it later.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    pub spot: Option<SpotPlan>,
    pub rebalance_after: Option<Duration>,
    pub scheduled: Vec<ScheduledPlan>,
    /// Target lifecycle state is `InService` from start, `Terminated` after this.
    pub asg_terminate_after: Option<Duration>,
    /// The spot notice's time and the rebalance `noticeTime` are restated on every read (now +
    /// lead, now), as amazon-ec2-metadata-mock serves them.
    pub restate_times: bool,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub identity: Identity,
    pub imdsv2: TokenMode,
    pub scenario: Scenario,
    pub request_log_capacity: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            identity: Identity::default(),
            imdsv2: TokenMode::Optional,
            scenario: Scenario::default(),
            request_log_capacity: 10_000,
        }
    }
}

/// Shared by every request handler.
pub(crate) struct App {
    world: Mutex<state::World>,
    fixed: tree::Leaves,
}

impl App {
    fn new(config: &SimConfig) -> Self {
        let mut world = state::World::new(config.imdsv2, config.request_log_capacity);
        world.apply_scenario(&config.scenario, Instant::now(), Timestamp::now());
        Self {
            world: Mutex::new(world),
            fixed: tree::identity_leaves(&config.identity),
        }
    }

    /// Critical sections never await and never panic half-way, so a poisoned lock still
    /// holds a consistent world.
    pub(crate) fn world(&self) -> MutexGuard<'_, state::World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serves on `listener` until `shutdown` completes, the control API (`/_sim/`) with it.
pub async fn serve(
    listener: TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_split(listener, None, config, shutdown).await
}

/// Serves the metadata on `listener` and, when `control` is given, the control API on that
/// listener alone (the metadata listener then refuses `/_sim/` as any unknown path): in a cluster the
/// metadata is reached through a Service while the control API stays on the pod's loopback,
/// reachable only by who may `kubectl port-forward`.
pub async fn serve_split(
    listener: TcpListener,
    control: Option<TcpListener>,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Arc::new(App::new(&config));
    announce_scheduled(&app, &config.scenario);
    // Small answers go out at once, without Nagle's delay.
    let nodelay = sih_sim_serve::without_nagle;
    let Some(control) = control else {
        let router = control::routes().fallback(ec2::handle).with_state(app);
        return axum::serve(nodelay(listener), router)
            .with_graceful_shutdown(shutdown)
            .await;
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let metadata = axum::Router::new()
        .fallback(ec2::handle)
        .with_state(app.clone());
    let controls = control::routes().with_state(app);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let serving = tokio::try_join!(
        axum::serve(nodelay(listener), metadata).with_graceful_shutdown(until(stopped.clone())),
        axum::serve(nodelay(control), controls).with_graceful_shutdown(until(stopped)),
        async move {
            shutdown.await;
            let _ = stop.send(true);
            Ok(())
        },
    );
    serving.map(|_| ())
}

/// Logs the moment each flag-scheduled item becomes visible, so a person watching the
/// simulator sees the story unfold.
fn announce_scheduled(app: &Arc<App>, s: &Scenario) {
    if let Some(plan) = &s.spot {
        let app = app.clone();
        let after = plan.after;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(n) = app.world().spot() {
                tracing::info!(action = %n.action, time = %state::rfc3339(n.time),
                    "spot interruption notice now visible");
            }
        });
    }
    if let Some(after) = s.rebalance_after {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            tracing::info!("rebalance recommendation now visible");
        });
    }
    if let Some(after) = s.asg_terminate_after {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            tracing::info!("target lifecycle state now Terminated");
        });
    }
}

/// A simulator running in this process, for tests and the demo. Stops when dropped.
pub type RunningSim = sih_sim_serve::Running;

/// Starts a simulator on `listen` (port 0 picks a free port) in the current runtime.
pub async fn start(config: SimConfig, listen: SocketAddr) -> std::io::Result<RunningSim> {
    RunningSim::start(listen, move |l, stop| serve(l, config, stop.wait())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_identity_values() {
        assert_eq!(region_of("us-east-1a"), "us-east-1");
        assert_eq!(region_of("us-gov-west-1b"), "us-gov-west-1");
        assert_eq!(
            hostname_for("10.0.0.12", "us-east-1"),
            "ip-10-0-0-12.ec2.internal"
        );
        assert_eq!(
            hostname_for("10.1.2.3", "eu-west-1"),
            "ip-10-1-2-3.eu-west-1.compute.internal"
        );
        let id = Identity {
            availability_zone: "eu-west-1c".into(),
            ..Identity::default()
        };
        assert_eq!(id.availability_zone_id(), "euw1-az3");
    }
}
