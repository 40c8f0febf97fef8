//! Metric names of the CA, `meshedge_ca_*`.

/// SVIDs issued, labels `op` (enroll, renew, workload).
pub const SVIDS_ISSUED_TOTAL: &str = "meshedge_ca_svids_issued_total";
/// Requests denied, labels `op` and `reason` (bad_csr, token, forbidden, banned, too_large, ...).
pub const REQUESTS_DENIED_TOTAL: &str = "meshedge_ca_requests_denied_total";
/// Time to sign one SVID, seconds.
pub const SIGN_SECONDS: &str = "meshedge_ca_sign_seconds";
/// Intermediate rotations performed by this process.
pub const INTERMEDIATE_ROTATIONS_TOTAL: &str = "meshedge_ca_intermediate_rotations_total";
/// Seconds until the active intermediate expires.
pub const INTERMEDIATE_EXPIRY_SECONDS: &str = "meshedge_ca_intermediate_expiry_seconds";
/// Store errors, label `op`.
pub const STORE_ERRORS_TOTAL: &str = "meshedge_ca_store_errors_total";
/// TLS handshakes refused, e.g. unknown client certificates.
pub const TLS_HANDSHAKE_FAILURES_TOTAL: &str = "meshedge_ca_tls_handshake_failures_total";

/// Registers descriptions for every CA metric with the installed recorder.
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(SVIDS_ISSUED_TOTAL, "SVIDs issued by this CA process");
    describe_counter!(REQUESTS_DENIED_TOTAL, "CA API requests denied, by reason");
    describe_histogram!(SIGN_SECONDS, Unit::Seconds, "time to sign one SVID");
    describe_counter!(INTERMEDIATE_ROTATIONS_TOTAL, "intermediate CA rotations");
    describe_gauge!(
        INTERMEDIATE_EXPIRY_SECONDS,
        Unit::Seconds,
        "seconds until the intermediate expires"
    );
    describe_counter!(STORE_ERRORS_TOTAL, "CA store failures");
    describe_counter!(
        TLS_HANDSHAKE_FAILURES_TOTAL,
        "TLS handshakes refused by the CA API"
    );
}
