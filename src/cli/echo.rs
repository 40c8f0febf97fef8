//! `meshedge echo`: not built yet (issue 6).

use std::process::ExitCode;

/// `meshedge echo` arguments.
pub type EchoArgs = super::Unbuilt;

/// Runs `meshedge echo`.
pub async fn run(_args: EchoArgs) -> anyhow::Result<ExitCode> {
    super::not_built("echo", 6)
}
