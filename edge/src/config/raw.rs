//! The TOML schema as written by users: every table denies unknown keys, and values stay
//! strings where validation must name the key of a bad value (addresses, durations, IDs).

use std::collections::BTreeMap;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::resilience::config::{
    BalancerConfig, CircuitBreakerConfig, ClusterResilience, HealthCheckConfig, OutlierConfig,
    RateLimitConfig, RetryConfig,
};

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[gateway]`: name, zone, drain and watch settings.
    #[serde(default)]
    pub gateway: RawGateway,
    /// `[listener]`: the HTTPS (and HTTP/3) listener.
    pub listener: RawListener,
    /// `[redirect]`: an optional plain-HTTP listener that redirects to HTTPS.
    #[serde(default)]
    pub redirect: Option<RawRedirect>,
    /// `[admin]`: the admin listener.
    #[serde(default)]
    pub admin: RawAdmin,
    /// `[identity]`: the gateway's own SVID for mTLS to upstreams.
    pub identity: RawIdentity,
    /// `[access_log]`.
    #[serde(default)]
    pub access_log: RawAccessLog,
    /// `[clusters.<name>]`.
    #[serde(default)]
    pub clusters: BTreeMap<String, RawCluster>,
    /// `[[routes]]`, matched in order.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// Name used in logs and metrics.
    #[serde(default = "default_name")]
    pub name: String,
    /// The gateway's own zone.
    #[serde(default)]
    pub zone: Option<String>,
    /// How long in-flight requests may run after SIGTERM.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: String,
    /// How often config and certificate files are checked for changes.
    #[serde(default = "default_watch_interval")]
    pub watch_interval: String,
}

impl Default for RawGateway {
    fn default() -> Self {
        Self {
            name: default_name(),
            zone: None,
            drain_timeout: default_drain_timeout(),
            watch_interval: default_watch_interval(),
        }
    }
}

/// `[listener]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// `IP:PORT` for TCP (TLS) and UDP (HTTP/3).
    pub address: String,
    /// Serve HTTP/3 on the same port (UDP).
    #[serde(default = "yes")]
    pub http3: bool,
    /// `max-age` of the `Alt-Svc` header advertising HTTP/3.
    #[serde(default = "default_alt_svc_max_age")]
    pub alt_svc_max_age: String,
    /// Serving certificates; SNI picks one, the first is the default.
    pub certificates: Vec<RawCertificate>,
    /// Time a client has to send a complete request head (HTTP/1.1).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: String,
    /// Largest request head in bytes (HTTP/1.1 buffer; HTTP/2 header list).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: u32,
    /// Largest request body in bytes, unless a route says otherwise.
    #[serde(default = "default_max_request_body_bytes")]
    pub max_request_body_bytes: u64,
    /// Most concurrent TCP connections; more wait in the accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// HTTP/2: concurrent streams per connection.
    #[serde(default = "default_h2_max_concurrent_streams")]
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: streams reset by the client before they were accepted (rapid reset).
    #[serde(default = "default_h2_max_pending_accept_reset_streams")]
    pub h2_max_pending_accept_reset_streams: usize,
    /// HTTP/2: streams the gateway may reset for protocol errors before it sends GOAWAY.
    #[serde(default = "default_h2_max_local_error_reset_streams")]
    pub h2_max_local_error_reset_streams: usize,
    /// HTTP/3: most concurrent QUIC connections.
    #[serde(default = "default_max_connections")]
    pub quic_max_connections: usize,
    /// HTTP/3: concurrent bidirectional streams per QUIC connection.
    #[serde(default = "default_h2_max_concurrent_streams")]
    pub quic_max_concurrent_streams: u32,
}

/// One `[[listener.certificates]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM chain, leaf first.
    pub cert: String,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: String,
    /// Host names (exact or `*.suffix`) served with it; empty = names in the certificate.
    #[serde(default)]
    pub server_names: Vec<String>,
}

