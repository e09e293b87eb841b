//! TODO
//! Wiring: starts the task set and owns the shutdown order. (Temporary stub until integrated.)

use crate::config::ServeConfig;

/// Runs the control plane until shutdown. Not wired yet.
pub async fn run(_: ServeConfig) -> anyhow::Result<()> {
    anyhow::bail!("not wired yet")
}
