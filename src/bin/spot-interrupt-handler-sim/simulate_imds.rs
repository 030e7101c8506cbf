//! `simulate imds`: runs the metadata-service simulator until SIGTERM or Ctrl-C.

use std::io::Write;

use anyhow::Context;
use sih_sim_imds::{
    Identity, NoticeAction, Scenario, ScheduledPlan, SimConfig, SpotPlan, TokenMode, hostname_for,
    region_of,
};

use crate::cli::{ImdsV2, SimulateImdsArgs, SpotActionArg};

pub fn config(args: &SimulateImdsArgs) -> SimConfig {
    let region = region_of(&args.availability_zone);
    let aemm = args.aemm_defaults;
    let spot =
        (aemm || args.spot_action.is_some() || args.spot_after.is_some()).then(|| SpotPlan {
            action: match args.spot_action.unwrap_or(SpotActionArg::Terminate) {
                SpotActionArg::Terminate => NoticeAction::Terminate,
                SpotActionArg::Stop => NoticeAction::Stop,
                SpotActionArg::Hibernate => NoticeAction::Hibernate,
            },
            after: args.spot_after.unwrap_or_default(),
            lead: args.spot_lead,
        });
    SimConfig {
        identity: Identity {
            instance_id: args.instance_id.clone(),
            instance_type: args.instance_type.clone(),
            availability_zone: args.availability_zone.clone(),
            local_hostname: args
                .local_hostname
                .clone()
                .unwrap_or_else(|| hostname_for(&args.local_ipv4, &region)),
            local_ipv4: args.local_ipv4.clone(),
            life_cycle: args.instance_life_cycle.clone(),
            ..Identity::default()
        },
        imdsv2: match args.imdsv2 {
            ImdsV2::Optional => TokenMode::Optional,
            ImdsV2::Required => TokenMode::Required,
        },
        scenario: Scenario {
            spot,
            rebalance_after: args
                .rebalance_after
                .or(aemm.then_some(std::time::Duration::ZERO)),
            scheduled: args
                .scheduled_event
                .iter()
                .map(|e| ScheduledPlan {
                    code: e.code.clone(),
                    not_before_in: e.not_before_in,
                })
                // amazon-ec2-metadata-mock lists a system reboot whose window opens as it starts.
                .chain(aemm.then(|| ScheduledPlan {
                    code: "system-reboot".into(),
                    not_before_in: jiff::SignedDuration::ZERO,
                }))
                .collect(),
            asg_terminate_after: args.asg_terminate_after,
            restate_times: args.restate_times || aemm,
        },
        ..SimConfig::default()
    }
}

/// How to read the spot item by hand: with tokens required, a token first (a plain `curl`
/// gets 401).
struct WatchSteps {
    /// `PUT` here with the TTL header, for a token.
    token: Option<String>,
    item: String,
}

const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";

impl WatchSteps {
    fn new(addr: std::net::SocketAddr, tokens: sih_sim_imds::TokenMode) -> Self {
        Self {
            token: matches!(tokens, sih_sim_imds::TokenMode::Required)
                .then(|| format!("http://{addr}/latest/api/token")),
            item: format!("http://{addr}/latest/meta-data/spot/instance-action"),
        }
    }

    /// As a shell command.
    fn curl(&self) -> String {
        match &self.token {
            None => format!("curl -s {}", self.item),
            Some(token) => format!(
                "curl -s -H \"{TOKEN_HEADER}: $(curl -s -X PUT -H '{TOKEN_TTL_HEADER}: 60' {token})\" {}",
                self.item
            ),
        }
    }
}

