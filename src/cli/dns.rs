//! `meshedge dns`: not built yet (issue 4).

use std::process::ExitCode;

/// `meshedge dns` arguments.
pub type DnsArgs = super::Unbuilt;

/// Runs `meshedge dns`.
pub async fn run(_args: DnsArgs) -> anyhow::Result<ExitCode> {
    super::not_built("dns", 4)
}
