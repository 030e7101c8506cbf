//! Tracing set-up: text or JSON lines on stderr, so stdout stays for what commands print on
//! purpose (the simulator's address, summaries).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::{LogArgs, LogFormat};

pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    let mut filter = EnvFilter::try_new(&args.log_level)
        .map_err(|e| anyhow::anyhow!("--log-level {:?}: {e}", args.log_level))?;
    // kube's client logs each failed request as an ERROR of its own, which our own error or
    // warning about the same call then repeats: kept only when asked for by name.
    if !args.log_level.contains("kube") {
        filter = filter.add_directive("kube_client::client::builder=off".parse()?);
    }
    // Colour only for a person at a terminal: escape codes in files, pipes and log collectors
    // are noise (and `NO_COLOR` turns it off there too).
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}
