//! Endpoint selection: SRV priority tiers, zones, power-of-two-choices.
//!
//! A pick goes through three steps, each recorded in the returned [`Decision`]:
//!
//! 1. **Tier** (SRV priority, Envoy's priority levels). A tier's health is
//!    `h = min(1, overprovisioning_factor x healthy_weight / total_weight)` (factor 1.4 by
//!    default). The first tier takes `min(1, h0)` of the traffic, the next the remainder up
//!    to its own `h`, and so on: a tier keeps all traffic while healthy share x 1.4 >= 1
//!    (>= ~72% healthy), and spills the rest to the next tier proportionally. If the sum of
//!    all `h` is below 1, the loads are scaled up to sum to 1. If no tier has any healthy
//!    endpoint, everything goes to the first tier.
//! 2. **Panic** (Envoy's `healthy_panic_threshold`, default 50%). When the tiers together are
//!    short of capacity (sum of `h` < 1), a tier whose healthy share is below the threshold
//!    ignores health: it routes to all of its endpoints rather than overload a few or
//!    route to none. Zones are ignored in a panicking tier.
//! 3. **Zone** within the tier, in the spirit of Envoy's zone-aware routing with locality
//!    overprovisioning: the gateway's own zone takes `min(1, 1.4 x its healthy share)` of
//!    the tier's traffic; the remainder spills to the other zones in proportion to their
//!    healthy weight (e.g. local zone 40% healthy: 56% stays local). With no healthy
//!    capacity elsewhere the local zone keeps everything. Without a local zone (or with
//!    `zone_aware = false`) zones share by healthy weight. A retry after a zone-level
//!    failure (`prefer_other_zone`) avoids the zones of the excluded endpoints when
//!    another zone of the tier has healthy capacity.
//!
//! Within the chosen zone, two distinct healthy endpoints are drawn with probability
//! proportional to their SRV weight, and the one with the lower load score wins: peak-EWMA
//! latency x (in-flight + 1) (see [`ewma`]). If the chosen zone has no endpoint left after
//! `exclude`, the pick falls back to the tier, then to every tier, then to unhealthy
//! endpoints, then to the chosen zone's excluded ones (reason [`PickReason::Fallback`]).

pub mod ewma;
mod plan;

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;
use rustc_hash::FxHashMap;
use serde::Serialize;
use smallvec::SmallVec;
use tokio::time::Instant;

use super::config::BalancerConfig;
use super::{EndpointId, Outcome, Tier, Zone};
use ewma::PeakEwma;
pub use plan::{Distribution, TierShare, ZoneShare};

/// One endpoint as discovery describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Its address.
    pub id: EndpointId,
    /// TXT `zone=`, or [`Zone::unknown`].
    pub zone: Zone,
    /// SRV priority.
    pub tier: Tier,
    /// SRV weight (0 is treated as 1, so the endpoint remains reachable).
    pub weight: u32,
}

/// Why an endpoint was chosen; a bounded label for `/clusters` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PickReason {
    /// The gateway's own zone, in the first tier with traffic.
    Local,
    /// Another zone, because the local zone is short of healthy capacity.
    Spill,
    /// A zone chosen by capacity, with no local-zone preference (no zone known or
    /// present in the tier, or zone awareness off).
    Spread,
    /// A lower-priority tier, because the preferred tiers are short of healthy capacity.
    Failover,
    /// A zone other than the failed try's, for a retry.
    OtherZone,
    /// The tier is in panic mode: health ignored.
    Panic,
    /// Nothing healthy and unexcluded was left where the plan pointed.
    Fallback,
}

impl PickReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PickReason::Local => "local",
            PickReason::Spill => "spill",
            PickReason::Spread => "spread",
            PickReason::Failover => "failover",
            PickReason::OtherZone => "other_zone",
            PickReason::Panic => "panic",
            PickReason::Fallback => "fallback",
        }
    }
}

/// Where a pick went and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The picked endpoint's tier.
    pub tier: Tier,
    /// The picked endpoint's zone.
    pub zone: Zone,
    /// Why.
    pub reason: PickReason,
}

/// The result of [`Balancer::pick`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pick {
    /// The endpoint to send the try to.
    pub endpoint: EndpointId,
    /// The decision record.
    pub decision: Decision,
}

/// Load figures of one endpoint, for `/clusters`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EndpointLoad {
    /// Tries in flight.
    pub in_flight: u32,
    /// Peak-EWMA latency, milliseconds.
    pub ewma_ms: f64,
    /// Whether the balancer treats it as healthy.
    pub healthy: bool,
}

#[derive(Debug, Clone)]
struct EndpointState {
    spec: EndpointSpec,
    healthy: bool,
    in_flight: u32,
    ewma: PeakEwma,
}

impl EndpointState {
    fn weight(&self) -> u32 {
        self.spec.weight.max(1)
    }
}

