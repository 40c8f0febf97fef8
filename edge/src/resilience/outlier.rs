//! Passive outlier detection, following Envoy's documented algorithm and defaults:
//!
//! - **Consecutive 5xx** (5): any 5xx or locally originated failure (connect failure,
//!   reset, timeout) in a row ejects at once.
//! - **Consecutive gateway failures** (5): 502/503/504 or local failures in a row; a
//!   non-gateway 5xx resets this count (it still counts as a 5xx).
//! - **Success rate**, every `interval` (10s): among endpoints with at least
//!   `success_rate_request_volume` (100) requests in the interval, if there are at least
//!   `success_rate_minimum_hosts` (5), those below `mean - 1.9 x stdev` are ejected.
//! - **Failure percentage**, every interval: among endpoints with at least 50 requests,
//!   if there are at least 5, those failing at >= 85% are ejected.
//!
//! An ejection lasts `base_ejection_time x n` (30s x n), capped at `max_ejection_time`
//! (300s), where `n` counts the endpoint's ejections and goes down by one for each whole
//! interval it spends un-ejected (Envoy's ejection-time backoff). At most
//! `max_ejection_percent` (10%) of the cluster is ejected at once, but always at least
//! one endpoint (when the percentage is not 0); ejections beyond are counted as overflow.
//! Ejections end on time-out, or early when an active health check passes
//! (`uneject_on_health_check`, Envoy's `successful_active_health_check_uneject_host`).
//!
//! On top, [`ZoneDrain`] takes a zone out when its endpoints fail together.

mod zone;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::config::OutlierConfig;
use super::{EndpointId, Outcome, Zone};
pub use zone::ZoneDrain;

/// Why an endpoint or zone was taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EjectionReason {
    /// `consecutive_5xx` reached.
    Consecutive5xx,
    /// `consecutive_gateway_failure` reached.
    ConsecutiveGatewayFailure,
    /// Success rate below the cluster's mean - factor x stdev.
    SuccessRate,
    /// Failure percentage at or above the threshold.
    FailurePercentage,
    /// The whole zone failed together (see [`ZoneDrain`]).
    ZoneFailure,
}

impl EjectionReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Consecutive5xx => "consecutive_5xx",
            Self::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            Self::SuccessRate => "success_rate",
            Self::FailurePercentage => "failure_percentage",
            Self::ZoneFailure => "zone_failure",
        }
    }
}

/// What was taken out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EjectionTarget {
    /// One endpoint.
    Endpoint(EndpointId),
    /// Every endpoint of a zone.
    Zone(Zone),
}

/// An ejection that just happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ejection {
    /// The endpoint or zone.
    pub target: EjectionTarget,
    /// Why.
    pub reason: EjectionReason,
    /// How long it lasts (unless a health check passes first).
    pub duration: Duration,
    /// When it ends.
    #[serde(skip)]
    pub until: Instant,
}

/// Something [`OutlierDetector::tick`] or a health check changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An endpoint was ejected by the interval's statistics.
    Ejected(Ejection),
    /// An endpoint's ejection ended.
    Unejected(EndpointId),
    /// A zone's drain ended.
    ZoneRestored(Zone),
}

/// The outlier state of one endpoint, for `/clusters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OutlierStatus {
    /// Currently ejected.
    pub ejected: bool,
    /// Time left in the ejection, milliseconds.
    pub ejected_for_ms: u64,
    /// The ejection-time multiplier.
    pub ejections: u32,
    /// Current run of 5xx.
    pub consecutive_5xx: u32,
    /// Current run of gateway failures.
    pub consecutive_gateway_failure: u32,
}

#[derive(Debug, Clone)]
struct Host {
    zone: Zone,
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    successes: u64,
    failures: u64,
    ejected_until: Option<Instant>,
    multiplier: u32,
    ejected_this_interval: bool,
    /// The last failure was an answer (a 5xx), which a passing health check does not
    /// disprove: such an ejection runs its time.
    failed_by_answer: bool,
}

/// Passive outlier detection for one cluster.
#[derive(Debug)]
pub struct OutlierDetector {
    config: OutlierConfig,
    hosts: BTreeMap<EndpointId, Host>,
    zones: ZoneDrain,
    next_interval: Option<Instant>,
    overflow: u64,
}

// === impl OutlierDetector ===

impl OutlierDetector {
    /// A detector with no endpoints.
    pub fn new(config: OutlierConfig) -> Self {
        Self {
            config,
            hosts: BTreeMap::new(),
            zones: ZoneDrain::default(),
            next_interval: None,
            overflow: 0,
        }
    }

