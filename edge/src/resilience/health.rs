//! Active health checking of one endpoint, as a pure state machine: when the next check
//! is due (interval plus uniform jitter, so checks of many endpoints don't synchronise)
//! and what a result does to the endpoint's health (`unhealthy_threshold` failures in a
//! row make it unhealthy, `healthy_threshold` passes in a row make it healthy again; both
//! 2 by default, like Envoy's common settings).
//!
//! New endpoints start healthy (discovery just announced them) and get their first check
//! within one jitter of being added. The I/O is in [`probe`]: a thin async loop around
//! [`HealthCheck`] that sends the GET through a [`probe::HealthProbe`].

pub mod probe;

use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio::time::Instant;

use super::config::HealthCheckConfig;

/// The path checked when neither the config nor the instance's TXT `health=` names one.
pub const DEFAULT_PATH: &str = "/healthz";

/// The path to check: the config's, else the TXT `health=` of the instance, else
/// [`DEFAULT_PATH`]. A TXT value that is not an absolute path is ignored (DNS is not
/// trusted to steer requests elsewhere).
pub fn check_path<'a>(config: &'a HealthCheckConfig, txt_health: Option<&'a str>) -> &'a str {
    config
        .path
        .as_deref()
        .or(txt_health.filter(|p| p.starts_with('/') && !p.starts_with("//")))
        .unwrap_or(DEFAULT_PATH)
}

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum CheckResult {
    /// A 2xx answer within the timeout.
    Pass,
    /// An answer with another status.
    Status {
        /// The status.
        status: u16,
    },
    /// Connect, TLS or identity failure.
    ConnectFailure,
    /// No answer within the timeout.
    Timeout,
    /// Not sent because the gateway's own SVID has expired: says nothing about the
    /// endpoint, so it changes neither its health nor its counters.
    NotSent,
}

impl CheckResult {
    /// From an HTTP status.
    pub fn from_status(status: u16) -> Self {
        if (200..300).contains(&status) {
            Self::Pass
        } else {
            Self::Status { status }
        }
    }

    /// Whether the check passed.
    pub fn is_pass(self) -> bool {
        self == Self::Pass
    }
}

/// What a result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// Nothing.
    Unchanged,
    /// The endpoint became healthy.
    BecameHealthy,
    /// The endpoint became unhealthy.
    BecameUnhealthy,
}

/// The health-check state of one endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct HealthCheck {
    #[serde(skip)]
    config: HealthCheckConfig,
    healthy: bool,
    passes: u32,
    failures: u32,
    last: Option<CheckResult>,
    #[serde(skip)]
    next_at: Instant,
}

// === impl HealthCheck ===

impl HealthCheck {
    /// A healthy endpoint whose first check is due within one jitter of `now`.
    pub fn new<R: Rng + ?Sized>(config: HealthCheckConfig, now: Instant, rng: &mut R) -> Self {
        let next_at = now + jitter(config.interval_jitter, rng);
        Self {
            config,
            healthy: true,
            passes: 0,
            failures: 0,
            last: None,
            next_at,
        }
    }

    /// Whether the endpoint counts as healthy.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// The last result, if any check finished.
    pub fn last(&self) -> Option<CheckResult> {
        self.last
    }

    /// When the next check should start.
    pub fn next_check_at(&self) -> Instant {
        self.next_at
    }

    /// How long a check may take before it counts as [`CheckResult::Timeout`].
    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// Records a finished check and schedules the next one at `now + interval + jitter`
    /// (`unhealthy_interval` while the endpoint is unhealthy).
    pub fn record<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        result: CheckResult,
        rng: &mut R,
    ) -> Transition {
        self.last = Some(result);
        let transition = self.transition(result);
        let every = if self.healthy {
            self.config.interval
        } else {
            self.config.unhealthy_interval
        };
        self.next_at = now + every + jitter(self.config.interval_jitter, rng);
        transition
    }

    fn transition(&mut self, result: CheckResult) -> Transition {
        if result == CheckResult::NotSent {
            return Transition::Unchanged;
        }
        if result.is_pass() {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
            if !self.healthy && self.passes >= self.config.healthy_threshold {
                self.healthy = true;
                return Transition::BecameHealthy;
            }
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.healthy && self.failures >= self.config.unhealthy_threshold {
                self.healthy = false;
                return Transition::BecameUnhealthy;
            }
        }
        Transition::Unchanged
    }
}

