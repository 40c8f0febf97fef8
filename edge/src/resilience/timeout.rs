//! Latency-aware per-try timeouts, so a hung zone costs a request a few multiples of the
//! normal latency instead of the whole route timeout.
//!
//! [`LatencyWindow`] keeps recent successful try latencies in a log-scaled histogram
//! (buckets 12.5% apart from 100us to about a minute) over two rotating windows of
//! `window` each, so quantiles follow the last 1-2 windows. [`PerTryTimeout`] turns the
//! p99 into a timeout: `max(p99 x p99_multiplier, floor)`, capped by `ceiling` and by the
//! time the whole request has left; with too few samples it uses `ceiling`.

use std::cell::Cell;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::config::PerTryTimeoutConfig;

const BUCKETS: usize = 128;
const FIRST: f64 = 100e-6;
const GROWTH: f64 = 1.125;
/// Samples needed before quantiles are trusted.
pub const MIN_SAMPLES: u64 = 20;

fn bucket(latency: Duration) -> usize {
    let s = latency.as_secs_f64();
    if s <= FIRST {
        return 0;
    }
    (((s / FIRST).ln() / GROWTH.ln()).ceil() as usize).min(BUCKETS - 1)
}

fn upper_bound(bucket: usize) -> Duration {
    Duration::from_secs_f64(FIRST * GROWTH.powi(bucket as i32))
}

/// Recent latencies of a cluster (or an endpoint).
#[derive(Debug, Clone)]
pub struct LatencyWindow {
    window: Duration,
    current: [u64; BUCKETS],
    previous: [u64; BUCKETS],
    started: Option<Instant>,
    /// Samples in `current` and `previous`.
    total: u64,
    /// Bumped by every sample and rotation.
    version: u64,
    /// The last quantiles asked for (the request path asks for the same two on every
    /// request): reused until [`REFRESH_EVERY`] samples later.
    cached: [Cell<Option<CachedQuantile>>; 2],
}

/// A quantile answer and the window version it was computed at.
#[derive(Debug, Clone, Copy)]
struct CachedQuantile {
    q: f64,
    version: u64,
    value: Option<Duration>,
}

/// How many samples a cached quantile stays valid for.
const REFRESH_EVERY: u64 = 32;

/// Quantiles for `/clusters`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples in the last 1-2 windows.
    pub samples: u64,
    /// p50, milliseconds.
    pub p50_ms: Option<f64>,
    /// p90, milliseconds.
    pub p90_ms: Option<f64>,
    /// p99, milliseconds.
    pub p99_ms: Option<f64>,
}

// === impl LatencyWindow ===

