//! Metric names of the edge gateway (`meshedge_edge_*`) and their descriptions. Labels are
//! bounded: `route`, `cluster` and `listener` come from the config, `status` is a code,
//! `reason`/`result`/`protocol` are fixed sets. Never addresses or paths.

/// Requests answered, by `route`, `cluster`, `status` (code) and `protocol`.
pub const REQUESTS_TOTAL: &str = "meshedge_edge_requests_total";
/// Request duration (until the response head), seconds, by `route` and `cluster`.
pub const REQUEST_DURATION_SECONDS: &str = "meshedge_edge_request_duration_seconds";
/// Requests that matched no route (404).
pub const NO_ROUTE_TOTAL: &str = "meshedge_edge_no_route_total";
/// Requests refused by listener protection, by `reason` (`body_too_large`,
/// `header_timeout`, `head_too_large`, `too_many_headers`, `malformed_head`, ...).
pub const REQUESTS_REFUSED_TOTAL: &str = "meshedge_edge_requests_refused_total";
/// HTTP/1.1 connections the fast path handed to hyper, by `reason` (`body_to_come`,
/// `transfer_encoding`, `expect`, `upgrade`, `connect`, `content_length`).
pub const H1_HANDOFFS_TOTAL: &str = "meshedge_edge_h1_handoffs_total";
/// Upstream calls that failed, by `cluster` and `reason` (`connect`, `timeout`, `tls`,
/// `identity`, `protocol`, `no_endpoint`).
pub const UPSTREAM_FAILURES_TOTAL: &str = "meshedge_edge_upstream_failures_total";
/// Upstream TLS connections opened, by `cluster` and `result`.
pub const UPSTREAM_CONNECTIONS_TOTAL: &str = "meshedge_edge_upstream_connections_total";
/// Requests sent again on a new connection because the pooled HTTP/1.1 connection they
/// were sent on had been closed by the upstream (nothing received), by `cluster`.
pub const UPSTREAM_STALE_RETRIES_TOTAL: &str =
    "meshedge_edge_upstream_stale_connection_retries_total";
/// Upstream requests in flight, by `cluster`.
pub const UPSTREAM_IN_FLIGHT: &str = "meshedge_edge_upstream_requests_in_flight";
/// Upstreams that presented an SVID whose SPIFFE ID the cluster does not allow, by `cluster`.
pub const IDENTITY_MISMATCH_TOTAL: &str = "meshedge_edge_identity_mismatch_total";
/// Client TLS handshakes, by `result` (`ok`, `error`, `timeout`).
pub const TLS_HANDSHAKES_TOTAL: &str = "meshedge_edge_tls_handshakes_total";
/// Client connections accepted, by `protocol` (`tcp`, `quic`).
pub const CONNECTIONS_TOTAL: &str = "meshedge_edge_connections_total";
/// Client connections open, by `protocol`.
pub const CONNECTIONS_OPEN: &str = "meshedge_edge_connections_open";
/// Config reloads, by `result` (`applied`, `rejected`, `unchanged`).
pub const CONFIG_RELOADS_TOTAL: &str = "meshedge_edge_config_reloads_total";
/// Certificate or key file reloads, by `kind` (`serving`, `identity`) and `result`.
pub const CERT_RELOADS_TOTAL: &str = "meshedge_edge_cert_reloads_total";
/// Seconds until a certificate expires, by `kind` (`serving`, `identity`) and `index`.
pub const CERT_EXPIRY_SECONDS: &str = "meshedge_edge_cert_expiry_seconds";
/// 1 while ready, 0 while draining.
pub const READY: &str = "meshedge_edge_ready";

/// Registers descriptions and units with the installed recorder; call once at start.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(REQUESTS_TOTAL, "Requests answered by the edge gateway.");
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from request head to response head."
    );
    describe_counter!(NO_ROUTE_TOTAL, "Requests that matched no route (404).");
    describe_counter!(
        REQUESTS_REFUSED_TOTAL,
        "Requests refused by listener protection, by reason."
    );
    describe_counter!(
        H1_HANDOFFS_TOTAL,
        "HTTP/1.1 connections handed from the fast path to hyper, by reason."
    );
    describe_counter!(UPSTREAM_FAILURES_TOTAL, "Failed upstream calls, by reason.");
    describe_counter!(
        UPSTREAM_CONNECTIONS_TOTAL,
        "Upstream mTLS connections opened, by result."
    );
    describe_counter!(
        UPSTREAM_STALE_RETRIES_TOTAL,
        "Idempotent requests resent on a new connection after a pooled one was found closed."
    );
    describe_gauge!(UPSTREAM_IN_FLIGHT, "Upstream requests in flight.");
    describe_counter!(
        IDENTITY_MISMATCH_TOTAL,
        "Upstreams whose SPIFFE ID the cluster does not allow (request not sent)."
    );
    describe_counter!(TLS_HANDSHAKES_TOTAL, "Client TLS handshakes, by result.");
    describe_counter!(CONNECTIONS_TOTAL, "Client connections accepted.");
    describe_gauge!(CONNECTIONS_OPEN, "Client connections open.");
    describe_counter!(CONFIG_RELOADS_TOTAL, "Config reloads, by result.");
    describe_counter!(
        CERT_RELOADS_TOTAL,
        "Certificate file reloads, by kind and result."
    );
    describe_gauge!(
        CERT_EXPIRY_SECONDS,
        Unit::Seconds,
        "Seconds until a certificate expires."
    );
    describe_gauge!(READY, "1 while the gateway is ready, 0 while draining.");
    crate::resilience::metrics::describe();
}
