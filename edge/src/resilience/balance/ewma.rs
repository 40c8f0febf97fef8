//! Peak-EWMA latency estimate, as in Finagle's and Linkerd's peak-EWMA balancers: a sample
//! above the estimate replaces it at once (a slow endpoint is penalized immediately), a
//! lower one is blended in with weight `1 - exp(-elapsed / decay)`, and while no samples
//! arrive the estimate decays towards zero with the same time constant, so an endpoint
//! penalized once is eventually tried again.

use std::time::Duration;

use tokio::time::Instant;

/// The latency estimate of one endpoint, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct PeakEwma {
    cost: f64,
    at: Option<Instant>,
}

impl PeakEwma {
    /// An estimate that starts at `initial` (the configured default RTT) until the first
    /// sample replaces it.
    pub fn new(initial: Duration) -> Self {
        Self {
            cost: initial.as_secs_f64(),
            at: None,
        }
    }

    fn weight(&self, now: Instant, decay: Duration) -> f64 {
        match self.at {
            Some(at) => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                (-elapsed / decay.as_secs_f64()).exp()
            }
            None => 1.0,
        }
    }

    /// Whether any sample was folded in yet.
    pub fn is_sampled(&self) -> bool {
        self.at.is_some()
    }

    /// Folds in one observed latency.
    pub fn observe(&mut self, now: Instant, rtt: Duration, decay: Duration) {
        let rtt = rtt.as_secs_f64();
        if self.at.is_none() || rtt > self.cost {
            self.cost = rtt;
        } else {
            let w = self.weight(now, decay);
            self.cost = self.cost * w + rtt * (1.0 - w);
        }
        self.at = Some(now);
    }

    /// The estimate at `now`, decayed since the last sample.
    pub fn estimate(&self, now: Instant, decay: Duration) -> f64 {
        self.cost * self.weight(now, decay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECAY: Duration = Duration::from_secs(10);

    #[test]
    fn peak_then_decay() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // (offset from t0 in ms, observed rtt in ms or None for a read, expected estimate ms)
        let cases: &[(u64, Option<u64>, f64)] = &[
            (0, None, 30.0),
            (0, Some(10), 10.0),      // the first sample replaces the default
            (100, Some(200), 200.0),  // a peak replaces at once
            (100, None, 200.0),       // read right away: no decay
            (10_100, None, 73.58),    // idle for one decay time: x exp(-1)
            (10_100, Some(5), 76.74), // 200 x 0.368 + 5 x 0.632
        ];
        let mut e = PeakEwma::new(ms(30));
        for &(at, sample, want) in cases {
            let now = t0 + ms(at);
            if let Some(s) = sample {
                e.observe(now, ms(s), DECAY);
            }
            let got = e.estimate(now, DECAY) * 1000.0;
            assert!(
                (got - want).abs() < 0.5,
                "at {at}ms after {sample:?}: got {got}, want {want}"
            );
        }
    }

    #[test]
    fn lower_samples_blend_in_over_the_decay_time() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(Duration::from_millis(30));
        e.observe(t0, Duration::from_millis(100), DECAY);
        // 10s later a 0ms sample: weight of history exp(-1) = 0.368
        e.observe(t0 + DECAY, Duration::ZERO, DECAY);
        let got = e.estimate(t0 + DECAY, DECAY) * 1000.0;
        assert!((got - 36.8).abs() < 0.1, "{got}");
    }
}
