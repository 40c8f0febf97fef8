//! Command-line interface: one subcommand per component (see DESIGN.md, "The binary").

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ca;

/// meshedge: a sidecar-free service-mesh edge.
#[derive(Debug, Parser)]
#[command(name = "meshedge", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The embedded certificate authority.
    Ca(ca::CaArgs),
    /// The embedded authoritative DNS-SD server (not built yet).
    Dns(Unbuilt),
    /// The node agent (not built yet).
    Agent(Unbuilt),
    /// An edge gateway (not built yet).
    Edge(Unbuilt),
    /// Sample mTLS workload (not built yet).
    Echo(Unbuilt),
    /// Fleet and cluster state (not built yet).
    Status(Unbuilt),
    /// Runbook diagnosis (not built yet).
    Doctor(Unbuilt),
    /// The whole mesh on loopback (not built yet).
    Demo(Unbuilt),
}

/// Arguments of a subcommand that does not exist yet: accepted, then refused.
#[derive(Debug, clap::Args)]
struct Unbuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let unbuilt = match cli.command {
        Command::Ca(args) => return ca::run(args).await,
        Command::Dns(_) => ("dns", 4),
        Command::Agent(_) => ("agent", 6),
        Command::Edge(_) => ("edge", 5),
        Command::Echo(_) => ("echo", 6),
        Command::Status(_) => ("status", 9),
        Command::Doctor(_) => ("doctor", 9),
        Command::Demo(_) => ("demo", 9),
    };
    eprintln!(
        "meshedge {}: not built yet (issue {}); see README.md, \"What works\"",
        unbuilt.0, unbuilt.1
    );
    Ok(ExitCode::from(2))
}
