//! spot-interrupt-handler-sim: the rehearsal tools. `simulate imds|gce|azure` and
//! `simulate cluster` serve the simulators; `demo` plays a whole reclamation with both and the agent in one
//! process; `view` shows a cluster's spot nodes live in a browser. Kept out of the agent's binary so that every node carries only the product.
#![forbid(unsafe_code)]

mod cli;
mod demo;
mod demo_capacity;
mod demo_queue;
mod simulate_clouds;
mod simulate_cluster;
mod simulate_imds;
mod view;

use clap::Parser;

use cli::{SimCli, SimCommand, Simulate};

fn main() -> anyhow::Result<()> {
    let mut cli = SimCli::parse();
    if let SimCommand::Demo(args) = &cli.command
        && cli.log.log_level == "info"
    {
        // The demo's timeline is the output; the agent's own lines would drown it (the
        // capacity story's baseline deletes pods at the deadline on purpose: its timeline
        // says so, its agents' warnings need not).
        cli.log.log_level = if args.scenario == cli::DemoScenario::Capacity {
            "error".into()
        } else {
            "warn".into()
        };
    }
    spot_interrupt_handler::logging::init(&cli.log)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            match cli.command {
                // Two stories side by side: a telling of its own on the demo's parts.
                // The story fed through SQS, on a stand-in for the AWS calls (it refuses the
                // scenarios it cannot tell).
                SimCommand::Demo(args) if args.mode == cli::DemoMode::Queue => {
                    demo_queue::run(args).await
                }
                SimCommand::Demo(args) if args.scenario == cli::DemoScenario::Capacity => {
                    demo_capacity::run(args).await
                }
                SimCommand::Demo(args) => demo::run(args).await,
                SimCommand::View(args) => view::run(args).await,
                SimCommand::Simulate(Simulate::Imds(args)) => simulate_imds::run(*args).await,
                SimCommand::Simulate(Simulate::Cluster(args)) => simulate_cluster::run(*args).await,
                SimCommand::Simulate(Simulate::Gce(args)) => simulate_clouds::gce(*args).await,
                SimCommand::Simulate(Simulate::Azure(args)) => simulate_clouds::azure(*args).await,
            }
        })
}