    /// Replaces the endpoint set; endpoints that stay keep their state.
    pub fn set_endpoints(&mut self, endpoints: impl IntoIterator<Item = (EndpointId, Zone)>) {
        let mut old = std::mem::take(&mut self.hosts);
        for (id, zone) in endpoints {
            let host = old.remove(&id).unwrap_or(Host {
                zone: zone.clone(),
                consecutive_5xx: 0,
                consecutive_gateway: 0,
                successes: 0,
                failures: 0,
                ejected_until: None,
                multiplier: 0,
                failed_by_answer: false,
                ejected_this_interval: false,
            });
            self.hosts.insert(id, Host { zone, ..host });
        }
        let mut sizes: BTreeMap<Zone, usize> = BTreeMap::new();
        for h in self.hosts.values() {
            *sizes.entry(h.zone.clone()).or_default() += 1;
        }
        self.zones.set_sizes(sizes);
    }

    /// Whether `id` is ejected (on its own or with its zone).
    pub fn is_ejected(&self, id: EndpointId) -> bool {
        self.hosts
            .get(&id)
            .is_some_and(|h| h.ejected_until.is_some() || self.zones.is_drained(&h.zone))
    }

    /// Whether `zone` is drained.
    pub fn is_zone_drained(&self, zone: &Zone) -> bool {
        self.zones.is_drained(zone)
    }

    /// Ejections refused because of `max_ejection_percent`, since start.
    pub fn overflow_total(&self) -> u64 {
        self.overflow
    }

    /// The state of `id` at `now`.
    pub fn status(&self, id: EndpointId, now: Instant) -> Option<OutlierStatus> {
        let h = self.hosts.get(&id)?;
        let until = h
            .ejected_until
            .or_else(|| self.zones.drained_until(&h.zone));
        Some(OutlierStatus {
            ejected: until.is_some(),
            ejected_for_ms: until.map_or(0, |u| {
                u.saturating_duration_since(now)
                    .as_millis()
                    .min(u64::MAX as u128) as u64
            }),
            ejections: h.multiplier,
            consecutive_5xx: h.consecutive_5xx,
            consecutive_gateway_failure: h.consecutive_gateway,
        })
    }

