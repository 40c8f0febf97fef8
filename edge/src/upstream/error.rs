//! Why an upstream call failed: the coarse class retries and outlier detection act on
//! ([`FailureKind`]), a connection's failure ([`ConnectError`]) and a call's
//! ([`UpstreamError`]).

use std::error::Error as StdError;
use std::net::SocketAddr;

use meshedge_ca::tls::AllowedIds;
use meshedge_ca::SpiffeId;

use super::BoxError;
use crate::resilience::breaker::CircuitOpen;

/// Why an upstream call failed, coarse enough for retry and outlier decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// TCP connect refused, unreachable or timed out.
    Connect,
    /// TLS handshake failed (not an identity mismatch).
    Tls,
    /// The upstream's SPIFFE ID is not allowed by the cluster.
    Identity,
    /// No response head in time.
    Timeout,
    /// The connection broke or the peer spoke bad HTTP.
    Protocol,
    /// Not sent: the gateway's own SVID has expired (the CA is unreachable and rotation
    /// failed). Not the endpoint's fault.
    OwnSvidExpired,
    /// Not sent: the cluster's circuit breaker refused a new connection (its
    /// `max_connections` or `max_pending_requests` is reached).
    CircuitOpen,
}

impl FailureKind {
    /// The `reason` label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Identity => "identity",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
            Self::OwnSvidExpired => "own_svid_expired",
            Self::CircuitOpen => "circuit_open",
        }
    }

    /// True when the request provably never reached the upstream application.
    pub fn is_never_sent(&self) -> bool {
        matches!(
            self,
            Self::Connect | Self::Tls | Self::Identity | Self::OwnSvidExpired | Self::CircuitOpen
        )
    }
}

/// Failure to open a connection to an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP failed.
    #[error("tcp connect to {addr}")]
    Tcp {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TCP + TLS took longer than the connect timeout.
    #[error("connect to {addr} timed out")]
    Timeout {
        /// The endpoint.
        addr: SocketAddr,
    },
    /// The TLS handshake failed.
    #[error("tls handshake with {addr}")]
    Tls {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The upstream presented a valid SVID with an ID the cluster does not allow.
    #[error("{addr} presented {presented}, cluster allows {allowed:?}")]
    IdentityMismatch {
        /// The endpoint.
        addr: SocketAddr,
        /// What it presented.
        presented: SpiffeId,
        /// What the cluster allows.
        allowed: AllowedIds,
    },
    /// The gateway's own SVID expired; no connection was attempted.
    #[error("own SVID expired at {not_after}; not connecting to {addr} with it")]
    OwnSvidExpired {
        /// The endpoint.
        addr: SocketAddr,
        /// When the SVID expired.
        not_after: time::OffsetDateTime,
    },
    /// The cluster's circuit breaker refused the connection.
    #[error("cluster circuit breaker: {open} (connecting to {addr})")]
    CircuitOpen {
        /// The endpoint.
        addr: SocketAddr,
        /// Which limit.
        open: CircuitOpen,
    },
    /// The URI handed to the connector has no `IP:PORT` authority (a bug).
    #[error("upstream uri {uri} has no IP:PORT authority")]
    BadUri {
        /// The URI.
        uri: String,
    },
}

impl ConnectError {
    /// The failure class.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Tcp { .. } | Self::Timeout { .. } | Self::BadUri { .. } => FailureKind::Connect,
            Self::Tls { .. } => FailureKind::Tls,
            Self::IdentityMismatch { .. } => FailureKind::Identity,
            Self::OwnSvidExpired { .. } => FailureKind::OwnSvidExpired,
            Self::CircuitOpen { .. } => FailureKind::CircuitOpen,
        }
    }
}

/// Why a call to an endpoint failed.
#[derive(Debug, thiserror::Error)]
#[error("upstream call to {addr} failed ({})", kind.as_str())]
pub struct UpstreamError {
    /// The endpoint.
    pub addr: SocketAddr,
    /// The failure class.
    pub kind: FailureKind,
    /// The underlying error.
    #[source]
    pub source: BoxError,
}

impl UpstreamError {
    /// True when a retry to another endpoint is safe for any request (never sent).
    pub fn is_never_sent(&self) -> bool {
        self.kind.is_never_sent()
    }
}

/// The first error of type `T` in `e`'s source chain.
pub fn find_cause<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

/// An error and its causes, one line (`a: b: c`).
pub fn error_chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}
