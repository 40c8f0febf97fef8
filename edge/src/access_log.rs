//! The access log: one JSON line per request, written through a dedicated tracing
//! dispatcher (tracing-subscriber's JSON formatter) to stdout, stderr or a file, so it
//! never mixes with the diagnostic log's format.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::Dispatch;

use crate::config::AccessLogConfig;

/// Where access-log lines go.
#[derive(Clone)]
pub struct AccessLog {
    dispatch: Option<Dispatch>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("enabled", &self.dispatch.is_some())
            .finish()
    }
}

/// What one access-log line says.
#[derive(Debug, Clone, Default)]
pub struct AccessEntry {
    /// `x-request-id`.
    pub request_id: String,
    /// Client address.
    pub client: Option<SocketAddr>,
    /// `h1`, `h2`, `h3`.
    pub protocol: &'static str,
    /// Method.
    pub method: String,
    /// Host (normalised).
    pub host: String,
    /// Path and query as received.
    pub path: String,
    /// Route name, empty when none matched.
    pub route: Arc<str>,
    /// Cluster name, empty when none.
    pub cluster: Arc<str>,
    /// Endpoint called, empty when none.
    pub upstream: String,
    /// Status sent to the client.
    pub status: u16,
    /// Why the gateway answered itself (`no_route`, `identity`, `timeout`, ...), or empty.
    pub error: &'static str,
    /// Request body bytes declared by the client (content-length), when known.
    pub request_bytes: Option<u64>,
    /// Response body bytes sent.
    pub response_bytes: u64,
    /// Time until the response head.
    pub upstream_duration: Option<Duration>,
    /// Time until the response body ended.
    pub duration: Duration,
}

impl AccessLog {
    /// An access log as configured; fails when the file cannot be opened.
    pub fn open(cfg: &AccessLogConfig) -> std::io::Result<Self> {
        let builder = || {
            tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_target(false)
                .with_level(false)
        };
        let dispatch = match cfg {
            AccessLogConfig::Off => None,
            AccessLogConfig::Stdout => Some(Dispatch::new(
                builder().with_writer(std::io::stdout).finish(),
            )),
            AccessLogConfig::Stderr => Some(Dispatch::new(
                builder().with_writer(std::io::stderr).finish(),
            )),
            AccessLogConfig::File(path) => {
                let file = OpenOptions::new().create(true).append(true).open(path)?;
                Some(Dispatch::new(
                    builder().with_writer(Mutex::new(file)).finish(),
                ))
            }
        };
        Ok(Self { dispatch })
    }

    /// Whether lines are written at all (the request path skips building them otherwise).
    pub fn enabled(&self) -> bool {
        self.dispatch.is_some()
    }

    /// Writes one line.
    pub fn write(&self, e: &AccessEntry) {
        let Some(d) = &self.dispatch else { return };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::dispatcher::with_default(d, || {
            tracing::info!(
                request_id = %e.request_id,
                client = %e.client.map(|c| c.ip().to_string()).unwrap_or_default(),
                protocol = e.protocol,
                method = %e.method,
                host = %e.host,
                path = %e.path,
                route = %e.route,
                cluster = %e.cluster,
                upstream = %e.upstream,
                status = e.status,
                error = e.error,
                request_bytes = e.request_bytes,
                response_bytes = e.response_bytes,
                upstream_ms = e.upstream_duration.map(ms),
                duration_ms = ms(e.duration),
            );
        });
    }
}
