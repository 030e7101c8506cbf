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

pub async fn run(args: SimulateImdsArgs) -> anyhow::Result<()> {
    let config = config(&args);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // The first stdout line is the address: scripts and tests read it (port 0 is allowed).
    // A reader that has gone away (closed pipe) must not stop the simulator.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on http://{addr}").and_then(|()| out.flush());
    drop(out);
    if let Some(spot) = &config.scenario.spot {
        tracing::info!(action = %spot.action, after = ?spot.after, lead = ?spot.lead,
            "spot interruption scheduled; watch it with: curl -s http://{addr}/latest/meta-data/spot/instance-action");
    }
    tracing::info!(imdsv2 = ?config.imdsv2, instance_id = %config.identity.instance_id,
        "instance metadata simulator ready; control API under /_sim/");
    sih_sim_imds::serve(
        listener,
        config,
        spot_interrupt_handler::signals::shutdown(),
    )
    .await
    .context("simulator stopped with an error")
}
