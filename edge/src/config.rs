//! Configuration: TOML text -> [`raw::RawConfig`] (serde, unknown keys denied) ->
//! [`validate`] -> [`Config`], a typed config without optional soup. `meshedge edge --check`
//! and every reload take this path; errors name the key (`clusters.pay.endpoints[1]: ...`).
//! Field reference: docs/edge-config.md.

pub mod raw;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshedge_ca::tls::AllowedIds;
use serde::Serialize;

use crate::route::RouteTable;

pub use validate::validate;

/// A validated gateway configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub source: PathBuf,
    /// `[gateway]`.
    pub gateway: GatewayConfig,
    /// `[listener]`.
    pub listener: ListenerConfig,
    /// `[redirect]`.
    pub redirect: Option<RedirectConfig>,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[identity]`.
    pub identity: IdentityConfig,
    /// `[access_log]`.
    pub access_log: AccessLogConfig,
    /// Clusters by name.
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// Routes in order.
    pub routes: RouteTable,
    /// The raw form, for `GET /config` (redacted there).
    pub raw: raw::RawConfig,
}

/// `[gateway]`.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Name.
    pub name: String,
    /// Own zone.
    pub zone: Option<String>,
    /// Drain time after SIGTERM.
    pub drain_timeout: Duration,
    /// File-change poll interval.
    pub watch_interval: Duration,
}

/// `[listener]`.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// TCP and UDP address.
    pub address: SocketAddr,
    /// HTTP/3 on.
    pub http3: bool,
    /// `Alt-Svc` max-age.
    pub alt_svc_max_age: Duration,
    /// Serving certificates.
    pub certificates: Vec<CertificateConfig>,
    /// Limits against bad clients.
    pub limits: ListenerLimits,
}

/// Limits applied to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Request-head read timeout (HTTP/1.1): 408.
    pub header_read_timeout: Duration,
    /// Request-head size: 431.
    pub max_header_bytes: u32,
    /// Default body limit: 413.
    pub max_request_body_bytes: u64,
    /// Concurrent TCP connections.
    pub max_connections: usize,
    /// HTTP/2 concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 pending-accept reset streams (rapid reset).
    pub h2_max_pending_accept_reset_streams: usize,
    /// HTTP/2 locally reset streams before GOAWAY.
    pub h2_max_local_error_reset_streams: usize,
    /// Concurrent QUIC connections.
    pub quic_max_connections: usize,
    /// Concurrent HTTP/3 request streams per QUIC connection.
    pub quic_max_concurrent_streams: u32,
}

/// A serving certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateConfig {
    /// PEM chain path.
    pub cert: PathBuf,
    /// PEM key path.
    pub key: PathBuf,
    /// Names it serves (empty: the names in the certificate).
    pub server_names: Vec<crate::route::HostMatch>,
}

/// `[redirect]`.
#[derive(Debug, Clone, Copy)]
pub struct RedirectConfig {
    /// Plain-HTTP address.
    pub address: SocketAddr,
    /// Port put in `Location`.
    pub https_port: u16,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Admin address.
    pub address: SocketAddr,
    /// The fleet status file served at `GET /fleet` (written by `meshedge fleet`).
    pub fleet_status_file: Option<std::path::PathBuf>,
}

/// `[identity]`: where the gateway's SVID and trust bundle come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityConfig {
    /// PEM files, reloaded when they change.
    Files {
        /// Chain.
        cert: PathBuf,
        /// Key.
        key: PathBuf,
        /// Trust bundle.
        bundle: PathBuf,
    },
    /// The SPIFFE Workload API of the node agent, following rotations.
    WorkloadApi {
        /// The socket path.
        socket: PathBuf,
    },
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogConfig {
    /// Not written.
    Off,
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Appended to a file.
    File(PathBuf),
}

/// HTTP version spoken to a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// ALPN chooses (h2 preferred).
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only.
    Http2,
}

/// A static endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticEndpoint {
    /// Address.
    pub address: SocketAddr,
    /// Zone.
    pub zone: Option<String>,
    /// Weight.
    pub weight: u32,
    /// Failover tier.
    pub priority: u16,
}

/// Where a cluster's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointsConfig {
    /// A fixed list.
    Static(Vec<StaticEndpoint>),
    /// DNS-SD.
    DnsSd {
        /// Service name.
        service: String,
        /// DNS servers; system resolver when empty.
        resolvers: Vec<SocketAddr>,
        /// Refresh interval.
        refresh: Duration,
    },
}

/// What an upstream's certificate must name, besides chaining to the trust bundle.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamIdentity {
    /// A SPIFFE ID these allow (`allowed_ids` / `allowed_id_prefixes`): mesh upstreams.
    Spiffe(AllowedIds),
    /// A DNS name the certificate is valid for (`verify_dns_name`): upstreams outside the
    /// mesh, checked like a browser checks a server.
    DnsName(String),
}

/// `[clusters.<name>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Name.
    pub name: String,
    /// Endpoint source.
    pub endpoints: EndpointsConfig,
    /// How the upstreams' certificates are checked beyond the chain to the bundle.
    pub upstream_identity: UpstreamIdentity,
    /// HTTP version.
    pub protocol: UpstreamProtocol,
    /// SNI.
    pub server_name: Option<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Default whole-request timeout.
    pub request_timeout: Duration,
    /// Pool idle timeout.
    pub pool_idle_timeout: Duration,
    /// Idle connections per endpoint.
    pub pool_max_idle_per_endpoint: usize,
    /// Balancing, outlier detection, health checks, retries and circuit breaker.
    pub resilience: crate::resilience::config::ClusterResilience,
    /// The gateway's own zone (`gateway.zone`), which zone-aware balancing prefers.
    pub local_zone: Option<String>,
}

