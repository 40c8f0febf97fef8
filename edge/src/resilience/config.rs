//! The policy tables of the edge TOML: `clusters.<name>.{balancer, outlier, health_check,
//! retry, circuit_breaker}` and `routes.<n>.rate_limit`. Every table denies unknown keys;
//! every key has a documented default, so an empty table (or a missing one, through
//! `#[serde(default)]` on the embedding field) means "the defaults". Durations are
//! humantime strings (`"30s"`, `"250ms"`). [`ClusterResilience::validate`] and
//! [`RateLimitConfig::validate`] check ranges and name the offending key.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A value outside its allowed range; `key` is relative to the table (the embedding
/// config prefixes `clusters.<name>.`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    /// The offending key, e.g. `balancer.overprovisioning_factor`.
    pub key: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn check(ok: bool, key: &'static str, problem: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            key,
            problem: problem.to_owned(),
        })
    }
}

pub mod duration;
mod rate_limit;
mod validate;

pub use rate_limit::{RateLimitConfig, RateLimitKey};

macro_rules! defaults {
    ($($name:ident: $ty:ty = $value:expr;)*) => {
        $(fn $name() -> $ty { $value })*
    };
}

defaults! {
    d_true: bool = true;
    d_overprovisioning: f64 = 1.4;
    d_panic_threshold: f64 = 50.0;
    d_ewma_decay: Duration = Duration::from_secs(10);
    d_default_rtt: Duration = Duration::from_millis(30);
    d_consecutive: u32 = 5;
    d_outlier_interval: Duration = Duration::from_secs(10);
    d_base_ejection: Duration = Duration::from_secs(30);
    d_max_ejection: Duration = Duration::from_secs(300);
    d_max_ejection_percent: u32 = 10;
    d_min_hosts: u32 = 5;
    d_sr_volume: u32 = 100;
    d_sr_stdev: f64 = 1.9;
    d_fp_threshold: u32 = 85;
    d_fp_volume: u32 = 50;
    d_zone_window: Duration = Duration::from_millis(500);
    d_zone_share: f64 = 0.5;
    d_zone_min_failures: u32 = 3;
    d_zone_drain_time: Duration = Duration::from_secs(10);
    d_hc_interval: Duration = Duration::from_secs(1);
    d_hc_unhealthy_interval: Duration = Duration::from_millis(250);
    d_hc_jitter: Duration = Duration::from_millis(100);
    d_hc_timeout: Duration = Duration::from_millis(500);
    d_threshold: u32 = 2;
    d_max_retries: u32 = 2;
    d_retry_base: Duration = Duration::from_millis(25);
    d_retry_max: Duration = Duration::from_millis(250);
    d_retry_statuses: Vec<u16> = vec![502, 503, 504];
    d_budget_percent: f64 = 20.0;
    d_budget_min: u32 = 3;
    d_hedge_min_delay: Duration = Duration::from_millis(10);
    d_hedge_multiplier: f64 = 1.0;
    d_p99_multiplier: f64 = 2.0;
    d_per_try_floor: Duration = Duration::from_millis(100);
    d_per_try_ceiling: Duration = Duration::from_secs(2);
    d_breaker_limit: u32 = 1024;
}

/// Everything resilience-related of one cluster, as embedded in `clusters.<name>`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterResilience {
    /// `balancer`.
    #[serde(default)]
    pub balancer: BalancerConfig,
    /// `outlier`.
    #[serde(default)]
    pub outlier: OutlierConfig,
    /// `health_check`.
    #[serde(default)]
    pub health_check: HealthCheckConfig,
    /// `retry`.
    #[serde(default)]
    pub retry: RetryConfig,
    /// `circuit_breaker`.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
}

