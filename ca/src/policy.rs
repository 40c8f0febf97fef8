//! Issuance policy: SVID lifetimes and when the intermediate must rotate. Pure functions of `now`.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// Lifetimes the CA applies. Stored in the state dir at `ca init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuancePolicy {
    /// SVID lifetime when the request names none, in seconds (default 1 h).
    pub default_ttl_secs: u64,
    /// Shortest SVID lifetime a request may ask for (default 1 min).
    pub min_ttl_secs: u64,
    /// Longest SVID lifetime a request may ask for (default 24 h).
    pub max_ttl_secs: u64,
    /// Lifetime of a signing intermediate (default 7 days); rotated at half of it.
    pub intermediate_ttl_secs: u64,
    /// Lifetime of a root (default 10 years).
    pub root_ttl_secs: u64,
}

impl Default for IssuancePolicy {
    fn default() -> Self {
        Self {
            default_ttl_secs: 3600,
            min_ttl_secs: 60,
            max_ttl_secs: 24 * 3600,
            intermediate_ttl_secs: 7 * 24 * 3600,
            root_ttl_secs: 10 * 365 * 24 * 3600,
        }
    }
}

/// Why a policy or a requested lifetime was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The requested TTL lies outside `[min, max]`.
    #[error("requested ttl {requested}s is outside the policy bounds [{min}s, {max}s]")]
    TtlOutOfBounds {
        /// Asked for.
        requested: u64,
        /// Policy minimum.
        min: u64,
        /// Policy maximum.
        max: u64,
    },
    /// The policy itself is inconsistent.
    #[error("invalid issuance policy: {0}")]
    Invalid(&'static str),
}

impl IssuancePolicy {
    /// Checks that the bounds are ordered and leave room for rotation.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.min_ttl_secs == 0 || self.min_ttl_secs > self.max_ttl_secs {
            return Err(PolicyError::Invalid("need 0 < min_ttl <= max_ttl"));
        }
        if !(self.min_ttl_secs..=self.max_ttl_secs).contains(&self.default_ttl_secs) {
            return Err(PolicyError::Invalid(
                "default_ttl must lie in [min_ttl, max_ttl]",
            ));
        }
        if self.intermediate_ttl_secs < 2 * self.max_ttl_secs {
            return Err(PolicyError::Invalid(
                "intermediate_ttl must be at least twice max_ttl",
            ));
        }
        if self.root_ttl_secs < 2 * self.intermediate_ttl_secs {
            return Err(PolicyError::Invalid(
                "root_ttl must be at least twice intermediate_ttl",
            ));
        }
        Ok(())
    }

    /// The validity window of a new SVID: `requested` (or the default) within bounds,
    /// cut off at the intermediate's expiry.
    pub fn svid_validity(
        &self,
        requested: Option<u64>,
        now: OffsetDateTime,
        intermediate_not_after: OffsetDateTime,
    ) -> Result<(OffsetDateTime, OffsetDateTime), PolicyError> {
        let ttl = requested.unwrap_or(self.default_ttl_secs);
        if !(self.min_ttl_secs..=self.max_ttl_secs).contains(&ttl) {
            return Err(PolicyError::TtlOutOfBounds {
                requested: ttl,
                min: self.min_ttl_secs,
                max: self.max_ttl_secs,
            });
        }
        let not_after = (now + Duration::seconds(ttl as i64)).min(intermediate_not_after);
        Ok((now - crate::pki::BACKDATE, not_after))
    }

    /// True when an intermediate valid over `[not_before, not_after]` should be replaced:
    /// past half of its life, or with less than `2 * max_ttl` left.
    pub fn intermediate_needs_rotation(
        &self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> bool {
        // `not_before` is backdated for clock skew; the life to halve starts at issuance.
        let issued = not_before + crate::pki::BACKDATE;
        let half = issued + (not_after - issued) / 2;
        now >= half || not_after - now < Duration::seconds(2 * self.max_ttl_secs as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn default_policy_is_valid() {
        IssuancePolicy::default().validate().unwrap();
    }

    #[test]
    fn svid_validity_table() {
        let p = IssuancePolicy::default();
        let far = t(1_000_000);
        let (nb, na) = p.svid_validity(None, t(0), far).unwrap();
        assert_eq!((nb, na), (t(-30), t(3600)));
        assert_eq!(p.svid_validity(Some(120), t(0), far).unwrap().1, t(120));
        // Cut at the intermediate's expiry.
        assert_eq!(p.svid_validity(Some(3600), t(0), t(100)).unwrap().1, t(100));
        assert!(matches!(
            p.svid_validity(Some(59), t(0), far),
            Err(PolicyError::TtlOutOfBounds { requested: 59, .. })
        ));
        assert!(p.svid_validity(Some(24 * 3600 + 1), t(0), far).is_err());
    }

    #[test]
    fn rotation_table() {
        let p = IssuancePolicy::default();
        let week = 7 * 24 * 3600;
        // not_before is backdated 30 s; half of the life counts from issuance.
        assert!(!p.intermediate_needs_rotation(t(-30), t(week), t(week / 2 - 1)));
        assert!(p.intermediate_needs_rotation(t(-30), t(week), t(week / 2)));
        // Short-lived intermediate: rotate once less than 2 * max_ttl remains.
        assert!(p.intermediate_needs_rotation(t(0), t(3 * 86400), t(86400 + 1)));
    }

    #[test]
    fn rejects_inconsistent_policies() {
        let mut p = IssuancePolicy {
            min_ttl_secs: 10,
            max_ttl_secs: 5,
            ..Default::default()
        };
        assert!(p.validate().is_err());
        p = IssuancePolicy {
            intermediate_ttl_secs: 3600,
            ..Default::default()
        };
        assert!(p.validate().is_err());
    }
}
