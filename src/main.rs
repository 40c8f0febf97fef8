//! `meshedge`: the one binary of the mesh edge (CA, DNS-SD, agent, gateway, tools).

mod cli;
mod duration;
mod telemetry;

use clap::Parser;

/// mimalloc instead of glibc malloc: a request allocates and frees a few dozen small
/// objects, and glibc's bins (`_int_malloc`, `unlink_chunk`, `malloc_consolidate`) took
/// about 9% of the gateway's CPU per request in `perf` (BENCHMARKS.md). Built without
/// transparent huge pages (`no_thp`): with them, peak RSS grew from 22 to 32 MB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    telemetry::init_tracing();
    let runtime = runtime_builder(worker_threads())
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

/// Worker threads asked for by `MESHEDGE_WORKER_THREADS` (like Envoy's `--concurrency`),
/// e.g. to compare with single-worker peers; `None`: one per core the process may run on.
fn worker_threads() -> Option<usize> {
    std::env::var("MESHEDGE_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
}

/// One worker runs as an event loop on the main thread (nginx's worker model: no
/// cross-thread wake-ups, no work-stealing bookkeeping); more run on tokio's work-stealing
/// scheduler.
fn runtime_builder(workers: Option<usize>) -> tokio::runtime::Builder {
    match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    }
}
