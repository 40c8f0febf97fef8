//! `meshedge edge --config FILE [--check]`: run an edge gateway, or validate its config.

use std::path::PathBuf;
use std::process::ExitCode;

use meshedge_edge::config;
use meshedge_edge::gateway::{Gateway, Material};
use meshedge_edge::upstream::error_chain;

/// `meshedge edge` arguments.
#[derive(Debug, clap::Args)]
pub struct EdgeArgs {
    /// The gateway's TOML config (see docs/edge-config.md).
    #[arg(long)]
    config: PathBuf,
    /// Validate the config and load the certificates, keys and bundle it names, print the
    /// result and exit: 0 when valid, 1 otherwise.
    #[arg(long)]
    check: bool,
}

/// Runs `meshedge edge`.
pub async fn run(args: EdgeArgs) -> anyhow::Result<ExitCode> {
    if args.check {
        return Ok(check(&args.config).await);
    }
    let gateway = match Gateway::start(&args.config, crate::telemetry::prometheus()).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("meshedge edge: {}", error_chain(&e));
            return Ok(ExitCode::FAILURE);
        }
    };
    let addrs = gateway.addrs();
    println!("edge listening on {}", addrs.https);
    if let Some(a) = addrs.http3 {
        println!("http3 listening on {a}");
    }
    if let Some(a) = addrs.redirect {
        println!("redirect listening on {a}");
    }
    println!("admin listening on {}", addrs.admin);
    gateway.run().await?;
    Ok(ExitCode::SUCCESS)
}

/// Loads the certificates, keys and bundle (or asks the Workload API) as serving would.
async fn check_material(c: &config::Config) -> Result<(), Box<dyn std::error::Error>> {
    let workload = match &c.identity {
        config::IdentityConfig::WorkloadApi { socket } => {
            Some(meshedge_edge::identity::workload::connect(socket).await?)
        }
        config::IdentityConfig::Files { .. } => None,
    };
    Material::load(c, workload.as_ref())?;
    Ok(())
}

async fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(c) => {
            if let Err(e) = check_material(&c).await {
                eprintln!("{}: {}", path.display(), error_chain(&*e));
                return ExitCode::FAILURE;
            }
            println!(
                "{}: ok ({} clusters, {} routes)",
                path.display(),
                c.clusters.len(),
                c.routes.routes().len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
