//! When to renew an SVID: at half of its lifetime, counted from when it was received (the
//! CA backdates `notBefore`, which would otherwise pull renewal forward). Pure.

use std::time::Duration;

use time::OffsetDateTime;

/// Shortest wait between two renewals of one SVID, so a tiny TTL cannot spin.
pub const MIN_REFRESH: Duration = Duration::from_millis(100);

/// The lifetime facts the schedule needs about one SVID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// When the SVID was received (or `notBefore` when that is unknown, after a restart).
    pub issued_at: OffsetDateTime,
    /// Its `notAfter`.
    pub not_after: OffsetDateTime,
}

/// What to do about an SVID at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renew now.
    Due,
    /// Wait this long.
    In(Duration),
}

/// Renew at `issued_at + fraction * lifetime` (half by default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenewalSchedule {
    fraction: f64,
}

impl Default for RenewalSchedule {
    fn default() -> Self {
        Self { fraction: 0.5 }
    }
}

impl RenewalSchedule {
    /// The instant at which `svid` should be renewed.
    pub fn refresh_at(&self, svid: &Lifetime) -> OffsetDateTime {
        let life = (svid.not_after - svid.issued_at).max(time::Duration::ZERO);
        let wait =
            (life * self.fraction).max(time::Duration::try_from(MIN_REFRESH).unwrap_or_default());
        svid.issued_at + wait
    }

    /// Whether `svid` is due at `now`, or how long until it is.
    pub fn next(&self, now: OffsetDateTime, svid: &Lifetime) -> Renewal {
        let at = self.refresh_at(svid);
        if now >= at {
            Renewal::Due
        } else {
            Renewal::In(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
        }
    }

    /// True when `svid` has expired at `now`.
    pub fn is_expired(now: OffsetDateTime, svid: &Lifetime) -> bool {
        now >= svid.not_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: f64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
            + time::Duration::seconds_f64(secs)
    }

    #[test]
    fn renews_at_half_life() {
        let s = RenewalSchedule::default();
        let hour = Lifetime {
            issued_at: t(0.0),
            not_after: t(3600.0),
        };
        let short = Lifetime {
            issued_at: t(0.0),
            not_after: t(0.05),
        };
        let expired = Lifetime {
            issued_at: t(0.0),
            not_after: t(-10.0),
        };
        // (now, svid, expected)
        let table = [
            (t(0.0), hour, Renewal::In(Duration::from_secs(1800))),
            (t(1799.0), hour, Renewal::In(Duration::from_secs(1))),
            (t(1800.0), hour, Renewal::Due),
            (t(4000.0), hour, Renewal::Due),
            // Floor: never sooner than MIN_REFRESH after issuance.
            (t(0.0), short, Renewal::In(MIN_REFRESH)),
            (t(0.0), expired, Renewal::In(MIN_REFRESH)),
            (t(0.2), expired, Renewal::Due),
        ];
        for (i, (now, svid, want)) in table.into_iter().enumerate() {
            assert_eq!(s.next(now, &svid), want, "row {i}");
        }
        assert!(RenewalSchedule::is_expired(t(3600.0), &hour));
        assert!(!RenewalSchedule::is_expired(t(3599.0), &hour));
    }
}
