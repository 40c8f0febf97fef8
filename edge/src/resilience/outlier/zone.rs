//! Zone drain: a zone whose endpoints fail together is taken out as a zone, at once,
//! instead of host by host (which the per-cluster ejection cap would forbid anyway: 10% of
//! 6 hosts is less than one zone of 2).
//!
//! A zone is drained when, within `zone_drain_window` (500ms): at least
//! `zone_drain_min_failures` (3) gateway failures (connect failure, reset, timeout,
//! 502/503/504) came from its endpoints, more than `zone_drain_host_share` (half) of its
//! endpoints (or all of them, for a share of 1) failed, and not one of its endpoints answered successfully since the first of those failures (a success clears the count: a zone that answers is not lost, and one bad host is the ejection's job). It stays drained
//! for `zone_drain_time` (10s) or until one of its endpoints passes an active health
//! check, whichever comes first; a zone that still fails is drained again at once.

use std::collections::{BTreeMap, VecDeque};

use tokio::time::Instant;

use crate::resilience::config::OutlierConfig;
use crate::resilience::{EndpointId, Outcome, Zone};

#[derive(Debug, Default)]
struct ZoneState {
    size: usize,
    failures: VecDeque<(Instant, EndpointId)>,
    drained_until: Option<Instant>,
}

/// The zone-level failure detector of one cluster.
#[derive(Debug, Default)]
pub struct ZoneDrain {
    zones: BTreeMap<Zone, ZoneState>,
}

// === impl ZoneDrain ===

impl ZoneDrain {
    /// Sets how many endpoints each zone has; zones that disappear are forgotten.
    pub fn set_sizes(&mut self, sizes: BTreeMap<Zone, usize>) {
        self.zones.retain(|z, _| sizes.contains_key(z));
        for (zone, size) in sizes {
            self.zones.entry(zone).or_default().size = size;
        }
    }

    /// Whether `zone` is drained.
    pub fn is_drained(&self, zone: &Zone) -> bool {
        self.zones
            .get(zone)
            .is_some_and(|z| z.drained_until.is_some())
    }

    /// When `zone`'s drain ends, if drained.
    pub fn drained_until(&self, zone: &Zone) -> Option<Instant> {
        self.zones.get(zone).and_then(|z| z.drained_until)
    }

    /// Records one outcome from an endpoint of `zone`; returns the drain's end when this
    /// outcome drains the zone.
    pub fn record(
        &mut self,
        config: &OutlierConfig,
        now: Instant,
        zone: &Zone,
        endpoint: EndpointId,
        outcome: Outcome,
    ) -> Option<Instant> {
        if !config.zone_drain {
            return None;
        }
        let z = self.zones.get_mut(zone)?;
        let window = config.zone_drain_window;
        while z
            .failures
            .front()
            .is_some_and(|&(at, _)| now.saturating_duration_since(at) > window)
        {
            z.failures.pop_front();
        }
        if outcome.is_success() {
            z.failures.clear();
            return None;
        }
        if !outcome.is_gateway_failure() || z.drained_until.is_some() {
            return None;
        }
        z.failures.push_back((now, endpoint));
        let mut failing: Vec<EndpointId> = z.failures.iter().map(|&(_, e)| e).collect();
        failing.sort();
        failing.dedup();
        let needed =
            ((config.zone_drain_host_share * z.size as f64).floor() as usize + 1).min(z.size);
        if z.failures.len() < config.zone_drain_min_failures as usize || failing.len() < needed {
            return None;
        }
        let until = now + config.zone_drain_time;
        z.drained_until = Some(until);
        z.failures.clear();
        Some(until)
    }

    /// Ends the drain of `zone` (a health check passed); true if it was drained.
    pub fn restore(&mut self, zone: &Zone) -> bool {
        self.zones
            .get_mut(zone)
            .and_then(|z| z.drained_until.take())
            .is_some()
    }

    /// Ends drains that are over at `now`; returns the zones restored.
    pub fn expire(&mut self, now: Instant) -> Vec<Zone> {
        let mut restored = Vec::new();
        for (zone, z) in self.zones.iter_mut() {
            if z.drained_until.is_some_and(|until| until <= now) {
                z.drained_until = None;
                restored.push(zone.clone());
            }
        }
        restored
    }

    /// The earliest drain end.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.zones.values().filter_map(|z| z.drained_until).min()
    }
}
