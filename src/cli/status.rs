//! `meshedge status` and `meshedge doctor`: not built yet (issue 9).

use std::process::ExitCode;

/// `meshedge status|doctor` arguments.
pub type StatusArgs = super::Unbuilt;

/// Runs `meshedge status` (or `doctor` when `doctor` is true).
pub async fn run(_args: StatusArgs, doctor: bool) -> anyhow::Result<ExitCode> {
    super::not_built(if doctor { "doctor" } else { "status" }, 9)
}