fn jitter<R: Rng + ?Sized>(max: Duration, rng: &mut R) -> Duration {
    if max.is_zero() {
        Duration::ZERO
    } else {
        Duration::from_nanos(rng.random_range(0..max.as_nanos().min(u64::MAX as u128) as u64))
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn thresholds_drive_transitions() {
        let p = CheckResult::Pass;
        let f = CheckResult::Timeout;
        let s = CheckResult::from_status(503);
        let n = CheckResult::NotSent;
        use Transition::{BecameHealthy as Up, BecameUnhealthy as Down, Unchanged as Same};
        // (results in order, expected transitions, healthy at the end)
        let cases: &[(&[CheckResult], &[Transition], bool)] = &[
            (&[p, p], &[Same, Same], true),
            (&[f], &[Same], true),
            (&[f, f], &[Same, Down], false),
            (&[f, p, f], &[Same, Same, Same], true),
            (
                &[s, CheckResult::ConnectFailure, p],
                &[Same, Down, Same],
                false,
            ),
            (&[f, f, p, p], &[Same, Down, Same, Up], true),
            (
                &[f, f, p, f, p, p],
                &[Same, Down, Same, Same, Same, Up],
                true,
            ),
            (&[f, f, f, f], &[Same, Down, Same, Same], false),
            // Not sent (own SVID expired) neither counts as a failure nor breaks a streak.
            (&[f, n, n, f], &[Same, Same, Same, Down], false),
            (&[f, f, p, n, p], &[Same, Down, Same, Same, Up], true),
        ];
        let t0 = Instant::now();
        for (i, &(results, want, healthy)) in cases.iter().enumerate() {
            let mut rng = SmallRng::seed_from_u64(1);
            let mut hc = HealthCheck::new(HealthCheckConfig::default(), t0, &mut rng);
            let got: Vec<Transition> = results
                .iter()
                .map(|&r| hc.record(t0, r, &mut rng))
                .collect();
            assert_eq!(got, want, "case {i}");
            assert_eq!(hc.is_healthy(), healthy, "case {i}");
        }
    }

    #[test]
    fn schedule_is_interval_plus_bounded_jitter() {
        let t0 = Instant::now();
        let config = HealthCheckConfig::default();
        let mut rng = SmallRng::seed_from_u64(9);
        let mut firsts = Vec::new();
        for _ in 0..50 {
            let hc = HealthCheck::new(config.clone(), t0, &mut rng);
            firsts.push(hc.next_check_at() - t0);
        }
        assert!(firsts.iter().all(|d| *d < Duration::from_millis(100)));
        assert!(
            firsts.windows(2).any(|w| w[0] != w[1]),
            "first checks are spread"
        );
        let mut hc = HealthCheck::new(config.clone(), t0, &mut rng);
        for k in 1..=20u32 {
            let now = t0 + Duration::from_secs(u64::from(k));
            hc.record(now, CheckResult::Pass, &mut rng);
            let gap = hc.next_check_at() - now;
            assert!(
                gap >= Duration::from_secs(1) && gap < Duration::from_millis(1100),
                "{gap:?}"
            );
        }
        let no_jitter = HealthCheckConfig {
            interval_jitter: Duration::ZERO,
            ..config
        };
        let mut hc = HealthCheck::new(no_jitter, t0, &mut rng);
        assert_eq!(hc.next_check_at(), t0);
        hc.record(t0, CheckResult::Pass, &mut rng);
        assert_eq!(hc.next_check_at(), t0 + Duration::from_secs(1));
        // Unhealthy: checked every unhealthy_interval until it passes again.
        hc.record(t0, CheckResult::Timeout, &mut rng);
        assert_eq!(hc.next_check_at(), t0 + Duration::from_secs(1));
        hc.record(t0, CheckResult::Timeout, &mut rng);
        assert!(!hc.is_healthy());
        assert_eq!(hc.next_check_at(), t0 + Duration::from_millis(250));
        hc.record(t0, CheckResult::Pass, &mut rng);
        hc.record(t0, CheckResult::Pass, &mut rng);
        assert!(hc.is_healthy());
        assert_eq!(hc.next_check_at(), t0 + Duration::from_secs(1));
    }

    #[test]
    fn path_comes_from_config_then_txt() {
        let with = |p: &str| HealthCheckConfig {
            path: Some(p.into()),
            ..HealthCheckConfig::default()
        };
        let none = HealthCheckConfig::default();
        let cases = [
            (with("/ready"), Some("/live"), "/ready"),
            (none.clone(), Some("/live"), "/live"),
            (none.clone(), Some("live"), DEFAULT_PATH),
            (none.clone(), Some("//evil.example/x"), DEFAULT_PATH),
            (none, None, DEFAULT_PATH),
        ];
        for (config, txt, want) in &cases {
            assert_eq!(check_path(config, *txt), *want, "{txt:?}");
        }
    }
}
