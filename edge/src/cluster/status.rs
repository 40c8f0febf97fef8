//! The `GET /clusters` view of a cluster: the per-endpoint fields tools read (address,
//! zone, weight, priority, health, ejected, in_flight, requests, failures) plus the
//! policy's snapshot (distribution over tiers and zones, panic mode, breaker, retry budget,
//! latency, recent events).

use std::net::SocketAddr;

use serde::Serialize;

use super::{EndpointTable, Shared};
use crate::resilience::cluster_state::ClusterSnapshot;
use crate::resilience::EndpointId;

/// A cluster as shown by `GET /clusters`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// Name.
    pub name: String,
    /// Source kind.
    pub source: &'static str,
    /// True when the source serves a last good answer.
    pub stale: bool,
    /// The gateway's zone, preferred by the balancer.
    pub local_zone: Option<String>,
    /// Some tier routes to all endpoints regardless of health (panic mode).
    pub panic: bool,
    /// Endpoints.
    pub endpoints: Vec<EndpointStatus>,
    /// The resilience policy's view (distribution, breaker, retry budget, latency, events).
    pub resilience: ClusterSnapshot,
}

/// An endpoint as shown by `GET /clusters`.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    /// Address.
    pub address: SocketAddr,
    /// Zone.
    pub zone: Option<String>,
    /// Weight.
    pub weight: u32,
    /// Tier.
    pub priority: u16,
    /// Active health-check state: `healthy`, `unhealthy` or `unknown` (checks off).
    pub health: &'static str,
    /// Ejected by outlier detection.
    pub ejected: bool,
    /// Receives traffic (healthy, not ejected, zone not drained).
    pub available: bool,
    /// Peak-EWMA latency in milliseconds, when known.
    pub ewma_ms: Option<f64>,
    /// Requests in flight (load).
    pub in_flight: u64,
    /// Requests sent.
    pub requests: u64,
    /// Failed requests (5xx, connect failure, reset, timeout).
    pub failures: u64,
}

pub(super) fn build(
    shared: &Shared,
    table: &EndpointTable,
    snap: ClusterSnapshot,
) -> ClusterStatus {
    let checks = shared.config.resilience.health_check.enabled;
    let endpoints = table
        .states
        .iter()
        .map(|s| {
            let view = snap
                .endpoints
                .iter()
                .find(|v| v.endpoint == EndpointId(s.endpoint.address));
            let health = match view {
                _ if !checks => "unknown",
                Some(v) if !v.health_check_healthy => "unhealthy",
                Some(_) => "healthy",
                None => "unknown",
            };
            EndpointStatus {
                address: s.endpoint.address,
                zone: s.endpoint.zone.clone(),
                weight: s.endpoint.weight,
                priority: s.endpoint.priority,
                health,
                ejected: view
                    .and_then(|v| v.outlier.as_ref())
                    .is_some_and(|o| o.ejected),
                available: view.is_some_and(|v| v.available),
                ewma_ms: view.and_then(|v| v.load).map(|l| l.ewma_ms),
                in_flight: s.in_flight(),
                requests: s.requests(),
                failures: s.failures(),
            }
        })
        .collect();
    ClusterStatus {
        name: shared.config.name.clone(),
        source: shared.source.kind(),
        stale: table.stale,
        local_zone: shared.config.local_zone.clone(),
        panic: snap
            .distribution
            .tiers
            .iter()
            .any(|t| t.panic && t.load > 0.0),
        endpoints,
        resilience: snap,
    }
}
