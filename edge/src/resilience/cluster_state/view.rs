//! The serializable views of [`ClusterPolicy`](super::ClusterPolicy): `/clusters` JSON
//! and dashboard events.

use std::time::Duration;

use serde::Serialize;

use crate::resilience::balance::{Distribution, EndpointLoad};
use crate::resilience::breaker::BreakerUsage;
use crate::resilience::outlier::{EjectionTarget, Event, OutlierStatus};
use crate::resilience::timeout::LatencySummary;
use crate::resilience::{EndpointId, Tier, Zone};

/// A change of an endpoint's or zone's traffic eligibility, for the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum PolicyEvent {
    /// An endpoint was ejected.
    Ejected {
        /// The endpoint.
        endpoint: EndpointId,
        /// The `EjectionReason` label.
        reason: &'static str,
        /// For how long, milliseconds.
        duration_ms: u64,
    },
    /// A zone was drained.
    ZoneDrained {
        /// The zone.
        zone: Zone,
        /// For how long, milliseconds.
        duration_ms: u64,
    },
    /// An endpoint's ejection ended.
    Unejected {
        /// The endpoint.
        endpoint: EndpointId,
    },
    /// A zone's drain ended.
    ZoneRestored {
        /// The zone.
        zone: Zone,
    },
    /// Active health checks changed an endpoint's verdict.
    Health {
        /// The endpoint.
        endpoint: EndpointId,
        /// The new verdict.
        healthy: bool,
    },
}

/// One endpoint in `/clusters`.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointView {
    /// Address.
    pub endpoint: EndpointId,
    /// Zone.
    pub zone: Zone,
    /// SRV priority.
    pub tier: Tier,
    /// SRV weight.
    pub weight: u32,
    /// Gets traffic (healthy, not ejected, zone not drained).
    pub available: bool,
    /// The last active health verdict.
    pub health_check_healthy: bool,
    /// Outlier state.
    pub outlier: Option<OutlierStatus>,
    /// In-flight tries and latency.
    pub load: Option<EndpointLoad>,
}

/// A recent event with its age.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    /// Milliseconds ago.
    pub ago_ms: u64,
    /// The event.
    #[serde(flatten)]
    pub event: PolicyEvent,
}

/// The `/clusters` view of one cluster's policy state.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSnapshot {
    /// Cluster name.
    pub cluster: String,
    /// The gateway's zone.
    pub local_zone: Option<Zone>,
    /// Traffic plan over tiers and zones.
    pub distribution: Distribution,
    /// Endpoints.
    pub endpoints: Vec<EndpointView>,
    /// Circuit-breaker usage.
    pub circuit_breaker: BreakerUsage,
    /// Retry budget use.
    pub retry_budget: BudgetView,
    /// Recent try latency.
    pub latency: LatencySummary,
    /// Ejections refused by the cap since start.
    pub ejections_overflow: u64,
    /// Recent events, newest first.
    pub events: Vec<EventView>,
}

/// Retry budget use.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BudgetView {
    /// Client requests active.
    pub active_requests: u32,
    /// Retries and hedges in flight.
    pub retries_in_flight: u32,
    /// Retries allowed in flight now.
    pub limit: u32,
}

/// Milliseconds, saturating.
pub(super) fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl From<Event> for PolicyEvent {
    fn from(e: Event) -> Self {
        match e {
            Event::Ejected(ej) => match ej.target {
                EjectionTarget::Endpoint(endpoint) => PolicyEvent::Ejected {
                    endpoint,
                    reason: ej.reason.as_str(),
                    duration_ms: millis(ej.duration),
                },
                EjectionTarget::Zone(zone) => PolicyEvent::ZoneDrained {
                    zone,
                    duration_ms: millis(ej.duration),
                },
            },
            Event::Unejected(endpoint) => PolicyEvent::Unejected { endpoint },
            Event::ZoneRestored(zone) => PolicyEvent::ZoneRestored { zone },
        }
    }
}
