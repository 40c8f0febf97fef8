//! Endpoints of a cluster and where they come from. An [`EndpointSource`] hands out
//! snapshots; the static source never changes, a DNS-SD source replaces its snapshot when
//! the answer changes (and keeps the last good one when the resolver fails).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::config::StaticEndpoint;

/// An upstream instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    /// Address.
    pub address: SocketAddr,
    /// Zone, when known.
    pub zone: Option<String>,
    /// Balancing weight.
    pub weight: u32,
    /// Failover tier (lower first).
    pub priority: u16,
    /// Health-check path announced by the instance (DNS-SD TXT `health=`).
    pub health: Option<String>,
}

impl From<&StaticEndpoint> for Endpoint {
    fn from(e: &StaticEndpoint) -> Self {
        Self {
            address: e.address,
            zone: e.zone.clone(),
            weight: e.weight,
            priority: e.priority,
            health: None,
        }
    }
}

/// One view of a cluster's endpoints.
#[derive(Debug, Clone)]
pub struct EndpointSnapshot {
    /// Increases whenever the set changes.
    pub version: u64,
    /// The endpoints.
    pub endpoints: Arc<[Endpoint]>,
    /// True when the source could not refresh and this is the last good answer.
    pub stale: bool,
}

/// Where a cluster's endpoints come from.
pub trait EndpointSource: Send + Sync + fmt::Debug {
    /// The current endpoints (cheap: called on every pick).
    fn snapshot(&self) -> EndpointSnapshot;
    /// A short name of the source kind for `/clusters` (`static`, `dns_sd`).
    fn kind(&self) -> &'static str;
}

/// A fixed list from the config.
#[derive(Debug)]
pub struct StaticEndpoints {
    snapshot: EndpointSnapshot,
}

impl StaticEndpoints {
    /// A source that always returns `endpoints`.
    pub fn new(endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        static VERSION: AtomicU64 = AtomicU64::new(1);
        Self {
            snapshot: EndpointSnapshot {
                version: VERSION.fetch_add(1, Ordering::Relaxed),
                endpoints: endpoints.into_iter().collect(),
                stale: false,
            },
        }
    }
}

impl EndpointSource for StaticEndpoints {
    fn snapshot(&self) -> EndpointSnapshot {
        self.snapshot.clone()
    }

    fn kind(&self) -> &'static str {
        "static"
    }
}

/// Live counters of one endpoint, shared by picks and reports.
#[derive(Debug)]
pub struct EndpointState {
    /// The endpoint.
    pub endpoint: Endpoint,
    in_flight: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
}

impl EndpointState {
    /// Fresh counters for `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Requests now in flight to it.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests sent to it so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Failed requests so far (gateway failures and 5xx).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub(crate) fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finish(&self, failed: bool) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}
