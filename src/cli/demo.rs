//! `meshedge demo`: not built yet (issue 9).

use std::process::ExitCode;

/// `meshedge demo` arguments.
pub type DemoArgs = super::Unbuilt;

/// Runs `meshedge demo`.
pub async fn run(_args: DemoArgs) -> anyhow::Result<ExitCode> {
    super::not_built("demo", 9)
}
