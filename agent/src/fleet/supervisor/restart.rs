//! Restart pacing of a supervised gateway: capped exponential backoff and crash-loop
//! detection. Pure: the caller passes `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Backoff and crash-loop settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartConfig {
    /// Delay before the first restart.
    pub initial: Duration,
    /// Cap of the delay.
    pub max: Duration,
    /// Window over which restarts are counted.
    pub window: Duration,
    /// Restarts within `window` that make a crash loop.
    pub crashloop_after: usize,
    /// Ready for this long resets the backoff.
    pub stable_after: Duration,
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            window: Duration::from_secs(60),
            crashloop_after: 5,
            stable_after: Duration::from_secs(10),
        }
    }
}

/// Remembers recent restarts and decides the next delay.
#[derive(Debug, Clone)]
pub struct RestartPacer {
    config: RestartConfig,
    recent: VecDeque<Instant>,
    consecutive: u32,
}

impl RestartPacer {
    /// A pacer with `config`.
    pub fn new(config: RestartConfig) -> Self {
        Self {
            config,
            recent: VecDeque::new(),
            consecutive: 0,
        }
    }

    /// Records a failure (exit or failed readiness) at `now`; returns the delay before the
    /// next start: `initial * 2^(consecutive failures - 1)`, capped at `max`.
    pub fn record_failure(&mut self, now: Instant) -> Duration {
        self.recent.push_back(now);
        self.prune(now);
        let exp = self.consecutive.min(20);
        self.consecutive = self.consecutive.saturating_add(1);
        self.config
            .initial
            .checked_mul(1 << exp)
            .map_or(self.config.max, |d| d.min(self.config.max))
    }

    /// Records that the gateway has been ready since `ready_since`; after `stable_after`
    /// the backoff starts over.
    pub fn record_ready(&mut self, now: Instant, ready_since: Instant) {
        if now.saturating_duration_since(ready_since) >= self.config.stable_after {
            self.consecutive = 0;
        }
        self.prune(now);
    }

    /// True when `crashloop_after` or more failures happened within `window`.
    pub fn is_crashloop(&mut self, now: Instant) -> bool {
        self.prune(now);
        self.recent.len() >= self.config.crashloop_after
    }

    /// Failures within the window.
    pub fn recent_failures(&self) -> usize {
        self.recent.len()
    }

    fn prune(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.config.window)
        {
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_up_to_the_cap_and_reset_when_stable() {
        let config = RestartConfig {
            initial: 100 * MS,
            max: 1000 * MS,
            ..RestartConfig::default()
        };
        let mut p = RestartPacer::new(config);
        let t = Instant::now();
        let delays: Vec<u128> = (0..6).map(|_| p.record_failure(t).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        p.record_ready(t + config.stable_after, t);
        assert_eq!(p.record_failure(t).as_millis(), 100);
    }

    #[test]
    fn crashloop_is_failures_within_the_window() {
        let config = RestartConfig {
            window: 1000 * MS,
            crashloop_after: 3,
            ..RestartConfig::default()
        };
        let mut p = RestartPacer::new(config);
        let t = Instant::now();
        p.record_failure(t);
        p.record_failure(t + 100 * MS);
        assert!(!p.is_crashloop(t + 100 * MS));
        p.record_failure(t + 200 * MS);
        assert!(p.is_crashloop(t + 200 * MS));
        assert!(
            !p.is_crashloop(t + 1101 * MS),
            "old failures leave the window"
        );
    }
}
