//! `meshedge edge --config FILE [--check]`: run an edge gateway, or validate its config.

use std::path::PathBuf;
use std::process::ExitCode;

use meshedge_edge::config;

/// `meshedge edge` arguments.
#[derive(Debug, clap::Args)]
pub struct EdgeArgs {
    /// The gateway's TOML config (see docs/edge-config.md).
    #[arg(long)]
    config: PathBuf,
    /// Validate the config (and the files it names), print the result and exit: 0 when
    /// valid, 1 otherwise.
    #[arg(long)]
    check: bool,
}

/// Runs `meshedge edge`.
pub async fn run(args: EdgeArgs) -> anyhow::Result<ExitCode> {
    if args.check {
        return Ok(check(&args.config));
    }
    eprintln!("meshedge edge: serving is not built yet (issue 5); --check works");
    Ok(ExitCode::from(2))
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(c) => {
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