/// Whether validation checks that referenced files exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCheck {
    /// Every certificate, key and bundle path must name a file (`--check`, reload).
    Exist,
    /// Paths are only resolved (tests of example configs written for other machines).
    Skip,
}

/// One problem found in a config, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `clusters.payments.endpoints[1]`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, or a key or type the schema does not know.
    #[error("{path}:{line}: {key}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Key path.
        key: String,
        /// Parser message.
        message: String,
    },
    /// Parsed, but values are wrong (all problems, in file order).
    #[error("{path}: {} problem(s):\n  {}", problems.len(), problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems (one for read and syntax errors).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            Self::Read { path, source } => vec![Problem {
                key: path.display().to_string(),
                message: source.to_string(),
            }],
            Self::Syntax { key, message, .. } => vec![Problem {
                key: key.clone(),
                message: message.clone(),
            }],
            Self::Invalid { problems, .. } => problems.clone(),
        }
    }
}

/// Parses TOML `text` into the raw schema; errors carry the key path and line.
pub fn parse_raw(text: &str, path: &Path) -> Result<raw::RawConfig, ConfigError> {
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.map_or(0, |s| {
            text[..s.start.min(text.len())].matches('\n').count() + 1
        })
    };
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        line: line_of(e.span()),
        key: "(file)".into(),
        message: e.message().trim().to_owned(),
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        ConfigError::Syntax {
            path: path.to_owned(),
            line: line_of(inner.span()),
            key,
            message: inner.message().trim().to_owned(),
        }
    })
}

/// Parses and validates `text` as if read from `path` (relative file paths are resolved
/// against its directory); checks that referenced files exist.
pub fn parse(text: &str, path: &Path, files: FileCheck) -> Result<Config, ConfigError> {
    let raw = parse_raw(text, path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    validate(raw, path, base, files).map_err(|problems| ConfigError::Invalid {
        path: path.to_owned(),
        problems,
    })
}

/// Reads, parses and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path, FileCheck::Exist)
}

/// The config as JSON with private-key paths replaced by `"[redacted]"`.
pub fn redacted_json(config: &Config) -> serde_json::Value {
    let mut raw = config.raw.clone();
    raw.identity.key = raw.identity.key.map(|_| "[redacted]".into());
    for c in &mut raw.listener.certificates {
        c.key = "[redacted]".into();
    }
    serde_json::to_value(&raw).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests;
