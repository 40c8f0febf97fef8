//! Capped exponential backoff with jitter, for retrying the CA. Pure: the caller passes the
//! random jitter in, so tests are deterministic.

use std::time::Duration;

/// Longest wait between CA attempts while an SVID has already expired: workloads are down
/// then, and coming back within seconds of the CA matters more than sparing a CA that does
/// not answer (SPIRE's agent syncs every 5 s).
pub const URGENT_RETRY_MAX: Duration = Duration::from_secs(5);

/// Retry delays: `base * 2^failures`, capped at `max`, then scaled into `[1/2, 1]` of that by
/// the jitter so that many agents restarted together do not retry in lockstep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `base` and never waiting longer than `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            failures: 0,
        }
    }

    /// The default for CA calls: 200 ms doubling up to 30 s.
    pub fn for_ca() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(30))
    }

    /// Records a failure and returns how long to wait before the next attempt.
    /// `jitter` is a uniform random number in `[0, 1)`.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        self.next_delay_within(jitter, self.max)
    }

    /// [`Backoff::next_delay`] with a lower ceiling for this attempt, e.g.
    /// [`URGENT_RETRY_MAX`] while SVIDs have expired.
    pub fn next_delay_within(&mut self, jitter: f64, cap: Duration) -> Duration {
        let exp = self.failures.min(31);
        self.failures = self.failures.saturating_add(1);
        let max = self.max.min(cap).max(self.base);
        let ceiling = self
            .base
            .checked_mul(1u32 << exp)
            .map_or(max, |d| d.min(max));
        ceiling.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// Records a success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures recorded since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_cap_and_jitter() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        // (jitter, expected delay)
        let table = [
            (1.0, ms(100)),
            (1.0, ms(200)),
            (0.0, ms(200)), // 400 * 0.5
            (1.0, ms(800)),
            (1.0, ms(1000)), // capped
            (0.5, ms(750)),  // capped, 3/4
            (1.0, ms(1000)),
        ];
        for (i, (jitter, want)) in table.into_iter().enumerate() {
            assert_eq!(b.next_delay(jitter), want, "step {i}");
        }
        assert_eq!(b.failures(), 7);
        b.reset();
        assert_eq!(b.next_delay(1.0), ms(100));
    }

    #[test]
    fn an_urgent_cap_shortens_only_long_waits() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        for _ in 0..10 {
            b.next_delay(1.0);
        }
        assert_eq!(b.clone().next_delay(1.0), Duration::from_secs(30));
        assert_eq!(b.next_delay_within(1.0, URGENT_RETRY_MAX), URGENT_RETRY_MAX);
        let mut fresh = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        assert_eq!(
            fresh.next_delay_within(1.0, URGENT_RETRY_MAX),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..100 {
            assert!(b.next_delay(1.0) <= Duration::from_secs(30));
        }
    }
}
