//! The CA's HTTPS API: paths and JSON bodies shared by [`crate::server`] and [`crate::client`].
//!
//! | method, path | auth | body -> answer |
//! |---|---|---|
//! | `GET /v1/bundle` | none | trust bundle, PEM |
//! | `POST /v1/enroll` | join token | [`EnrollRequest`] -> [`SvidResponse`] (node SVID) |
//! | `POST /v1/renew` | node SVID (mTLS) | [`CsrRequest`] -> [`SvidResponse`] |
//! | `POST /v1/workload` | node SVID (mTLS) | [`CsrRequest`] -> [`SvidResponse`] |
//! | `POST /v1/workload/batch` | node SVID (mTLS) | [`BatchRequest`] -> [`BatchResponse`] |
//! | `POST /v1/reattest` | attestation-key signature | [`ReattestRequest`] -> [`SvidResponse`] (node SVID) |
//! | `GET /v1/entries` | node SVID (mTLS) | entries whose parent is the caller |
//! | `GET /healthz`, `GET /metrics` | none | liveness, Prometheus text |
//!
//! Errors answer [`ApiError`] with 400 (bad request or CSR), 401 (join token), 403 (not
//! allowed or banned), 404, 413 (body over [`MAX_BODY`]), 503 (store unavailable).

use serde::{Deserialize, Serialize};

/// Trust bundle path.
pub const PATH_BUNDLE: &str = "/v1/bundle";
/// Enrollment path.
pub const PATH_ENROLL: &str = "/v1/enroll";
/// Node renewal path.
pub const PATH_RENEW: &str = "/v1/renew";
/// Workload SVID path.
pub const PATH_WORKLOAD: &str = "/v1/workload";
/// Batched workload SVIDs path.
pub const PATH_WORKLOAD_BATCH: &str = "/v1/workload/batch";
/// Re-attestation path (a node whose SVID expired proves itself with its attestation key).
pub const PATH_REATTEST: &str = "/v1/reattest";
/// How far a re-attestation timestamp may be from the CA's clock, seconds.
pub const REATTEST_SKEW_SECS: i64 = 120;
/// Registration entries path.
pub const PATH_ENTRIES: &str = "/v1/entries";
/// Largest request body accepted, bytes.
pub const MAX_BODY: usize = 256 * 1024;
/// Most CSRs in one batch.
pub const MAX_BATCH: usize = 128;
/// The path of the CA's own SPIFFE ID within the trust domain.
pub const CA_ID_PATH: &str = "/meshedge/ca";

/// First enrollment of a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The single-use join token.
    pub token: String,
    /// PEM CSR for `spiffe://<td>/node/<node>`.
    pub csr: String,
    /// Requested lifetime, seconds.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Base64 of the node's long-lived P-256 attestation public key (uncompressed point),
    /// registered for re-attestation after an outage longer than the SVID lifetime.
    #[serde(default)]
    pub attestation_key: Option<String>,
}

/// Re-attestation of an enrolled node whose SVID may have expired.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReattestRequest {
    /// The node name.
    pub node: String,
    /// PEM CSR for `spiffe://<td>/node/<node>`.
    pub csr: String,
    /// Unix seconds when the request was made.
    pub timestamp: i64,
    /// Random hex, never reused.
    pub nonce: String,
    /// Base64 ECDSA P-256 SHA-256 (ASN.1) signature of [`reattest_message`].
    pub signature: String,
}

/// The bytes a re-attestation signs: domain tag, node, timestamp, nonce and the CSR's hash.
pub fn reattest_message(node: &str, timestamp: i64, nonce: &str, csr_pem: &str) -> Vec<u8> {
    let digest = ring::digest::digest(&ring::digest::SHA256, csr_pem.as_bytes());
    format!(
        "meshedge-reattest-v1\n{node}\n{timestamp}\n{nonce}\n{}",
        hex::encode(digest.as_ref())
    )
    .into_bytes()
}

/// A CSR, for renewal or a workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsrRequest {
    /// PEM CSR.
    pub csr: String,
    /// Requested lifetime, seconds.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// Several workload CSRs in one round trip.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The CSRs.
    pub csrs: Vec<CsrRequest>,
}

/// An issued SVID.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SvidResponse {
    /// The SPIFFE ID.
    pub spiffe_id: String,
    /// Leaf then intermediate, PEM.
    pub chain_pem: String,
    /// Trust bundle, PEM.
    pub bundle_pem: String,
    /// Serial, hex.
    pub serial: String,
    /// Expiry, unix seconds.
    pub not_after: i64,
}

/// One result of a batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BatchItem {
    /// Issued.
    Ok(SvidResponse),
    /// Refused.
    Err(ApiError),
}

/// Results of a batch, in request order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchResponse {
    /// One per CSR.
    pub results: Vec<BatchItem>,
}

/// An error answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code, e.g. `bad_csr`, `token_used`, `not_registered`.
    pub code: String,
    /// Human-readable reason.
    pub message: String,
}
