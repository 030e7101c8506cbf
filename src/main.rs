//! spot-interrupt-handler: turns EC2 Spot interruption notices into a calm, deadline-aware
//! evacuation of the Kubernetes node. This file only parses the command line and dispatches;
//! each subcommand lives in `commands/`.
#![forbid(unsafe_code)]

mod agent;
mod cli;
mod commands;
mod controller;
mod logging;
mod nth;
mod responder;
mod signals;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command, Simulate};

fn main() -> anyhow::Result<()> {
    let cli = parse()?;
    // The agent polls and drains one node: one thread does that with room to spare, and costs
    // less CPU per poll and less memory than a thread per core. Everything else (simulators,
    // the demo) gets the multi-threaded runtime.
    let runtime = match cli.command {
        Some(Command::Imds(_)) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(dispatch(cli))
}

/// The command line, or NTH's environment translated into one.
fn parse() -> anyhow::Result<Cli> {
    let mut cli = Cli::parse();
    let mut notes = Vec::new();
    if cli.command.is_none() {
        // aws-node-termination-handler's image is run without arguments, configured by its
        // environment: translate that into our command line.
        let env: std::collections::HashMap<String, String> = std::env::vars().collect();
        if !nth::configured(&env) {
            Cli::command().print_help()?;
            std::process::exit(2);
        }
        let translated = nth::translate(&env)?;
        notes = translated.notes;
        cli = Cli::try_parse_from(translated.args)?;
    }
    if matches!(cli.command, Some(Command::Demo(_))) && cli.log.log_level == "info" {
        // The demo's timeline is the output; the agent's own lines would drown it.
        cli.log.log_level = "warn".into();
    }
    logging::init(&cli.log)?;
    for note in notes {
        tracing::warn!("NTH compatibility: {note}");
    }
    Ok(cli)
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let Some(command) = cli.command else {
        anyhow::bail!("no subcommand; see --help");
    };
    match command {
        Command::Imds(args) => commands::imds::run(*args).await,
        Command::Queue(args) => commands::queue::run(*args).await,
        Command::Demo(args) => commands::demo::run(args).await,
        Command::Drain(args) => commands::drain::run(args).await,
        Command::Undrain(args) => commands::drain::undrain(args).await,
        Command::Simulate(Simulate::Imds(args)) => commands::simulate_imds::run(args).await,
        Command::Simulate(Simulate::Cluster(args)) => commands::simulate_cluster::run(args).await,
    }
}
