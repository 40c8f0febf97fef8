//! How often workload calls may force an entry sync with the CA: a token bucket. A new
//! workload (an entry created a moment ago) gets its sync at once, and a sync that finds a
//! new entry gives its token back; a process hammering the socket with identities that
//! have no entry can force at most the refill rate.

use std::time::Duration;

use tokio::time::Instant;

/// Forced syncs that may happen back to back.
pub const FORCED_SYNC_BURST: u32 = 8;
/// Forced syncs per second once the burst is spent.
pub const FORCED_SYNCS_PER_SECOND: f64 = 5.0;

/// A token bucket for forced entry syncs.
#[derive(Debug, Clone)]
pub struct SyncBudget {
    burst: f64,
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl SyncBudget {
    /// A full bucket of `burst` tokens refilled at `per_second`.
    pub fn new(burst: u32, per_second: f64, now: Instant) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: per_second.max(f64::MIN_POSITIVE),
            tokens: f64::from(burst.max(1)),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = now;
    }

    /// Takes a token if one is left.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Gives a token back (a forced sync that turned out to be needed), up to the burst.
    pub fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }

    /// When the next token is there (`now` if one is).
    pub fn next_at(&self, now: Instant) -> Instant {
        let mut b = self.clone();
        b.refill(now);
        if b.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - b.tokens) / b.per_second)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate() {
        let t0 = Instant::now();
        let mut b = SyncBudget::new(3, 5.0, t0);
        assert!((0..3).all(|_| b.try_take(t0)), "the burst is there at once");
        assert!(!b.try_take(t0));
        assert_eq!(b.next_at(t0), t0 + Duration::from_millis(200));
        assert!(!b.try_take(t0 + Duration::from_millis(150)));
        assert!(b.try_take(t0 + Duration::from_millis(200)));
        // Never more than the burst, however long it was idle.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 3);
        b.refund();
        assert!(b.try_take(later), "a refunded token can be taken again");
        b.refund();
        b.refund();
        b.refund();
        b.refund();
        assert_eq!(
            (0..10).filter(|_| b.try_take(later)).count(),
            3,
            "capped at the burst"
        );
    }
}
