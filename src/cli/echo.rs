//! `meshedge echo`: the sample mTLS workload. Gets its SVID from the agent's Workload API and
//! answers with its zone and the caller's SPIFFE ID.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use meshedge_agent::echo::{EchoConfig, EchoServer};
use meshedge_agent::source::X509Source;
use meshedge_ca::tls::AllowedIds;
use meshedge_ca::SpiffeId;

use crate::duration::parse_duration;

/// `meshedge echo` arguments.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Workload API socket path (or unix:///path).
    #[arg(long)]
    socket: String,
    /// Address to serve HTTPS on (port 0 picks one; the line `echo listening on ADDR` says which).
    #[arg(long)]
    listen: SocketAddr,
    /// Zone reported in answers.
    #[arg(long)]
    zone: String,
    /// Service name reported in answers.
    #[arg(long)]
    service: String,
    /// Instance name reported in answers.
    #[arg(long)]
    instance: String,
    /// Fraction of requests answered 503 (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Delay added to every answer but health checks.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    latency: Duration,
    /// Callers allowed: a SPIFFE ID, or a prefix ending in `/*`; repeat for several.
    /// Default: the whole trust domain of the echo's own SVID.
    #[arg(long = "allow")]
    allow: Vec<String>,
    /// How long to wait for the first SVID.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
}

/// Runs `meshedge echo`.
pub async fn run(args: EchoArgs) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.fail_rate) {
        bail!("--fail-rate {}: must lie in [0, 1]", args.fail_rate);
    }
    let socket = meshedge_agent::client::socket_path(&args.socket)?;
    let source = X509Source::from_workload_api(socket, args.timeout).await?;
    let own = source
        .current()
        .default_svid()
        .map(|s| s.spiffe_id.clone())
        .context("workload api returned no SVID")?;
    let allowed = allowed_ids(&args.allow, &own)?;
    let server = EchoServer::bind(
        args.listen,
        &source,
        EchoConfig {
            service: args.service,
            instance: args.instance,
            zone: args.zone,
            fail_rate: args.fail_rate,
            latency: args.latency,
            allowed,
        },
    )
    .await?;
    let addr = server.local_addr()?;
    tracing::info!(id = %own, %addr, "echo ready");
    println!("echo listening on {addr}");
    tokio::select! {
        _ = server.run() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn allowed_ids(allow: &[String], own: &SpiffeId) -> anyhow::Result<AllowedIds> {
    if allow.is_empty() {
        return Ok(meshedge_agent::tls::trust_domain(&own.trust_domain()));
    }
    let (prefixes, exact): (Vec<_>, Vec<_>) = allow.iter().partition(|a| a.ends_with("/*"));
    if !prefixes.is_empty() && !exact.is_empty() {
        bail!("--allow: give either exact IDs or prefixes (ending in /*), not both");
    }
    if !prefixes.is_empty() {
        return Ok(AllowedIds::Prefixes(
            prefixes
                .iter()
                .map(|p| p.trim_end_matches("/*").to_owned())
                .collect(),
        ));
    }
    Ok(AllowedIds::Exact(
        exact
            .iter()
            .map(|id| SpiffeId::parse(id).with_context(|| format!("--allow {id}")))
            .collect::<anyhow::Result<_>>()?,
    ))
}