pub async fn run(args: SimulateImdsArgs) -> anyhow::Result<()> {
    let config = config(&args);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let control = match args.control_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on --control-listen {at}"))?,
        ),
        None => None,
    };
    let control_at = match &control {
        Some(l) => l.local_addr()?,
        None => addr,
    };
    // The first stdout line is the address: scripts and tests read it (port 0 is allowed).
    // A reader that has gone away (closed pipe) must not stop the simulator.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on http://{addr}").and_then(|()| out.flush());
    drop(out);
    if let Some(spot) = &config.scenario.spot {
        tracing::info!(action = %spot.action, after = ?spot.after, lead = ?spot.lead,
            "spot interruption scheduled; watch it with: {}", WatchSteps::new(addr, config.imdsv2).curl());
    }
    let imdsv2 = match config.imdsv2 {
        sih_sim_imds::TokenMode::Optional => "optional",
        sih_sim_imds::TokenMode::Required => "required",
    };
    tracing::info!(imdsv2 = %imdsv2, instance_id = %config.identity.instance_id,
        "instance metadata simulator ready; control API at http://{control_at}/_sim/");
    sih_sim_imds::serve_split(
        listener,
        control,
        config,
        spot_interrupt_handler::signals::shutdown(),
    )
    .await
    .context("simulator stopped with an error")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `simulate imds` and `simulate cluster`, both with their defaults, describe one
    /// instance: the metadata's private DNS name is the cluster's spot node's name, its
    /// instance id ends that node's providerID, its zone and address are the node's. (They
    /// disagreed: an agent started without `--node-name` found, and would have drained, the
    /// on-demand node ip-10-0-0-12.)
    #[test]
    fn the_simulators_defaults_describe_one_instance() {
        use clap::Parser;
        let cli = crate::cli::SimCli::parse_from(["sih-sim", "simulate", "imds"]);
        let crate::cli::SimCommand::Simulate(crate::cli::Simulate::Imds(args)) = cli.command else {
            panic!("simulate imds parses as such");
        };
        let served = config(&args).identity;
        let library = Identity::default();
        assert_eq!(served.local_ipv4, library.local_ipv4);
        assert_eq!(served.instance_id, library.instance_id);
        let node = sih_sim_cluster::workload::node(0, true);
        assert_eq!(node["metadata"]["name"], served.local_hostname.as_str());
        assert_eq!(
            node["metadata"]["labels"]["topology.kubernetes.io/zone"],
            served.availability_zone.as_str()
        );
        assert_eq!(
            node["metadata"]["annotations"]["sim.spot-interrupt-handler/internal-ip"],
            served.local_ipv4.as_str()
        );
        assert!(
            node["spec"]["providerID"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/{}", served.instance_id)),
            "{node}"
        );
        assert_eq!(node["metadata"]["labels"]["lifecycle"], "Ec2Spot");
        assert_eq!(served.life_cycle, "spot");
    }

    /// The hint's steps, followed with an HTTP client, read the spot item whether or not
    /// tokens are required (a plain read gets 401 when they are).
    #[tokio::test]
    async fn the_watch_hint_reads_the_spot_item_with_and_without_tokens() {
        for tokens in [
            sih_sim_imds::TokenMode::Optional,
            sih_sim_imds::TokenMode::Required,
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut config = sih_sim_imds::SimConfig {
                imdsv2: tokens,
                ..sih_sim_imds::SimConfig::default()
            };
            config.scenario.spot = Some(sih_sim_imds::SpotPlan {
                action: sih_sim_imds::NoticeAction::Terminate,
                after: std::time::Duration::ZERO,
                lead: std::time::Duration::from_secs(120),
            });
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(sih_sim_imds::serve(listener, config, async {
                let _ = stopped.await;
            }));
            let steps = WatchSteps::new(addr, tokens);
            let http = reqwest::Client::new();
            let plain = http.get(&steps.item).send().await.unwrap().status();
            let mut get = http.get(&steps.item);
            if let Some(url) = &steps.token {
                assert_eq!(plain, 401);
                let token = http
                    .put(url)
                    .header(TOKEN_TTL_HEADER, "60")
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                get = get.header(TOKEN_HEADER, token);
                assert!(steps.curl().contains(url) && steps.curl().contains(TOKEN_HEADER));
            }
            let read = get.send().await.unwrap();
            assert_eq!(read.status(), 200, "{tokens:?}");
            let body: serde_json::Value = read.json().await.unwrap();
            assert!(body["action"].is_string(), "{body}");
            let _ = stop.send(());
            let _ = server.await;
        }
    }

    /// With a control listener of its own, the metadata listener refuses `/_sim/`
    /// (no agent's neighbour can stage an interruption through the Service), and the control
    /// listener does, acting on the metadata the agents read.
    #[tokio::test]
    async fn the_control_api_can_live_on_its_own_listener() {
        let metadata = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let control = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (m, c) = (
            metadata.local_addr().unwrap(),
            control.local_addr().unwrap(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(sih_sim_imds::serve_split(
            metadata,
            Some(control),
            sih_sim_imds::SimConfig::default(),
            async {
                let _ = stopped.await;
            },
        ));
        let http = reqwest::Client::new();
        let stage = |at: std::net::SocketAddr| {
            http.post(format!("http://{at}/_sim/spot-interruption"))
                .json(&serde_json::json!({"action": "terminate", "lead_seconds": 120}))
                .send()
        };
        // Answered as any metadata path is to a POST: not allowed.
        let refused = stage(m).await.unwrap().status();
        assert!(refused == 405 || refused == 404, "{refused}");
        let item = format!("http://{m}/latest/meta-data/spot/instance-action");
        assert_eq!(http.get(&item).send().await.unwrap().status(), 404);
        assert_eq!(stage(c).await.unwrap().status(), 200);
        assert_eq!(http.get(&item).send().await.unwrap().status(), 200);
        assert_eq!(
            http.get(format!("http://{c}/latest/meta-data/instance-id"))
                .send()
                .await
                .unwrap()
                .status(),
            404,
            "the control listener serves no metadata"
        );
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
