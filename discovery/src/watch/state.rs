//! The pure part of a watch: what to publish and when to refresh next.

use std::time::Duration;

use crate::endpoint::{EndpointDiff, EndpointSet};
use crate::resolve::Resolution;

/// How often a watch re-resolves.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchConfig {
    /// Shortest wait between resolutions (TTLs below are raised to this; first retry delay).
    pub min_refresh: Duration,
    /// Longest wait between resolutions (TTLs above are lowered to this; retry cap).
    pub max_refresh: Duration,
    /// Fraction taken at random off each wait, in `[0, jitter]` (0 disables jitter). Jitter
    /// only shortens waits (never below `min_refresh`), so a watch re-resolves no later than
    /// its records' TTL and a registration is seen within TTL + one resolution.
    pub jitter: f64,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            min_refresh: Duration::from_secs(1),
            max_refresh: Duration::from_secs(300),
            jitter: 0.1,
        }
    }
}

impl WatchConfig {
    /// Wait after a successful answer with this TTL: the TTL clamped to min..=max.
    pub fn refresh_after(&self, ttl: Duration) -> Duration {
        ttl.clamp(self.min_refresh, self.max_refresh.max(self.min_refresh))
    }

    /// Wait after the `failures`-th consecutive failure: min doubled each time, up to max.
    pub fn retry_after(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.min_refresh
            .saturating_mul(factor)
            .min(self.max_refresh.max(self.min_refresh))
    }

    /// `base` shortened by `jitter * sample` (`sample` in `[0, 1)`), but not below
    /// `min_refresh` (nor below `base` when `base` is already shorter).
    pub fn jittered(&self, base: Duration, sample: f64) -> Duration {
        let fraction = (self.jitter * sample).clamp(0.0, 1.0);
        let floor = self.min_refresh.min(base);
        base.saturating_sub(base.mul_f64(fraction)).max(floor)
    }
}

/// What one resolution outcome did to the watched set.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Whether subscribers must be told (endpoints, staleness or resolved flag changed).
    pub publish: bool,
    /// What changed in the endpoints.
    pub diff: EndpointDiff,
    /// Wait before the next resolution, before jitter; `None` means never (static lists).
    pub next: Option<Duration>,
}

/// The set a watch holds and its failure count.
#[derive(Debug, Clone, Default)]
pub struct WatchState {
    set: EndpointSet,
    failures: u32,
}

impl WatchState {
    /// The current set.
    pub fn set(&self) -> &EndpointSet {
        &self.set
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A successful answer replaces the set (an empty answer empties it) and clears
    /// staleness.
    pub fn succeeded(&mut self, resolution: Resolution, config: &WatchConfig) -> Step {
        self.failures = 0;
        let new = EndpointSet::new(resolution.endpoints);
        let diff = self.set.diff(&new);
        let publish = !diff.is_empty() || self.set.is_stale() || !self.set.is_resolved();
        self.set = new;
        Step {
            publish,
            diff,
            next: resolution.ttl.map(|ttl| config.refresh_after(ttl)),
        }
    }

    /// A failure keeps the set and marks it stale (if it was resolved; a pending set stays
    /// pending but is stale too, so callers can tell "still trying").
    pub fn failed(&mut self, config: &WatchConfig) -> Step {
        self.failures = self.failures.saturating_add(1);
        let publish = !self.set.is_stale();
        self.set.set_stale(true);
        Step {
            publish,
            diff: EndpointDiff::default(),
            next: Some(config.retry_after(self.failures)),
        }
    }
}