/// `clusters.<name>.balancer`: see [`super::balance`] for the rules.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerConfig {
    /// Envoy's overprovisioning factor (default 1.4): a zone or tier keeps all of its
    /// traffic while healthy share x factor >= 1.
    #[serde(default = "d_overprovisioning")]
    pub overprovisioning_factor: f64,
    /// Percent of healthy endpoints in a tier below which health is ignored in it
    /// (Envoy's `healthy_panic_threshold`, default 50).
    #[serde(default = "d_panic_threshold")]
    pub panic_threshold: f64,
    /// Prefer the gateway's own zone (default true); false spreads over zones by capacity.
    #[serde(default = "d_true")]
    pub zone_aware: bool,
    /// Peak-EWMA decay time constant (default 10s, as Finagle and Linkerd).
    #[serde(default = "d_ewma_decay", with = "duration")]
    pub ewma_decay: Duration,
    /// Latency assumed for endpoints without samples while no endpoint of the cluster
    /// has any (default 30ms); otherwise they are assumed to cost the cluster's mean.
    #[serde(default = "d_default_rtt", with = "duration")]
    pub default_rtt: Duration,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

/// `clusters.<name>.outlier`: passive outlier detection, Envoy's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive 5xx (incl. connect failure, reset, timeout) that eject; 0 disables (5).
    #[serde(default = "d_consecutive")]
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 or local failures that eject; 0 disables (5).
    #[serde(default = "d_consecutive")]
    pub consecutive_gateway_failure: u32,
    /// How often statistics are evaluated and ejections expire (10s).
    #[serde(default = "d_outlier_interval", with = "duration")]
    pub interval: Duration,
    /// Ejection time = base x times ejected (30s) ...
    #[serde(default = "d_base_ejection", with = "duration")]
    pub base_ejection_time: Duration,
    /// ... capped at this (300s).
    #[serde(default = "d_max_ejection", with = "duration")]
    pub max_ejection_time: Duration,
    /// Most endpoints ejected at once, percent of the cluster (10), but at least one.
    #[serde(default = "d_max_ejection_percent")]
    pub max_ejection_percent: u32,
    /// Success-rate ejection on (true).
    #[serde(default = "d_true")]
    pub success_rate: bool,
    /// Endpoints with enough volume needed for success-rate ejection (5).
    #[serde(default = "d_min_hosts")]
    pub success_rate_minimum_hosts: u32,
    /// Requests per interval an endpoint needs to count (100).
    #[serde(default = "d_sr_volume")]
    pub success_rate_request_volume: u32,
    /// Eject below mean - factor x stdev (1.9).
    #[serde(default = "d_sr_stdev")]
    pub success_rate_stdev_factor: f64,
    /// Failure-percentage ejection on (true).
    #[serde(default = "d_true")]
    pub failure_percentage: bool,
    /// Eject at or above this failure percent (85).
    #[serde(default = "d_fp_threshold")]
    pub failure_percentage_threshold: u32,
    /// Endpoints with enough volume needed for failure-percentage ejection (5).
    #[serde(default = "d_min_hosts")]
    pub failure_percentage_minimum_hosts: u32,
    /// Requests per interval an endpoint needs to count (50).
    #[serde(default = "d_fp_volume")]
    pub failure_percentage_request_volume: u32,
    /// A passing active health check un-ejects (Envoy's
    /// `successful_active_health_check_uneject_host`, true).
    #[serde(default = "d_true")]
    pub uneject_on_health_check: bool,
    /// Zone drain on (true): see [`super::outlier::ZoneDrain`].
    #[serde(default = "d_true")]
    pub zone_drain: bool,
    /// Window in which a zone's gateway failures are counted (500ms).
    #[serde(default = "d_zone_window", with = "duration")]
    pub zone_drain_window: Duration,
    /// More than this share of the zone's endpoints must have failed in the window (0.5).
    #[serde(default = "d_zone_share")]
    pub zone_drain_host_share: f64,
    /// Gateway failures in the window needed, zone-wide (3).
    #[serde(default = "d_zone_min_failures")]
    pub zone_drain_min_failures: u32,
    /// How long a drained zone stays drained unless a health check passes first (10s).
    #[serde(default = "d_zone_drain_time", with = "duration")]
    pub zone_drain_time: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

