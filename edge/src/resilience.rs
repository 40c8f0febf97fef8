//! The policy layer of a cluster: which endpoint a request goes to, when an endpoint or
//! a zone stops receiving traffic, whether a failed try is retried or hedged, and when a
//! request is refused fast (circuit breaker, rate limit).
//!
//! Every policy is a plain state machine: time comes in as a `now:`
//! [`Instant`](tokio::time::Instant) argument and randomness through a caller-supplied
//! [`rand::Rng`], so unit tests drive them with a fake clock and a seeded RNG and the
//! data plane's tests can run on tokio's paused clock. Nothing here does I/O except the
//! thin health-check driver in [`health::probe`], which takes the request as a trait
//! object.
//!
//! - [`balance`]: tiers (SRV priority), zones, power-of-two-choices over peak-EWMA load,
//!   overprovisioning-based spill and failover, panic mode.
//! - [`outlier`]: passive outlier detection (consecutive 5xx / gateway failures,
//!   success-rate, failure-percentage) and zone drain.
//! - [`health`]: the active health-check state machine and its prober.
//! - [`retry`]: retryable outcomes, backoff with full jitter, the retry budget, hedging.
//! - [`breaker`], [`rate_limit`], [`timeout`]: fast 503s, 429s with `Retry-After`, and
//!   latency-aware per-try timeouts.
//! - [`config`]: the TOML tables for all of the above; [`metrics`]: metric names.
//! - [`cluster_state`]: one [`cluster_state::ClusterPolicy`] per cluster combining them
//!   behind `pick()` / `report()` / `snapshot()`.

pub mod balance;
pub mod breaker;
pub mod cluster_state;
pub mod config;
pub mod health;
pub mod metrics;
pub mod outlier;
pub mod rate_limit;
pub mod retry;
pub mod timeout;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;

/// Identifies one endpoint of a cluster: its socket address (a DNS-SD instance resolves to
/// exactly one `target:port`, a static endpoint is one `IP:PORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EndpointId(pub SocketAddr);

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<SocketAddr> for EndpointId {
    fn from(addr: SocketAddr) -> Self {
        Self(addr)
    }
}

/// A zone (TXT `zone=` of a DNS-SD instance, `zone` of a static endpoint). Endpoints
/// without a zone share the unnamed zone [`Zone::unknown`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Zone(Arc<str>);

impl Serialize for Zone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl Zone {
    /// A named zone.
    pub fn new(name: &str) -> Self {
        Self(Arc::from(name))
    }

    /// The zone of endpoints that declare none (displayed as `""`).
    pub fn unknown() -> Self {
        Self(Arc::from(""))
    }

    /// The zone's name (`""` for [`Zone::unknown`]).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A failover tier: the SRV priority of an endpoint (lower is preferred).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Tier(pub u16);

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How one try against an endpoint ended, as the upstream layer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    /// A response head arrived with this status.
    Response {
        /// The HTTP status code.
        status: u16,
    },
    /// TCP or TLS connect failed (refused, unreachable, connect timeout, handshake or
    /// identity failure). Nothing of the request was sent.
    ConnectFailure,
    /// The connection was reset or closed before a response head arrived.
    Reset,
    /// The per-try timeout fired before a response head arrived.
    Timeout,
    /// The try was cancelled by the gateway (the losing half of a hedge, a client that
    /// went away): says nothing about the endpoint.
    Cancelled,
}

impl Outcome {
    /// A response with a status below 500.
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Response { status } if status < 500)
    }

    /// Counts towards Envoy's `consecutive_5xx`: any 5xx response, and the locally
    /// originated failures (connect failure, reset, timeout), which Envoy maps to 5xx
    /// when `split_external_local_origin_errors` is off (its default).
    pub fn is_5xx(self) -> bool {
        match self {
            Outcome::Response { status } => status >= 500,
            Outcome::ConnectFailure | Outcome::Reset | Outcome::Timeout => true,
            Outcome::Cancelled => false,
        }
    }

    /// Counts towards Envoy's `consecutive_gateway_failure`: 502, 503, 504 and the
    /// locally originated failures.
    pub fn is_gateway_failure(self) -> bool {
        match self {
            Outcome::Response { status } => matches!(status, 502..=504),
            Outcome::ConnectFailure | Outcome::Reset | Outcome::Timeout => true,
            Outcome::Cancelled => false,
        }
    }

    /// Whether the outcome carries information about the endpoint (everything except
    /// [`Outcome::Cancelled`]).
    pub fn is_observation(self) -> bool {
        !matches!(self, Outcome::Cancelled)
    }

    /// A short label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Response { status } if status < 500 => "success",
            Outcome::Response { .. } => "5xx",
            Outcome::ConnectFailure => "connect_failure",
            Outcome::Reset => "reset",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers shared by the resilience tests.
    use super::EndpointId;
    use std::net::{Ipv4Addr, SocketAddr};

    /// Endpoint `10.0.0.<n>:8443`.
    pub fn ep(n: u8) -> EndpointId {
        EndpointId(SocketAddr::from((Ipv4Addr::new(10, 0, 0, n), 8443)))
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn outcome_classes() {
        let cases = [
            (Outcome::Response { status: 200 }, true, false, false),
            (Outcome::Response { status: 404 }, true, false, false),
            (Outcome::Response { status: 500 }, false, true, false),
            (Outcome::Response { status: 502 }, false, true, true),
            (Outcome::Response { status: 503 }, false, true, true),
            (Outcome::Response { status: 504 }, false, true, true),
            (Outcome::ConnectFailure, false, true, true),
            (Outcome::Reset, false, true, true),
            (Outcome::Timeout, false, true, true),
            (Outcome::Cancelled, false, false, false),
        ];
        for (outcome, success, five, gateway) in cases {
            assert_eq!(outcome.is_success(), success, "{outcome:?} success");
            assert_eq!(outcome.is_5xx(), five, "{outcome:?} 5xx");
            assert_eq!(outcome.is_gateway_failure(), gateway, "{outcome:?} gateway");
        }
    }
}
