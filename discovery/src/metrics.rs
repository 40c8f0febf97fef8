//! Metric names (for the `metrics` facade) and their descriptions.
//!
//! Labels are bounded: `reason`, `source` (`browse`, `srv`, `static`) and `op`. Services,
//! addresses and names are never labels; they go in tracing events.

/// Resolutions attempted, by `source` and `outcome` (`ok`, `empty`, `error`).
pub const RESOLUTIONS_TOTAL: &str = "meshedge_discovery_resolutions_total";
/// Failed resolutions, by `reason` (`timeout`, `servfail`, `refused`, `unreachable`, `other`).
pub const RESOLVE_ERRORS_TOTAL: &str = "meshedge_discovery_resolve_errors_total";
/// Instances skipped during a resolution, by `reason` (`no_srv`, `no_address`).
pub const INSTANCES_SKIPPED_TOTAL: &str = "meshedge_discovery_instances_skipped_total";
/// TXT strings skipped as malformed, by `reason`.
pub const TXT_SKIPPED_TOTAL: &str = "meshedge_discovery_txt_skipped_total";
/// Endpoint set changes published by watches.
pub const UPDATES_PUBLISHED_TOTAL: &str = "meshedge_discovery_updates_published_total";
/// Watched services whose set is stale (last refresh failed).
pub const STALE_SERVICES: &str = "meshedge_discovery_stale_services";
/// Running watches.
pub const WATCHES: &str = "meshedge_discovery_watches";
/// Time one resolution took, in seconds.
pub const RESOLVE_DURATION_SECONDS: &str = "meshedge_discovery_resolve_duration_seconds";
/// Queries answered by the embedded server, by `rcode`.
pub const SERVER_QUERIES_TOTAL: &str = "meshedge_discovery_server_queries_total";
/// Dynamic updates handled by the embedded server, by `outcome`.
pub const SERVER_UPDATES_TOTAL: &str = "meshedge_discovery_server_updates_total";
/// Snapshot writes that failed in the embedded server.
pub const SERVER_PERSIST_ERRORS_TOTAL: &str = "meshedge_discovery_server_persist_errors_total";
/// Registration updates sent, by `op` (`register`, `update`, `deregister`) and `outcome`.
pub const REGISTRATIONS_TOTAL: &str = "meshedge_discovery_registrations_total";

/// Registers a description for every metric above with the installed recorder.
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(RESOLUTIONS_TOTAL, "DNS-SD resolutions attempted");
    describe_counter!(RESOLVE_ERRORS_TOTAL, "DNS-SD resolutions that failed");
    describe_counter!(INSTANCES_SKIPPED_TOTAL, "DNS-SD instances skipped");
    describe_counter!(TXT_SKIPPED_TOTAL, "malformed TXT strings skipped");
    describe_counter!(UPDATES_PUBLISHED_TOTAL, "endpoint set changes published");
    describe_gauge!(STALE_SERVICES, "watched services serving last known good");
    describe_gauge!(WATCHES, "running service watches");
    describe_histogram!(
        RESOLVE_DURATION_SECONDS,
        Unit::Seconds,
        "time one resolution took"
    );
    describe_counter!(
        SERVER_QUERIES_TOTAL,
        "queries answered by the embedded server"
    );
    describe_counter!(
        SERVER_UPDATES_TOTAL,
        "dynamic updates handled by the embedded server"
    );
    describe_counter!(
        SERVER_PERSIST_ERRORS_TOTAL,
        "zone snapshot writes that failed"
    );
    describe_counter!(REGISTRATIONS_TOTAL, "registration updates sent");
}