    /// When [`tick`](Self::tick) must run next: the next interval or ejection end.
    pub fn next_deadline(&self) -> Option<Instant> {
        let ejections = self.hosts.values().filter_map(|h| h.ejected_until).min();
        [self.next_interval, ejections, self.zones.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    fn max_ejected(&self) -> usize {
        let pct = self.config.max_ejection_percent as usize;
        if pct == 0 {
            return 0;
        }
        (self.hosts.len() * pct / 100).max(1)
    }

    fn try_eject(
        &mut self,
        now: Instant,
        id: EndpointId,
        reason: EjectionReason,
    ) -> Option<Ejection> {
        let ejected = self
            .hosts
            .values()
            .filter(|h| h.ejected_until.is_some())
            .count();
        if ejected >= self.max_ejected() {
            self.overflow += 1;
            return None;
        }
        let h = self.hosts.get_mut(&id)?;
        if h.ejected_until.is_some() {
            return None;
        }
        h.multiplier = h.multiplier.saturating_add(1);
        let duration = self
            .config
            .base_ejection_time
            .saturating_mul(h.multiplier)
            .min(self.config.max_ejection_time);
        let until = now + duration;
        h.ejected_until = Some(until);
        h.ejected_this_interval = true;
        h.consecutive_5xx = 0;
        h.consecutive_gateway = 0;
        Some(Ejection {
            target: EjectionTarget::Endpoint(id),
            reason,
            duration,
            until,
        })
    }

    /// Records the outcome of one try; returns the ejection (of the endpoint, or of its
    /// whole zone) it caused, if any.
    pub fn record(&mut self, now: Instant, id: EndpointId, outcome: Outcome) -> Option<Ejection> {
        if !outcome.is_observation() {
            return None;
        }
        let h = self.hosts.get_mut(&id)?;
        let zone = h.zone.clone();
        if outcome.is_5xx() {
            h.failed_by_answer = matches!(outcome, Outcome::Response { .. });
            h.failures += 1;
            h.consecutive_5xx += 1;
            if outcome.is_gateway_failure() {
                h.consecutive_gateway += 1;
            } else {
                h.consecutive_gateway = 0;
            }
        } else {
            h.successes += 1;
            h.consecutive_5xx = 0;
            h.consecutive_gateway = 0;
        }
        let (c5, cg) = (h.consecutive_5xx, h.consecutive_gateway);
        if let Some(until) = self.zones.record(&self.config, now, &zone, id, outcome) {
            return Some(Ejection {
                target: EjectionTarget::Zone(zone),
                reason: EjectionReason::ZoneFailure,
                duration: self.config.zone_drain_time,
                until,
            });
        }
        let limit = |n: u32, threshold: u32| threshold > 0 && n >= threshold;
        if limit(cg, self.config.consecutive_gateway_failure) {
            return self.try_eject(now, id, EjectionReason::ConsecutiveGatewayFailure);
        }
        if limit(c5, self.config.consecutive_5xx) {
            return self.try_eject(now, id, EjectionReason::Consecutive5xx);
        }
        None
    }

    /// An active health check of `id` finished: a pass ends its ejection (unless the
    /// ejecting failures were 5xx answers, which the check does not disprove) and its
    /// zone's drain when `uneject_on_health_check` is on.
    pub fn on_health_check(&mut self, id: EndpointId, passed: bool) -> Vec<Event> {
        let mut events = Vec::new();
        if !passed || !self.config.uneject_on_health_check {
            return events;
        }
        if let Some(h) = self.hosts.get_mut(&id) {
            if !h.failed_by_answer && h.ejected_until.take().is_some() {
                events.push(Event::Unejected(id));
            }
            let zone = h.zone.clone();
            if self.zones.restore(&zone) {
                events.push(Event::ZoneRestored(zone));
            }
        }
        events
    }

    /// Ends ejections and drains that are over and, once per `interval`, runs the
    /// success-rate and failure-percentage checks. Call it at
    /// [`next_deadline`](Self::next_deadline).
    pub fn tick(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        for (id, h) in self.hosts.iter_mut() {
            if h.ejected_until.is_some_and(|u| u <= now) {
                h.ejected_until = None;
                events.push(Event::Unejected(*id));
            }
        }
        events.extend(self.zones.expire(now).into_iter().map(Event::ZoneRestored));
        let due = *self.next_interval.get_or_insert(now + self.config.interval);
        if now < due {
            return events;
        }
        self.next_interval = Some(now + self.config.interval);
        let mut candidates: Vec<(EndpointId, EjectionReason)> = Vec::new();
        let stats: Vec<(EndpointId, u64, f64)> = self
            .hosts
            .iter()
            .filter(|(_, h)| h.ejected_until.is_none())
            .map(|(id, h)| {
                let total = h.successes + h.failures;
                let rate = if total == 0 {
                    1.0
                } else {
                    h.successes as f64 / total as f64
                };
                (*id, total, rate)
            })
            .collect();
        let c = &self.config;
        if c.success_rate {
            let eligible: Vec<f64> = stats
                .iter()
                .filter(|s| s.1 >= u64::from(c.success_rate_request_volume))
                .map(|s| s.2)
                .collect();
            if eligible.len() >= c.success_rate_minimum_hosts.max(1) as usize {
                let n = eligible.len() as f64;
                let mean = eligible.iter().sum::<f64>() / n;
                let var = eligible.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n;
                let threshold = mean - c.success_rate_stdev_factor * var.sqrt();
                candidates.extend(
                    stats
                        .iter()
                        .filter(|s| {
                            s.1 >= u64::from(c.success_rate_request_volume) && s.2 < threshold
                        })
                        .map(|s| (s.0, EjectionReason::SuccessRate)),
                );
            }
        }
        if c.failure_percentage {
            let volume = u64::from(c.failure_percentage_request_volume);
            let eligible = stats.iter().filter(|s| s.1 >= volume).count();
            if eligible >= c.failure_percentage_minimum_hosts.max(1) as usize {
                let limit = f64::from(c.failure_percentage_threshold);
                candidates.extend(
                    stats
                        .iter()
                        .filter(|s| s.1 >= volume && (1.0 - s.2) * 100.0 >= limit)
                        .map(|s| (s.0, EjectionReason::FailurePercentage)),
                );
            }
        }
        for h in self.hosts.values_mut() {
            if h.ejected_until.is_none() && !h.ejected_this_interval {
                h.multiplier = h.multiplier.saturating_sub(1);
            }
            h.ejected_this_interval = h.ejected_until.is_some();
            h.successes = 0;
            h.failures = 0;
        }
        let mut seen: HashSet<EndpointId> = HashSet::new();
        for (id, reason) in candidates {
            if seen.insert(id) {
                events.extend(self.try_eject(now, id, reason).map(Event::Ejected));
            }
        }
        events
    }
}

#[cfg(test)]
#[path = "outlier/tests.rs"]
mod tests;