/// `[redirect]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    /// `IP:PORT` of the plain-HTTP listener.
    pub address: String,
    /// Port in the `Location` header; the HTTPS listener's port when unset.
    #[serde(default)]
    pub https_port: Option<u16>,
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `IP:PORT` of the admin listener (plain HTTP; keep it on loopback).
    #[serde(default = "default_admin_address")]
    pub address: String,
    /// The fleet status file the supervising agent writes, served at `GET /fleet`.
    #[serde(default)]
    pub fleet_status_file: Option<std::path::PathBuf>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            address: default_admin_address(),
            fleet_status_file: None,
        }
    }
}

/// `[identity]`: files, or the Workload API socket.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// The gateway's X509-SVID chain, PEM (reloaded when it changes).
    #[serde(default)]
    pub cert: Option<String>,
    /// Its private key, PEM.
    #[serde(default)]
    pub key: Option<String>,
    /// The trust bundle upstream SVIDs must chain to, PEM.
    #[serde(default)]
    pub bundle: Option<String>,
    /// Instead of files: the node agent's Workload API, `unix:///path`.
    #[serde(default)]
    pub workload_api_socket: Option<String>,
}

/// `[access_log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// Write one JSON line per request.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `stdout`, `stderr` or a file path (appended).
    #[serde(default = "default_access_log_output")]
    pub output: String,
}

impl Default for RawAccessLog {
    fn default() -> Self {
        Self {
            enabled: true,
            output: default_access_log_output(),
        }
    }
}

/// `[clusters.<name>]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// Static endpoints: `"IP:PORT"` or `{ address, zone, weight, priority }`.
    #[serde(default)]
    pub endpoints: Vec<RawEndpoint>,
    /// Endpoints from DNS-SD instead of a static list.
    #[serde(default)]
    pub dns_sd: Option<RawDnsSd>,
    /// Exact SPIFFE IDs the upstreams may present.
    #[serde(default)]
    pub allowed_ids: Vec<String>,
    /// SPIFFE ID prefixes (segment-wise) the upstreams may present.
    #[serde(default)]
    pub allowed_id_prefixes: Vec<String>,
    /// Instead of SPIFFE IDs: the DNS name the upstreams' certificates must be valid for
    /// (standard WebPKI name check against the trust bundle), for upstreams outside the mesh.
    #[serde(default)]
    pub verify_dns_name: Option<String>,
    /// `auto` (ALPN), `http1` or `http2`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// TLS server name sent to upstreams (SNI); the endpoint's IP when unset.
    #[serde(default)]
    pub server_name: Option<String>,
    /// TCP + TLS connect timeout.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    /// Whole-request timeout unless the route sets one.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: String,
    /// Idle pooled connections are closed after this long.
    #[serde(default = "default_pool_idle_timeout")]
    pub pool_idle_timeout: String,
    /// Idle pooled connections kept per endpoint.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle_per_endpoint: usize,
    /// `[clusters.<name>.balancer]`: zone-aware power-of-two-choices.
    #[serde(default)]
    pub balancer: BalancerConfig,
    /// `[clusters.<name>.outlier]`: passive outlier detection and zone drain.
    #[serde(default)]
    pub outlier: OutlierConfig,
    /// `[clusters.<name>.health_check]`: active health checks.
    #[serde(default)]
    pub health_check: HealthCheckConfig,
    /// `[clusters.<name>.retry]`: retries, retry budget, hedging, per-try timeouts.
    #[serde(default)]
    pub retry: RetryConfig,
    /// `[clusters.<name>.circuit_breaker]`: fast 503s over these limits.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
}

impl RawCluster {
    /// The resilience tables of the cluster as one value.
    pub fn resilience(&self) -> ClusterResilience {
        ClusterResilience {
            balancer: self.balancer.clone(),
            outlier: self.outlier.clone(),
            health_check: self.health_check.clone(),
            retry: self.retry.clone(),
            circuit_breaker: self.circuit_breaker.clone(),
        }
    }
}