/// The balancer of one cluster.
#[derive(Debug)]
pub struct Balancer {
    config: BalancerConfig,
    local_zone: Option<Zone>,
    endpoints: Vec<EndpointState>,
    /// By endpoint address (from config or DNS, not from clients): FxHash, not SipHash.
    index: FxHashMap<EndpointId, usize>,
    plan: Option<plan::Plan>,
}

// === impl Balancer ===

impl Balancer {
    /// A balancer for a gateway in `local_zone`, with no endpoints yet.
    pub fn new(config: BalancerConfig, local_zone: Option<Zone>) -> Self {
        Self {
            config,
            local_zone,
            endpoints: Vec::new(),
            index: FxHashMap::default(),
            plan: None,
        }
    }

    /// Replaces the endpoint set; endpoints that stay keep health, load and latency.
    /// New endpoints start healthy.
    pub fn set_endpoints(&mut self, specs: impl IntoIterator<Item = EndpointSpec>) {
        let mut old: HashMap<EndpointId, EndpointState> =
            self.endpoints.drain(..).map(|e| (e.spec.id, e)).collect();
        for spec in specs {
            let state = match old.remove(&spec.id) {
                Some(mut e) => {
                    e.spec = spec;
                    e
                }
                None => EndpointState {
                    spec,
                    healthy: true,
                    in_flight: 0,
                    ewma: PeakEwma::new(self.config.default_rtt),
                },
            };
            self.endpoints.push(state);
        }
        self.endpoints.sort_by_key(|e| e.spec.id);
        self.endpoints.dedup_by_key(|e| e.spec.id);
        self.index = self
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (e.spec.id, i))
            .collect();
        self.plan = None;
    }

    /// Marks an endpoint healthy or not (active health and outlier state combined by the
    /// caller). Unknown endpoints are ignored.
    pub fn set_healthy(&mut self, id: EndpointId, healthy: bool) {
        if let Some(&i) = self.index.get(&id) {
            if self.endpoints[i].healthy != healthy {
                self.endpoints[i].healthy = healthy;
                self.plan = None;
            }
        }
    }

    /// Whether the balancer treats `id` as healthy (`None`: unknown).
    pub fn is_healthy(&self, id: EndpointId) -> Option<bool> {
        self.index.get(&id).map(|&i| self.endpoints[i].healthy)
    }

    /// The endpoints, in address order.
    pub fn endpoints(&self) -> impl Iterator<Item = &EndpointSpec> {
        self.endpoints.iter().map(|e| &e.spec)
    }

    /// Load figures of `id` at `now`.
    pub fn load(&self, id: EndpointId, now: Instant) -> Option<EndpointLoad> {
        let e = &self.endpoints[*self.index.get(&id)?];
        Some(EndpointLoad {
            in_flight: e.in_flight,
            ewma_ms: self.latency(e, now, self.mean_latency(now)) * 1000.0,
            healthy: e.healthy,
        })
    }

    /// The current traffic distribution over tiers and zones.
    pub fn distribution(&mut self) -> Distribution {
        self.ensure_plan();
        let plan = self.plan.as_ref().expect("plan was just built");
        plan.distribution(&self.endpoints)
    }

    fn ensure_plan(&mut self) {
        if self.plan.is_none() {
            let local = self
                .config
                .zone_aware
                .then_some(self.local_zone.as_ref())
                .flatten();
            self.plan = Some(plan::Plan::build(&self.config, local, &self.endpoints));
        }
    }

    /// A try is starting against `id`.
    pub fn start(&mut self, id: EndpointId) {
        if let Some(&i) = self.index.get(&id) {
            self.endpoints[i].in_flight += 1;
        }
    }

    /// A try against `id` ended after `latency` with `outcome`. A failure never lowers
    /// the latency estimate (a fast "connection refused" must not attract load; outlier
    /// detection deals with failing endpoints), a slow one (a timeout) raises it at once;
    /// a fast failure of an endpoint without samples leaves it unsampled. Cancelled tries
    /// leave the estimate alone.
    pub fn finish(&mut self, id: EndpointId, now: Instant, latency: Duration, outcome: Outcome) {
        let Some(&i) = self.index.get(&id) else {
            return;
        };
        let e = &mut self.endpoints[i];
        e.in_flight = e.in_flight.saturating_sub(1);
        let rtt = match outcome {
            Outcome::Cancelled => return,
            o if o.is_success() => latency,
            _ if !e.ewma.is_sampled() && latency <= self.config.default_rtt => return,
            _ => latency.max(Duration::from_secs_f64(
                e.ewma.estimate(now, self.config.ewma_decay),
            )),
        };
        e.ewma.observe(now, rtt, self.config.ewma_decay);
    }

    /// Picks an endpoint for one try; `None` only when the cluster has no endpoints.
    /// `exclude` lists endpoints already tried by this request; with `prefer_other_zone`
    /// their zones are avoided too.
    pub fn pick<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        rng: &mut R,
        exclude: &[EndpointId],
        prefer_other_zone: bool,
    ) -> Option<Pick> {
        if self.endpoints.is_empty() {
            return None;
        }
        let avoid: Vec<Zone> = if prefer_other_zone {
            exclude
                .iter()
                .filter_map(|id| self.index.get(id))
                .map(|&i| self.endpoints[i].spec.zone.clone())
                .collect()
        } else {
            Vec::new()
        };
        self.ensure_plan();
        let plan = self.plan.as_ref().expect("plan was just built");
        let (members, tier, reason) = plan.choose(rng, &avoid);
        let usable = |i: &usize, healthy_only: bool| {
            let e = &self.endpoints[*i];
            (!healthy_only || e.healthy) && !exclude.contains(&e.spec.id)
        };
        let healthy_only = reason != PickReason::Panic;
        // On the stack for clusters of up to 16 endpoints in the chosen tier and zone.
        let mut candidates: SmallVec<[usize; 16]> = members
            .iter()
            .copied()
            .filter(|i| usable(i, healthy_only))
            .collect();
        let mut reason = reason;
        if candidates.is_empty() {
            // Widen step by step: the tier, every tier, unhealthy endpoints, then the
            // planned zone again, excluded or not.
            reason = PickReason::Fallback;
            let fits = |level: u8, i: usize| match level {
                0 => self.endpoints[i].spec.tier == tier && usable(&i, true),
                1 => usable(&i, true),
                2 => usable(&i, false),
                3 => members.contains(&i) && (!healthy_only || self.endpoints[i].healthy),
                _ => true,
            };
            candidates = (0..5u8)
                .map(|level| {
                    (0..self.endpoints.len())
                        .filter(|&i| fits(level, i))
                        .collect::<SmallVec<_>>()
                })
                .find(|c| !c.is_empty())
                .unwrap_or_default();
        }
        let chosen = self.p2c(now, rng, &candidates)?;
        let spec = &self.endpoints[chosen].spec;
        Some(Pick {
            endpoint: spec.id,
            decision: Decision {
                tier: spec.tier,
                zone: spec.zone.clone(),
                reason,
            },
        })
    }

    /// The mean latency estimate of the sampled endpoints (`default_rtt` if none): what an
    /// endpoint without samples is assumed to cost, so new endpoints are neither starved
    /// (a default above the real latency) nor flooded (one below it).
    fn mean_latency(&self, now: Instant) -> f64 {
        let (sum, n) = self
            .endpoints
            .iter()
            .filter(|e| e.ewma.is_sampled())
            .fold((0.0, 0u32), |(sum, n), e| {
                (sum + e.ewma.estimate(now, self.config.ewma_decay), n + 1)
            });
        if n == 0 {
            self.config.default_rtt.as_secs_f64()
        } else {
            sum / f64::from(n)
        }
    }

    fn latency(&self, e: &EndpointState, now: Instant, mean: f64) -> f64 {
        if e.ewma.is_sampled() {
            e.ewma.estimate(now, self.config.ewma_decay)
        } else {
            mean
        }
    }

    /// Power of two choices: two distinct candidates drawn by weight, lower score (latency
    /// x (in-flight + 1)) wins; an idle endpoint without samples wins as a probe.
    fn p2c<R: Rng + ?Sized>(
        &self,
        now: Instant,
        rng: &mut R,
        candidates: &[usize],
    ) -> Option<usize> {
        let draw = |rng: &mut R, skip: Option<usize>| -> Option<usize> {
            let total: u64 = candidates
                .iter()
                .filter(|&&i| Some(i) != skip)
                .map(|&i| u64::from(self.endpoints[i].weight()))
                .sum();
            if total == 0 {
                return None;
            }
            let mut x = rng.random_range(0..total);
            for &i in candidates.iter().filter(|&&i| Some(i) != skip) {
                let w = u64::from(self.endpoints[i].weight());
                if x < w {
                    return Some(i);
                }
                x -= w;
            }
            None
        };
        let a = draw(rng, None)?;
        let Some(b) = draw(rng, Some(a)) else {
            return Some(a);
        };
        let mean = self.mean_latency(now);
        let score = |i: usize| {
            let e = &self.endpoints[i];
            if !e.ewma.is_sampled() && e.in_flight == 0 {
                // A probe: an endpoint without samples takes one request at a time until
                // it has one. Scored at the mean it would lose every draw against a peer
                // faster than the mean under light load, and never be measured.
                return 0.0;
            }
            self.latency(e, now, mean) * f64::from(e.in_flight + 1)
        };
        Some(if score(b) < score(a) { b } else { a })
    }
}

#[cfg(test)]
#[path = "balance/tests.rs"]
mod tests;
