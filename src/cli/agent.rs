//! `meshedge agent`: not built yet (issue 6).

use std::process::ExitCode;

/// `meshedge agent` arguments.
pub type AgentArgs = super::Unbuilt;

/// Runs `meshedge agent`.
pub async fn run(_args: AgentArgs) -> anyhow::Result<ExitCode> {
    super::not_built("agent", 6)
}
