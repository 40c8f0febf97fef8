//! Command-line interface: one subcommand per component (see DESIGN.md, "The binary").
//! Each subcommand lives in its own module under `cli/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
pub mod ca;
mod demo;
mod dns;
mod echo;
mod edge;
mod fleet;
mod status;

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
    /// The embedded authoritative DNS-SD server.
    Dns(dns::DnsArgs),
    /// The node agent.
    Agent(agent::AgentArgs),
    /// An edge gateway.
    Edge(edge::EdgeArgs),
    /// The agent's fleet role, standalone: gateway supervision, membership, VIPs.
    Fleet(fleet::FleetArgs),
    /// Sample mTLS workload.
    Echo(echo::EchoArgs),
    /// Fleet and cluster state as a table.
    Status(status::StatusArgs),
    /// Walk the gateway-failure runbook; non-zero exit on findings.
    Doctor(status::StatusArgs),
    /// The whole mesh on loopback.
    Demo(demo::DemoArgs),
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Ca(args) => ca::run(args).await,
        Command::Dns(args) => dns::run(args).await,
        Command::Agent(args) => agent::run(args).await,
        Command::Edge(args) => edge::run(args).await,
        Command::Fleet(args) => fleet::run(args).await,
        Command::Echo(args) => echo::run(args).await,
        Command::Status(args) => status::run(args, false).await,
        Command::Doctor(args) => status::run(args, true).await,
        Command::Demo(args) => demo::run(args).await,
    }
}
