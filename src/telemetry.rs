//! Logging (tracing, `RUST_LOG`) and the Prometheus recorder shared by every subcommand.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Logs to stderr, `info` unless `RUST_LOG` says otherwise.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Bucket bounds of every histogram (all are durations in seconds): Envoy's default
/// histogram buckets (0.5 ms .. 1 h). Real histograms, unlike summaries, add up across
/// gateways in PromQL (`histogram_quantile(0.99, sum by (le) (rate(..._bucket[1m])))`).
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0, 1800.0, 3600.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often recorded histogram samples are folded into their summaries.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder once and returns a renderer. A thread folds
/// histogram samples into their summaries every [`UPKEEP_EVERY`]; without it samples pile up
/// between scrapes (memory that grows with traffic when nobody scrapes).
pub fn prometheus() -> Arc<dyn Fn() -> String + Send + Sync> {
    let handle = HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS_SECONDS)
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                })
                .expect("spawning the metrics upkeep thread");
            handle
        })
        .clone();
    Arc::new(move || handle.render())
}
