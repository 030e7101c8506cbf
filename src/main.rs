//! spot-interrupt-handler, the binary every spot node runs: the agent (`imds`), the
//! controller (`queue`, only with the `queue` feature: the agent image's build leaves it and
//! its AWS SDK out), `drain`/`undrain`, and aws-node-termination-handler's environment as
//! a drop-in. This file only parses the command line and dispatches; the product is the
//! library (`src/lib.rs`), and nothing of the simulators is linked here.
#![forbid(unsafe_code)]

use clap::{CommandFactory, Parser};

use spot_interrupt_handler::cli::{Cli, Command};
use spot_interrupt_handler::{commands, logging, nth};

/// Errors are one line that says what failed and why, the causes joined, never a backtrace
/// (RUST_BACKTRACE is for panics, and an error is not one): plain text until the logs are set
/// up, then in the log's own format (JSON under `--log-format json`).
fn main() -> std::process::ExitCode {
    tls();
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("Error: {}", one_line(&e));
            return std::process::ExitCode::FAILURE;
        }
    };
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %one_line(&e), "stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One TLS crypto provider for every client in the process (kube's, the webhooks'). The agent's
/// build links ring and installs it here: reqwest, built without a provider of its own, takes
/// the installed one. The full build links only aws-lc-rs (the AWS SDK's), which every client
/// finds by itself.
fn tls() {
    #[cfg(feature = "agent")]
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(not(any(feature = "agent", feature = "queue")))]
compile_error!(
    "no TLS crypto provider: build the agent with `--no-default-features --features agent` (ring) \
     or the full product with `--features queue` (aws-lc-rs, the AWS SDK's)"
);

/// The error and its causes joined with `: `, each said once: many errors (kube's, hyper's)
/// already include their cause in their own text, which `{:#}` would repeat.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // The agent polls and drains one node: one thread does that with room to spare, and costs
    // less CPU per poll and less memory than a thread per core. The controller and `drain`
    // get the multi-threaded runtime.
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
        #[cfg(feature = "queue")]
        Command::Queue(args) => commands::queue::run(*args).await,
        // The agent image's binary: the command line is the same (so NTH's environment and
        // every flag still parse), but queue mode's AWS SDK is not in it.
        #[cfg(not(feature = "queue"))]
        Command::Queue(_) => anyhow::bail!(
            "queue mode is not in this build: this is the agent's binary (imds, drain, undrain), \
             built without the AWS SDK; run the controller from the full image, \
             spot-interrupt-handler (docs/install.md, \"The images\")"
        ),
        Command::Drain(args) => commands::drain::run(args).await,
        Command::Undrain(args) => commands::drain::undrain(args).await,
    }
}
