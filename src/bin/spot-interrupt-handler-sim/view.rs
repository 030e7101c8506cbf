//! `view`: serves the live page of a cluster until SIGTERM or Ctrl-C.

use std::io::Write;

use anyhow::Context;

use crate::cli::ViewArgs;

pub async fn run(args: ViewArgs) -> anyhow::Result<()> {
    let client = sih_node::client(args.kubeconfig.as_deref()).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // The first stdout line is the URL: scripts and tests read it.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "view on http://{addr}/").and_then(|()| out.flush());
    drop(out);
    sih_view::serve(
        client,
        listener,
        spot_interrupt_handler::signals::shutdown(),
    )
    .await
    .context("the view stopped with an error")
}
