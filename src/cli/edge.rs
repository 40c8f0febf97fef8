//! `meshedge edge`: not built yet (issue 5).

use std::process::ExitCode;

/// `meshedge edge` arguments.
pub type EdgeArgs = super::Unbuilt;

/// Runs `meshedge edge`.
pub async fn run(_args: EdgeArgs) -> anyhow::Result<ExitCode> {
    super::not_built("edge", 5)
}