/// A static endpoint: a bare `"IP:PORT"` string or a table.
#[derive(Debug, Clone, Serialize)]
pub struct RawEndpoint {
    /// `IP:PORT`.
    pub address: String,
    /// Zone of the endpoint.
    pub zone: Option<String>,
    /// Balancing weight.
    pub weight: u32,
    /// Failover tier (lower first), like an SRV priority.
    pub priority: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpointTable {
    address: String,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    priority: u16,
}

impl<'de> Deserialize<'de> for RawEndpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEndpoint;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"IP:PORT\" or { address = \"IP:PORT\", zone, weight, priority }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawEndpoint, E> {
                Ok(RawEndpoint {
                    address: s.to_owned(),
                    zone: None,
                    weight: default_weight(),
                    priority: 0,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawEndpoint, A::Error> {
                let t = RawEndpointTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawEndpoint {
                    address: t.address,
                    zone: t.zone,
                    weight: t.weight,
                    priority: t.priority,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `[clusters.<name>.dns_sd]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnsSd {
    /// Service name, e.g. `_payments._tcp.example.org`.
    pub service: String,
    /// DNS servers (`IP:PORT`); the system resolver when empty.
    #[serde(default)]
    pub resolvers: Vec<String>,
    /// How often the answer is refreshed.
    #[serde(default = "default_dns_refresh")]
    pub refresh: String,
}

/// One `[[routes]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Name in metrics and logs; `route<N>` when unset.
    #[serde(default)]
    pub name: Option<String>,
    /// What requests the route takes; everything when empty.
    #[serde(default, rename = "match")]
    pub matcher: RawMatch,
    /// The cluster that serves it (or `split`).
    #[serde(default)]
    pub cluster: Option<String>,
    /// Weighted clusters (canary), instead of `cluster`.
    #[serde(default)]
    pub split: Vec<RawSplit>,
    /// Remove the matched `path_prefix` before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Replace the matched `path_prefix` with this before forwarding.
    #[serde(default)]
    pub rewrite_prefix: Option<String>,
    /// Whole-request timeout (overrides the cluster's).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Largest request body (overrides the listener's).
    #[serde(default)]
    pub max_request_body_bytes: Option<u64>,
    /// `[routes.rate_limit]`: token buckets; over the limit -> 429 with `Retry-After`.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

/// `[routes.match]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Host names, exact or `*.suffix`; any host when empty.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path prefix (segment-wise: `/api` matches `/api` and `/api/x`, not `/apix`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Exact path.
    #[serde(default)]
    pub path: Option<String>,
    /// Methods; any when empty.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Headers that must be present with exactly these values (`"*"`: present).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// One `[[routes.split]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplit {
    /// Cluster name.
    pub cluster: String,
    /// Relative weight.
    pub weight: u32,
}

fn yes() -> bool {
    true
}
fn default_name() -> String {
    "edge".into()
}
fn default_drain_timeout() -> String {
    "30s".into()
}
fn default_watch_interval() -> String {
    "1s".into()
}
fn default_alt_svc_max_age() -> String {
    "24h".into()
}
fn default_header_read_timeout() -> String {
    "10s".into()
}
fn default_max_header_bytes() -> u32 {
    16 * 1024
}
fn default_max_request_body_bytes() -> u64 {
    10 * 1024 * 1024
}
fn default_max_connections() -> usize {
    10_000
}
fn default_h2_max_concurrent_streams() -> u32 {
    100
}
fn default_h2_max_pending_accept_reset_streams() -> usize {
    20
}
fn default_h2_max_local_error_reset_streams() -> usize {
    256
}
fn default_admin_address() -> String {
    "127.0.0.1:9901".into()
}
fn default_access_log_output() -> String {
    "stderr".into()
}
fn default_protocol() -> String {
    "auto".into()
}
fn default_connect_timeout() -> String {
    "1s".into()
}
fn default_request_timeout() -> String {
    "15s".into()
}
fn default_pool_idle_timeout() -> String {
    "90s".into()
}
fn default_pool_max_idle() -> usize {
    64
}
fn default_weight() -> u32 {
    1
}
fn default_dns_refresh() -> String {
    "5s".into()
}
