//! `demo`: placeholder replaced below.
use crate::cli::DemoArgs;
pub async fn run(_args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
