//! Metric names of the resilience layer (`meshedge_edge_*`), their labels and
//! descriptions. Labels are bounded: `cluster` and `route` come from the config, `zone`
//! (and `from`/`to`) from discovery's TXT `zone=` of configured clusters, `reason` from the
//! fixed `as_str()` sets of [`EjectionReason`](super::outlier::EjectionReason),
//! [`PickReason`](super::balance::PickReason), [`NoRetry`](super::retry::NoRetry) and
//! [`Resource`](super::breaker::Resource). Never addresses or paths.
//!
//! [`describe`] is called once by the gateway next to `crate::metrics::describe` (the
//! crate-wide list of the data plane).

/// Endpoints or zones ejected, by `cluster` and `reason` (an `EjectionReason`).
pub const EJECTIONS_TOTAL: &str = "meshedge_edge_outlier_ejections_total";
/// Ejections refused by `max_ejection_percent`, by `cluster`.
pub const EJECTIONS_OVERFLOW_TOTAL: &str = "meshedge_edge_outlier_ejections_overflow_total";
/// Endpoints currently ejected, by `cluster`.
pub const EJECTED: &str = "meshedge_edge_outlier_ejected";
/// Active health-check transitions, by `cluster` and `result` (`healthy`, `unhealthy`).
pub const HEALTH_TRANSITIONS_TOTAL: &str = "meshedge_edge_health_transitions_total";
/// Retries made, by `cluster` and `reason` (the failed try's outcome label).
pub const RETRIES_TOTAL: &str = "meshedge_edge_retries_total";
/// Retries not made, by `cluster` and `reason` (a `NoRetry`).
pub const RETRIES_SKIPPED_TOTAL: &str = "meshedge_edge_retries_skipped_total";
/// Retries or hedges refused by the retry budget, by `cluster`.
pub const RETRY_BUDGET_EXHAUSTED_TOTAL: &str = "meshedge_edge_retry_budget_exhausted_total";
/// Hedged tries sent, by `cluster`.
pub const HEDGES_TOTAL: &str = "meshedge_edge_hedges_total";
/// Hedges whose try answered first, by `cluster`.
pub const HEDGES_WON_TOTAL: &str = "meshedge_edge_hedges_won_total";
/// Requests refused with 429, by `route`.
pub const RATE_LIMITED_TOTAL: &str = "meshedge_edge_rate_limited_total";
/// Requests refused with 503 by a circuit breaker, by `cluster` and `reason` (a
/// `Resource`, e.g. `max_requests`).
pub const CIRCUIT_OPEN_TOTAL: &str = "meshedge_edge_circuit_open_total";
/// Picks, by `cluster` and `reason` (a `PickReason`: `local`, `spill`, `failover`, ...).
pub const PICKS_TOTAL: &str = "meshedge_edge_picks_total";
/// Changes of the zone that takes most of a cluster's traffic, by `cluster`, `from`, `to`.
pub const ZONE_SHIFT_TOTAL: &str = "meshedge_edge_zone_shift_total";
/// Share of a cluster's traffic planned for a zone (0..1), by `cluster` and `zone`.
pub const ZONE_TRAFFIC_SHARE: &str = "meshedge_edge_zone_traffic_share";
/// 1 while any tier of the cluster is in panic mode, by `cluster`.
pub const PANIC_MODE: &str = "meshedge_edge_panic_mode";
/// Per-try timeouts that fired, by `cluster`.
pub const PER_TRY_TIMEOUTS_TOTAL: &str = "meshedge_edge_per_try_timeouts_total";

/// Every name above, for tests and dashboards.
pub const ALL: &[&str] = &[
    EJECTIONS_TOTAL,
    EJECTIONS_OVERFLOW_TOTAL,
    EJECTED,
    HEALTH_TRANSITIONS_TOTAL,
    RETRIES_TOTAL,
    RETRIES_SKIPPED_TOTAL,
    RETRY_BUDGET_EXHAUSTED_TOTAL,
    HEDGES_TOTAL,
    HEDGES_WON_TOTAL,
    RATE_LIMITED_TOTAL,
    CIRCUIT_OPEN_TOTAL,
    PICKS_TOTAL,
    ZONE_SHIFT_TOTAL,
    ZONE_TRAFFIC_SHARE,
    PANIC_MODE,
    PER_TRY_TIMEOUTS_TOTAL,
];

/// Registers the descriptions with the installed recorder; call once at start.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        EJECTIONS_TOTAL,
        "Outlier ejections of endpoints or zones, by reason."
    );
    describe_counter!(
        EJECTIONS_OVERFLOW_TOTAL,
        "Ejections refused by max_ejection_percent."
    );
    describe_gauge!(EJECTED, "Endpoints currently ejected.");
    describe_counter!(
        HEALTH_TRANSITIONS_TOTAL,
        "Active health-check transitions, by result."
    );
    describe_counter!(RETRIES_TOTAL, "Retries made, by the failed try's outcome.");
    describe_counter!(
        RETRIES_SKIPPED_TOTAL,
        "Failed tries not retried, by reason."
    );
    describe_counter!(
        RETRY_BUDGET_EXHAUSTED_TOTAL,
        "Retries or hedges refused by the retry budget."
    );
    describe_counter!(HEDGES_TOTAL, "Hedged tries sent.");
    describe_counter!(HEDGES_WON_TOTAL, "Hedged tries that answered first.");
    describe_counter!(
        RATE_LIMITED_TOTAL,
        "Requests refused with 429 by a route's rate limit."
    );
    describe_counter!(
        CIRCUIT_OPEN_TOTAL,
        "Requests refused with 503 by a circuit breaker, by reason."
    );
    describe_counter!(
        PICKS_TOTAL,
        "Endpoint picks, by reason (local, spill, failover, panic...)."
    );
    describe_counter!(
        ZONE_SHIFT_TOTAL,
        "Changes of the zone taking most of a cluster's traffic."
    );
    describe_gauge!(
        ZONE_TRAFFIC_SHARE,
        "Planned share of a cluster's traffic per zone."
    );
    describe_gauge!(
        PANIC_MODE,
        "1 while a tier of the cluster is in panic mode."
    );
    describe_counter!(PER_TRY_TIMEOUTS_TOTAL, "Per-try timeouts that fired.");
}

#[cfg(test)]
mod tests {
    use super::ALL;

    #[test]
    fn names_follow_the_convention_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for name in ALL {
            assert!(name.starts_with("meshedge_edge_"), "{name}");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
            assert!(seen.insert(name), "{name} twice");
        }
    }
}
