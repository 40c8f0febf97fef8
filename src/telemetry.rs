//! Logging (tracing, `RUST_LOG`) and the Prometheus recorder shared by every subcommand.

mod histograms;

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use histograms::BucketingRecorder;

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

static RECORDER: OnceLock<Arc<BucketingRecorder<PrometheusRecorder>>> = OnceLock::new();

/// Installs the process-wide recorder once and returns a renderer of everything recorded:
/// counters and gauges kept by the Prometheus exporter, histograms as bucket counters
/// ([`histograms`]).
pub fn prometheus() -> Arc<dyn Fn() -> String + Send + Sync> {
    let recorder = RECORDER
        .get_or_init(|| {
            let recorder = Arc::new(BucketingRecorder::new(
                PrometheusBuilder::new().build_recorder(),
                LATENCY_BUCKETS_SECONDS,
            ));
            metrics::set_global_recorder(recorder.clone())
                .expect("no other metrics recorder is installed");
            recorder
        })
        .clone();
    let exporter = recorder.inner().handle();
    Arc::new(move || {
        let mut text = exporter.render();
        recorder.render(&mut text);
        text
    })
}
