//! `meshedge`: the one binary of the mesh edge (CA, DNS-SD, agent, gateway, tools).

mod cli;
mod duration;
mod telemetry;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    telemetry::init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    match runtime.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("meshedge: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
