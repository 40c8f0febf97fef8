//! Metric names of the agent (`meshedge_agent_*`) and their descriptions.

/// Node SVID renewals and enrollments, label `result` (`ok`, `error`), `op` (`enroll`, `renew`).
pub const NODE_RENEWALS_TOTAL: &str = "meshedge_agent_node_renewals_total";
/// Seconds until the node SVID expires.
pub const NODE_SVID_EXPIRY_SECONDS: &str = "meshedge_agent_node_svid_expiry_seconds";
/// Failed CA calls, label `op` (`enroll`, `renew`, `entries`, `workload`).
pub const CA_ERRORS_TOTAL: &str = "meshedge_agent_ca_errors_total";
/// 1 while the last CA call succeeded, 0 while the CA is unreachable.
pub const CA_REACHABLE: &str = "meshedge_agent_ca_reachable";
/// Current retry delay towards the CA, seconds (0 when healthy).
pub const CA_BACKOFF_SECONDS: &str = "meshedge_agent_ca_backoff_seconds";
/// Workload SVIDs obtained from the CA.
pub const WORKLOAD_SVIDS_ISSUED_TOTAL: &str = "meshedge_agent_workload_svids_issued_total";
/// Workload SVIDs the CA refused, label `code`.
pub const WORKLOAD_SVIDS_REFUSED_TOTAL: &str = "meshedge_agent_workload_svids_refused_total";
/// Registration entries of this node, as last fetched.
pub const ENTRIES: &str = "meshedge_agent_entries";
/// Workload SVIDs whose `notAfter` has passed without a renewal.
pub const WORKLOAD_SVIDS_EXPIRED: &str = "meshedge_agent_workload_svids_expired";
/// Workload API calls, labels `method` and `code` (gRPC code name).
pub const API_REQUESTS_TOTAL: &str = "meshedge_agent_api_requests_total";
/// Open FetchX509SVID / FetchX509Bundles streams.
pub const API_STREAMS: &str = "meshedge_agent_api_streams";
/// Messages pushed to open streams after a rotation.
pub const API_ROTATIONS_PUSHED_TOTAL: &str = "meshedge_agent_api_rotations_pushed_total";
/// Attestation denials, label `reason` (`no_entry`, `no_peer_credentials`).
pub const ATTESTATION_DENIALS_TOTAL: &str = "meshedge_agent_attestation_denials_total";
/// Seconds from a workload's call to its first SVID.
pub const FIRST_SVID_SECONDS: &str = "meshedge_agent_first_svid_seconds";

/// Registers the description of every agent metric with the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(NODE_RENEWALS_TOTAL, "node SVID enrollments and renewals");
    describe_gauge!(
        NODE_SVID_EXPIRY_SECONDS,
        Unit::Seconds,
        "time left on the node SVID"
    );
    describe_counter!(CA_ERRORS_TOTAL, "failed calls to the CA");
    describe_gauge!(CA_REACHABLE, "1 when the last CA call succeeded");
    describe_gauge!(
        CA_BACKOFF_SECONDS,
        Unit::Seconds,
        "current retry delay towards the CA"
    );
    describe_counter!(WORKLOAD_SVIDS_ISSUED_TOTAL, "workload SVIDs obtained");
    describe_counter!(
        WORKLOAD_SVIDS_REFUSED_TOTAL,
        "workload SVIDs refused by the CA"
    );
    describe_gauge!(ENTRIES, "registration entries of this node");
    describe_gauge!(WORKLOAD_SVIDS_EXPIRED, "workload SVIDs past notAfter");
    describe_counter!(API_REQUESTS_TOTAL, "Workload API calls");
    describe_gauge!(API_STREAMS, "open Workload API streams");
    describe_counter!(
        API_ROTATIONS_PUSHED_TOTAL,
        "rotations pushed to open streams"
    );
    describe_counter!(ATTESTATION_DENIALS_TOTAL, "workload attestation denials");
    describe_histogram!(FIRST_SVID_SECONDS, Unit::Seconds, "call to first SVID");
}