/// `clusters.<name>.health_check`: active checks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Active checks on (true).
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// Path to GET; unset: the instance's TXT `health=`, else `/healthz`.
    #[serde(default)]
    pub path: Option<String>,
    /// Time between checks of one endpoint (1s) ...
    #[serde(default = "d_hc_interval", with = "duration")]
    pub interval: Duration,
    /// ... plus a uniform random 0..jitter (100ms).
    #[serde(default = "d_hc_jitter", with = "duration")]
    pub interval_jitter: Duration,
    /// Time between checks of an endpoint while it is unhealthy (250ms), like Envoy's
    /// `unhealthy_interval`: a recovered endpoint is back after `healthy_threshold` of these.
    #[serde(default = "d_hc_unhealthy_interval", with = "duration")]
    pub unhealthy_interval: Duration,
    /// A check without a 2xx answer within this fails (500ms).
    #[serde(default = "d_hc_timeout", with = "duration")]
    pub timeout: Duration,
    /// Consecutive failures that make an endpoint unhealthy (2).
    #[serde(default = "d_threshold")]
    pub unhealthy_threshold: u32,
    /// Consecutive passes that make it healthy again (2).
    #[serde(default = "d_threshold")]
    pub healthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

/// `clusters.<name>.retry`: retries, the retry budget, hedging, per-try timeouts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first try (2).
    #[serde(default = "d_max_retries")]
    pub max_retries: u32,
    /// Full-jitter backoff base (25ms): try n waits uniform 0..min(max, base x 2^n).
    #[serde(default = "d_retry_base", with = "duration")]
    pub base_backoff: Duration,
    /// Backoff cap (250ms).
    #[serde(default = "d_retry_max", with = "duration")]
    pub max_backoff: Duration,
    /// Response statuses retried ([502, 503, 504]); connect failures, resets and per-try
    /// timeouts always are.
    #[serde(default = "d_retry_statuses")]
    pub retriable_statuses: Vec<u16>,
    /// Retries (and hedges) in flight allowed, percent of active requests (20) ...
    #[serde(default = "d_budget_percent")]
    pub budget_percent: f64,
    /// ... but always at least this many (3).
    #[serde(default = "d_budget_min")]
    pub budget_min_concurrent: u32,
    /// Hedged requests for idempotent calls on (true).
    #[serde(default = "d_true")]
    pub hedge: bool,
    /// Hedge after max(p90 x multiplier, min_delay) ... (1.0)
    #[serde(default = "d_hedge_multiplier")]
    pub hedge_multiplier: f64,
    /// ... (10ms).
    #[serde(default = "d_hedge_min_delay", with = "duration")]
    pub hedge_min_delay: Duration,
    /// Latency-aware per-try timeout.
    #[serde(default)]
    pub per_try_timeout: PerTryTimeoutConfig,
}

impl Default for RetryConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

/// `clusters.<name>.retry.per_try_timeout`: max(p99 x multiplier, floor), capped by
/// `ceiling` and by the time the whole request has left.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PerTryTimeoutConfig {
    /// Follow observed latency (true); false: always `ceiling`.
    #[serde(default = "d_true")]
    pub adaptive: bool,
    /// Multiple of the recent p99 (2.0).
    #[serde(default = "d_p99_multiplier")]
    pub p99_multiplier: f64,
    /// Never shorter (100ms).
    #[serde(default = "d_per_try_floor", with = "duration")]
    pub floor: Duration,
    /// Never longer (2s).
    #[serde(default = "d_per_try_ceiling", with = "duration")]
    pub ceiling: Duration,
}

impl Default for PerTryTimeoutConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

/// `clusters.<name>.circuit_breaker`: Envoy's thresholds (each 1024 by default).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Upstream connections open at once.
    #[serde(default = "d_breaker_limit")]
    pub max_connections: u32,
    /// Requests waiting for a connection.
    #[serde(default = "d_breaker_limit")]
    pub max_pending_requests: u32,
    /// Requests in flight.
    #[serde(default = "d_breaker_limit")]
    pub max_requests: u32,
    /// Retries and hedges in flight (a hard ceiling above the retry budget).
    #[serde(default = "d_breaker_limit")]
    pub max_retries: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

#[cfg(test)]
#[path = "config/tests.rs"]
mod tests;
