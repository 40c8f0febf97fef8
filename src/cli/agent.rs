//! `meshedge agent`: the node agent (enrollment, Workload API, rotation), and
//! `meshedge agent fetch`: the SVID as files.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use meshedge_agent::fetch::{self, FetchConfig};
use meshedge_agent::{Agent, AgentFile};

use crate::duration::parse_duration;

/// `meshedge agent` arguments: run the agent, or a subcommand.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Write the SVID, key and bundle to files (and keep them rotated with --watch).
    Fetch(FetchArgs),
}

/// Flags of the agent itself; each overrides the same key of `--config`.
#[derive(Debug, Args)]
struct RunArgs {
    /// CA address HOST:PORT; repeat for several replicas.
    #[arg(long = "ca-addr")]
    ca_addrs: Vec<String>,
    /// Trust bundle PEM used to authenticate the CA.
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
    /// Single-use join token (first start only).
    #[arg(long)]
    join_token: Option<String>,
    /// Node name: the agent's ID is spiffe://<td>/node/<NODE>.
    #[arg(long)]
    node: Option<String>,
    /// Zone of this node.
    #[arg(long)]
    zone: Option<String>,
    /// Where the node SVID, key and bundle are kept.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Workload API socket path.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// TOML config file (keys as the flags, with underscores).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Node SVID lifetime to request (CA default when absent).
    #[arg(long, value_parser = parse_duration)]
    node_ttl: Option<Duration>,
    /// Workload SVID lifetime to request (entry or CA default when absent).
    #[arg(long, value_parser = parse_duration)]
    workload_ttl: Option<Duration>,
    /// Interval between registration entry syncs.
    #[arg(long, value_parser = parse_duration)]
    entry_refresh: Option<Duration>,
    /// Serve GET /metrics (Prometheus) and /healthz on this address.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Also run the fleet role (gateway supervision, membership, placement, DNS-SD
    /// advertising, VIPs) from this fleet config, as `meshedge fleet --config` does.
    #[arg(long)]
    fleet_config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct FetchArgs {
    /// Workload API socket path (or unix:///path).
    #[arg(long)]
    socket: String,
    /// Directory for svid.pem, svid.key and bundle.pem.
    #[arg(long)]
    write_dir: PathBuf,
    /// Keep running and rewrite the files on every rotation.
    #[arg(long)]
    watch: bool,
    /// Command run with `sh -c` after each write.
    #[arg(long)]
    on_rotate: Option<String>,
    /// How long to wait for the first SVID.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
}

/// Runs `meshedge agent` or `meshedge agent fetch`.
pub async fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(AgentCommand::Fetch(f)) => run_fetch(f).await,
        None => run_agent(args.run).await,
    }
}

async fn run_agent(a: RunArgs) -> anyhow::Result<ExitCode> {
    let mut file = match &a.config {
        Some(p) => AgentFile::load(p)?,
        None => AgentFile::default(),
    };
    if !a.ca_addrs.is_empty() {
        file.ca_addrs = a.ca_addrs;
    }
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs().max(1));
    file.ca_bundle = a.ca_bundle.or(file.ca_bundle);
    file.join_token = a.join_token.or(file.join_token);
    file.node = a.node.or(file.node);
    file.zone = a.zone.or(file.zone);
    file.state_dir = a.state_dir.or(file.state_dir);
    file.socket = a.socket.or(file.socket);
    file.node_ttl_secs = secs(a.node_ttl).or(file.node_ttl_secs);
    file.workload_ttl_secs = secs(a.workload_ttl).or(file.workload_ttl_secs);
    file.entry_refresh_secs = secs(a.entry_refresh).or(file.entry_refresh_secs);
    let cfg = file.validate()?;
    meshedge_agent::metrics::describe();
    if let Some(addr) = a.metrics {
        let render = crate::telemetry::prometheus();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics listen {addr}"))?;
        println!("agent metrics on {}", listener.local_addr()?);
        tokio::spawn(meshedge_agent::admin::serve(listener, render));
    }
    if let Some(path) = &a.fleet_config {
        // Refuse a bad fleet config before anything starts, naming the file and key.
        meshedge_agent::fleet::config::FleetConfig::load(path)?;
    }
    let (node, zone) = (cfg.node.clone(), cfg.zone.clone());
    let agent = Agent::start(cfg).await?;
    tracing::info!(node, zone, "agent ready");
    println!("agent listening on {}", agent.socket().display());
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    match a.fleet_config {
        None => agent.run(stopped(stopping)).await?,
        Some(config) => {
            let fleet = meshedge_agent::fleet::run_fleet(
                meshedge_agent::fleet::FleetArgs { config },
                stopped(stopping.clone()),
            );
            let (served, fleet) = tokio::join!(agent.run(stopped(stopping)), fleet);
            served?;
            fleet?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_fetch(f: FetchArgs) -> anyhow::Result<ExitCode> {
    let socket = meshedge_agent::client::socket_path(&f.socket)?;
    fetch::run(
        FetchConfig {
            socket,
            dir: f.write_dir,
            watch: f.watch,
            on_rotate: f.on_rotate,
            timeout: f.timeout,
        },
        |files| println!("wrote {}", files.cert.display()),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
