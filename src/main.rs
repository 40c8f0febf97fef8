//! `meshedge`: the one binary of the mesh edge (CA, DNS-SD, agent, gateway, tools).

mod cli;
mod duration;
mod telemetry;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    telemetry::init_tracing();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // One worker per core the process may run on by default; MESHEDGE_WORKER_THREADS sets
    // it (like Envoy's --concurrency), e.g. to compare with single-worker peers.
    if let Some(n) = std::env::var("MESHEDGE_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        builder.worker_threads(n);
    }
    let runtime = builder.enable_all().build().expect("tokio runtime starts");
    match runtime.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("meshedge: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
