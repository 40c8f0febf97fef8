//! Range checks of [`ClusterResilience`]; the error names the key.

use super::{check, ClusterResilience, ConfigError};

impl ClusterResilience {
    /// Checks every range; the error's key is relative to `clusters.<name>`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let b = &self.balancer;
        check(
            b.overprovisioning_factor >= 1.0 && b.overprovisioning_factor <= 10.0,
            "balancer.overprovisioning_factor",
            "must be between 1.0 and 10.0",
        )?;
        check(
            (0.0..=100.0).contains(&b.panic_threshold),
            "balancer.panic_threshold",
            "must be a percentage between 0 and 100",
        )?;
        check(
            !b.ewma_decay.is_zero(),
            "balancer.ewma_decay",
            "must be > 0",
        )?;
        let o = &self.outlier;
        check(!o.interval.is_zero(), "outlier.interval", "must be > 0")?;
        check(
            o.base_ejection_time <= o.max_ejection_time,
            "outlier.max_ejection_time",
            "must be >= base_ejection_time",
        )?;
        check(
            o.max_ejection_percent <= 100,
            "outlier.max_ejection_percent",
            "must be a percentage between 0 and 100",
        )?;
        check(
            o.failure_percentage_threshold <= 100,
            "outlier.failure_percentage_threshold",
            "must be a percentage between 0 and 100",
        )?;
        check(
            o.success_rate_stdev_factor > 0.0,
            "outlier.success_rate_stdev_factor",
            "must be > 0",
        )?;
        check(
            o.zone_drain_host_share > 0.0 && o.zone_drain_host_share <= 1.0,
            "outlier.zone_drain_host_share",
            "must be in (0, 1]",
        )?;
        let h = &self.health_check;
        check(
            !h.interval.is_zero(),
            "health_check.interval",
            "must be > 0",
        )?;
        check(!h.timeout.is_zero(), "health_check.timeout", "must be > 0")?;
        check(
            h.unhealthy_threshold >= 1,
            "health_check.unhealthy_threshold",
            "must be >= 1",
        )?;
        check(
            h.healthy_threshold >= 1,
            "health_check.healthy_threshold",
            "must be >= 1",
        )?;
        check(
            h.path.as_deref().is_none_or(|p| p.starts_with('/')),
            "health_check.path",
            "must start with '/'",
        )?;
        let r = &self.retry;
        check(
            r.base_backoff <= r.max_backoff,
            "retry.max_backoff",
            "must be >= base_backoff",
        )?;
        check(
            (0.0..=100.0).contains(&r.budget_percent),
            "retry.budget_percent",
            "must be a percentage between 0 and 100",
        )?;
        check(
            r.retriable_statuses.iter().all(|s| (100..=599).contains(s)),
            "retry.retriable_statuses",
            "must be HTTP status codes",
        )?;
        check(
            r.hedge_multiplier > 0.0,
            "retry.hedge_multiplier",
            "must be > 0",
        )?;
        let t = &r.per_try_timeout;
        check(
            t.p99_multiplier >= 1.0,
            "retry.per_try_timeout.p99_multiplier",
            "must be >= 1.0",
        )?;
        check(
            !t.floor.is_zero() && t.floor <= t.ceiling,
            "retry.per_try_timeout.floor",
            "must be > 0 and <= ceiling",
        )?;
        Ok(())
    }
}
