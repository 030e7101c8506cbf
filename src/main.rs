//! spot-interrupt-handler: turns EC2 Spot interruption notices into a calm, deadline-aware
//! evacuation of the Kubernetes node. This file only parses the command line and dispatches;
//! each subcommand lives in `commands/`.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod logging;
mod signals;

use clap::Parser;

use cli::{Cli, Command, Simulate};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(&cli.log)?;
    match cli.command {
        Command::Drain(args) => commands::drain::run(args).await,
        Command::Undrain(args) => commands::drain::undrain(args).await,
        Command::Simulate(Simulate::Imds(args)) => commands::simulate_imds::run(args).await,
        Command::Simulate(Simulate::Cluster(args)) => commands::simulate_cluster::run(args).await,
    }
}
