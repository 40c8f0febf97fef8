//! `meshedge fleet --config FILE`: the agent's fleet role run standalone (membership,
//! gateway placement and supervision, DNS-SD advertising, virtual IPs). `meshedge agent
//! --fleet-config FILE` runs the same role inside the node agent.

use std::process::ExitCode;

pub use meshedge_agent::fleet::FleetArgs;

/// Runs the fleet role until SIGINT/SIGTERM.
pub async fn run(args: FleetArgs) -> anyhow::Result<ExitCode> {
    meshedge_agent::fleet::run_fleet(args, crate::cli::ca::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