impl LatencyWindow {
    /// An empty window set rotating every `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            current: [0; BUCKETS],
            previous: [0; BUCKETS],
            started: None,
            total: 0,
            version: 0,
            cached: Default::default(),
        }
    }

    fn rotate(&mut self, now: Instant) {
        let started = *self.started.get_or_insert(now);
        let elapsed = now.saturating_duration_since(started);
        if elapsed < self.window {
            return;
        }
        if elapsed >= self.window * 2 {
            self.previous = [0; BUCKETS];
        } else {
            self.previous = self.current;
        }
        self.current = [0; BUCKETS];
        self.total = self.previous.iter().sum();
        self.started = Some(now);
        self.version += REFRESH_EVERY;
    }

    /// Adds one latency observed at `now`.
    pub fn record(&mut self, now: Instant, latency: Duration) {
        self.rotate(now);
        self.current[bucket(latency)] += 1;
        self.total += 1;
        self.version += 1;
    }

    /// Samples in the last 1-2 windows.
    pub fn samples(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..=1) as a bucket upper bound, or `None` with fewer than
    /// [`MIN_SAMPLES`] samples. Call [`expire`](Self::expire) first to drop old windows.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let fresh = |c: &CachedQuantile| c.q == q && self.version - c.version < REFRESH_EVERY;
        for slot in &self.cached {
            if let Some(c) = slot.get().filter(fresh) {
                return c.value;
            }
        }
        let value = self.compute_quantile(q);
        if value.is_some() {
            let slot = usize::from(self.cached[0].get().is_some_and(|c| c.q != q));
            self.cached[slot].set(Some(CachedQuantile {
                q,
                version: self.version,
                value,
            }));
        }
        value
    }

    fn compute_quantile(&self, q: f64) -> Option<Duration> {
        let total = self.samples();
        if total < MIN_SAMPLES {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for b in 0..BUCKETS {
            seen += self.current[b] + self.previous[b];
            if seen >= rank {
                return Some(upper_bound(b));
            }
        }
        Some(upper_bound(BUCKETS - 1))
    }

    /// Drops windows that are over at `now` (no sample needed).
    pub fn expire(&mut self, now: Instant) {
        self.rotate(now);
    }

    /// p50/p90/p99.
    pub fn summary(&self) -> LatencySummary {
        let ms = |q| self.quantile(q).map(|d| d.as_secs_f64() * 1000.0);
        LatencySummary {
            samples: self.samples(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
        }
    }
}

/// Computes per-try timeouts.
#[derive(Debug, Clone)]
pub struct PerTryTimeout {
    config: PerTryTimeoutConfig,
}

impl PerTryTimeout {
    /// For `config`.
    pub fn new(config: PerTryTimeoutConfig) -> Self {
        Self { config }
    }

    /// The timeout for the next try, given the recent p99 and the time the whole request
    /// has left (`None`: no request deadline).
    pub fn timeout(&self, p99: Option<Duration>, remaining: Option<Duration>) -> Duration {
        let c = &self.config;
        let adaptive = match p99 {
            Some(p99) if c.adaptive => p99.mul_f64(c.p99_multiplier).max(c.floor),
            _ => c.ceiling,
        };
        let t = adaptive.min(c.ceiling);
        remaining.map_or(t, |r| t.min(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn cached_quantiles_follow_new_samples_within_the_refresh_bound() {
        let t0 = Instant::now();
        let mut w = LatencyWindow::new(Duration::from_secs(10));
        for _ in 0..100 {
            w.record(t0, ms(1));
        }
        let low = w.quantile(0.99).unwrap();
        assert!(low < ms(2), "{low:?}");
        for _ in 0..REFRESH_EVERY {
            w.record(t0, ms(400));
        }
        let high = w.quantile(0.99).unwrap();
        assert!(
            high >= ms(400),
            "{high:?} after {REFRESH_EVERY} slow samples"
        );
        assert_eq!(w.samples(), 100 + REFRESH_EVERY);
    }

    #[test]
    fn quantiles_are_within_one_bucket() {
        let t0 = Instant::now();
        let mut w = LatencyWindow::new(Duration::from_secs(10));
        assert_eq!(w.quantile(0.99), None);
        // 98 x 5ms, 2 x 400ms: p50 = 5ms, p99 = 400ms (each within +12.5%)
        for i in 0..100u32 {
            w.record(t0, if i % 50 == 0 { ms(400) } else { ms(5) });
        }
        for (q, want) in [
            (0.5, 5.0),
            (0.9, 5.0),
            (0.98, 5.0),
            (0.99, 400.0),
            (1.0, 400.0),
        ] {
            let got = w.quantile(q).expect("enough samples").as_secs_f64() * 1000.0;
            assert!(
                got >= want && got <= want * GROWTH,
                "q{q}: {got}ms, want {want}ms"
            );
        }
        assert_eq!(w.summary().samples, 100);
    }

    #[test]
    fn old_windows_age_out() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let mut w = LatencyWindow::new(window);
        for _ in 0..50 {
            w.record(t0, ms(300));
        }
        // (seconds after t0, samples still counted)
        for (at, want) in [(5, 50), (12, 50), (25, 0)] {
            w.expire(t0 + Duration::from_secs(at));
            assert_eq!(w.samples(), want, "at {at}s");
        }
        w.record(t0 + Duration::from_secs(31), ms(1));
        assert_eq!(w.samples(), 1);
    }

    #[test]
    fn per_try_timeout_follows_p99_between_floor_and_ceiling() {
        let t = PerTryTimeout::new(PerTryTimeoutConfig::default());
        let fixed = PerTryTimeout::new(PerTryTimeoutConfig {
            adaptive: false,
            ..PerTryTimeoutConfig::default()
        });
        // (p99 ms, remaining ms, expected ms)
        let cases = [
            (Some(20), None, 100),      // floor
            (Some(80), None, 160),      // 2 x p99
            (Some(5000), None, 2000),   // ceiling
            (None, None, 2000),         // unknown latency: ceiling
            (Some(80), Some(120), 120), // the request's own deadline
            (Some(80), Some(0), 0),
        ];
        for (p99, remaining, want) in cases {
            let got = t.timeout(p99.map(ms), remaining.map(ms));
            assert_eq!(got, ms(want), "p99 {p99:?}, remaining {remaining:?}");
        }
        assert_eq!(fixed.timeout(Some(ms(20)), None), ms(2000));
    }
}
