//! Histograms kept as one counter per bucket, in front of the Prometheus exporter.
//!
//! `metrics-exporter-prometheus` stores every histogram sample (value and timestamp, 24
//! bytes) until an upkeep folds them into buckets: at 70,000 requests/s that is megabytes of
//! samples between two upkeeps, a clock read per sample and a fold that stalls the core it
//! runs on. Every histogram here has fixed buckets, so [`BucketingRecorder`] counts each
//! value into its bucket at once (a binary search and two atomic adds, no memory that grows
//! with traffic), as the Prometheus client libraries do, and renders the histograms itself;
//! counters and gauges go to the wrapped recorder unchanged.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// One labelled histogram: a counter per bucket (not cumulative) and the sum of the values.
#[derive(Debug)]
pub struct BucketHistogram {
    /// Upper bounds (inclusive), ascending.
    bounds: &'static [f64],
    /// `counts[i]` counts values in `(bounds[i-1], bounds[i]]`; the last one the values above
    /// every bound (the `+Inf` bucket).
    counts: Box<[AtomicU64]>,
    /// Sum of the recorded values, as `f64` bits.
    sum_bits: AtomicU64,
}

impl BucketHistogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    fn sum(&self) -> f64 {
        f64::from_bits(self.sum_bits.load(Relaxed))
    }
}

impl HistogramFn for BucketHistogram {
    fn record(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.counts[bucket].fetch_add(1, Relaxed);
        let _ = self.sum_bits.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + value).to_bits())
        });
    }
}

/// A recorder that keeps histograms as bucket counters and hands counters and gauges to
/// `inner`.
#[derive(Debug)]
pub struct BucketingRecorder<R> {
    inner: R,
    bounds: &'static [f64],
    histograms: RwLock<HashMap<Key, Arc<BucketHistogram>>>,
    descriptions: RwLock<HashMap<KeyName, SharedString>>,
}

impl<R> BucketingRecorder<R> {
    /// Wraps `inner`; every histogram gets the upper bounds `bounds` (ascending).
    pub fn new(inner: R, bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds ascend");
        Self {
            inner,
            bounds,
            histograms: RwLock::default(),
            descriptions: RwLock::default(),
        }
    }

    /// The wrapped recorder.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Appends every histogram in the Prometheus text format (HELP, TYPE, cumulative
    /// `_bucket` lines with `le`, `_sum`, `_count`), ordered by name and labels.
    pub fn render(&self, out: &mut String) {
        let histograms = self
            .histograms
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let descriptions = self
            .descriptions
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut sorted: Vec<_> = histograms.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut family: Option<&str> = None;
        for (key, histogram) in sorted {
            let name = key.name();
            if family != Some(name) {
                family = Some(name);
                if let Some(help) = descriptions.get(name) {
                    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
                }
                let _ = writeln!(out, "# TYPE {name} histogram");
            }
            let labels: String = key
                .labels()
                .map(|l| format!("{}=\"{}\",", l.key(), escape_label_value(l.value())))
                .collect();
            let mut cumulative = 0u64;
            for (bound, count) in histogram.bounds.iter().zip(histogram.counts.iter()) {
                cumulative += count.load(Relaxed);
                let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
            }
            cumulative += histogram.counts[histogram.bounds.len()].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {cumulative}");
            let labels = labels.trim_end_matches(',');
            let braced = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            };
            let _ = writeln!(out, "{name}_sum{braced} {}", histogram.sum());
            let _ = writeln!(out, "{name}_count{braced} {cumulative}");
        }
    }
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape_label_value(value: &str) -> String {
    escape_help(value).replace('"', "\\\"")
}

/// A HELP text as the text format wants it: backslash and newline escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

impl<R: Recorder> Recorder for BucketingRecorder<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.descriptions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        let found = self
            .histograms
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned();
        let histogram = found.unwrap_or_else(|| {
            self.histograms
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key.clone())
                .or_insert_with(|| Arc::new(BucketHistogram::new(self.bounds)))
                .clone()
        });
        Histogram::from_arc(histogram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::NoopRecorder;

    const BOUNDS: &[f64] = &[0.001, 0.01, 0.1];

    fn rendered(recorder: &BucketingRecorder<NoopRecorder>) -> String {
        let mut out = String::new();
        recorder.render(&mut out);
        out
    }

    #[test]
    fn values_land_in_the_bucket_whose_bound_they_do_not_exceed() {
        let recorder = BucketingRecorder::new(NoopRecorder, BOUNDS);
        metrics::with_local_recorder(&recorder, || {
            metrics::describe_histogram!("t_seconds", "Test \"latency\"\\ of\nthings.");
            let h = metrics::histogram!("t_seconds", "route" => "a\"b");
            for v in [0.0005, 0.001, 0.002, 0.1, 5.0, f64::NAN] {
                h.record(v);
            }
        });
        assert_eq!(
            rendered(&recorder),
            "# HELP t_seconds Test \"latency\"\\\\ of\\nthings.\n\
             # TYPE t_seconds histogram\n\
             t_seconds_bucket{route=\"a\\\"b\",le=\"0.001\"} 2\n\
             t_seconds_bucket{route=\"a\\\"b\",le=\"0.01\"} 3\n\
             t_seconds_bucket{route=\"a\\\"b\",le=\"0.1\"} 4\n\
             t_seconds_bucket{route=\"a\\\"b\",le=\"+Inf\"} 5\n\
             t_seconds_sum{route=\"a\\\"b\"} 5.1035\n\
             t_seconds_count{route=\"a\\\"b\"} 5\n"
        );
    }

    #[test]
    fn one_family_header_per_name_and_handles_share_their_counts() {
        let recorder = BucketingRecorder::new(NoopRecorder, BOUNDS);
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("u_seconds", "k" => "2").record(0.05);
            metrics::histogram!("u_seconds", "k" => "1").record(0.05);
            metrics::histogram!("u_seconds", "k" => "1").record(0.5);
            metrics::histogram!("plain_seconds").record(0.0);
        });
        let text = rendered(&recorder);
        assert_eq!(text.matches("# TYPE u_seconds histogram").count(), 1);
        assert!(text.contains("u_seconds_count{k=\"1\"} 2\n"), "{text}");
        assert!(text.contains("u_seconds_count{k=\"2\"} 1\n"), "{text}");
        assert!(
            text.contains("plain_seconds_bucket{le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("plain_seconds_sum 0\nplain_seconds_count 1\n"),
            "{text}"
        );
        let first = text.find("u_seconds_count{k=\"1\"}").expect("k=1 rendered");
        let second = text.find("u_seconds_count{k=\"2\"}").expect("k=2 rendered");
        assert!(first < second, "ordered by labels: {text}");
    }
}
