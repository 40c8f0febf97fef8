//! The traffic plan of a balancer: the share of each tier and of each zone within it,
//! computed from health whenever health or the endpoint set changes (the rules are in
//! the [`super`] module doc), and sampled on every pick.

use std::collections::BTreeMap;

use rand::Rng;
use serde::Serialize;

use super::{EndpointState, PickReason};
use crate::resilience::config::BalancerConfig;
use crate::resilience::{Tier, Zone};

/// The traffic distribution, for `/clusters` and the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distribution {
    /// Tiers in priority order.
    pub tiers: Vec<TierShare>,
}

/// One tier's part of the traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierShare {
    /// The SRV priority.
    pub tier: Tier,
    /// Share of the cluster's traffic (0..=1).
    pub load: f64,
    /// Healthy weight / total weight.
    pub healthy_share: f64,
    /// Health ignored in this tier.
    pub panic: bool,
    /// Its zones.
    pub zones: Vec<ZoneShare>,
}

/// One zone's part of a tier's traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneShare {
    /// The zone.
    pub zone: Zone,
    /// Whether it is the gateway's zone.
    pub local: bool,
    /// Share of the tier's traffic (0..=1).
    pub share: f64,
    /// Share of the cluster's traffic: tier load x share.
    pub traffic: f64,
    /// Healthy endpoints.
    pub healthy: usize,
    /// Endpoints.
    pub total: usize,
}

#[derive(Debug)]
struct ZonePlan {
    zone: Zone,
    local: bool,
    share: f64,
    healthy_weight: u64,
    members: Vec<usize>,
}

#[derive(Debug)]
struct TierPlan {
    tier: Tier,
    load: f64,
    healthy_share: f64,
    panic: bool,
    has_local: bool,
    members: Vec<usize>,
    zones: Vec<ZonePlan>,
}

#[derive(Debug)]
pub(super) struct Plan {
    tiers: Vec<TierPlan>,
}

fn sample<R: Rng + ?Sized>(
    rng: &mut R,
    weights: impl Iterator<Item = f64> + Clone,
) -> Option<usize> {
    let total: f64 = weights.clone().sum();
    if total <= 0.0 || !total.is_finite() {
        return None;
    }
    let x = rng.random::<f64>() * total;
    let mut acc = 0.0;
    let mut last = None;
    for (i, w) in weights.enumerate() {
        if w > 0.0 {
            acc += w;
            last = Some(i);
            if x < acc {
                return Some(i);
            }
        }
    }
    last
}

// === impl Plan ===

impl Plan {
    pub(super) fn build(
        config: &BalancerConfig,
        local: Option<&Zone>,
        endpoints: &[EndpointState],
    ) -> Self {
        let op = config.overprovisioning_factor;
        let mut by_tier: BTreeMap<Tier, BTreeMap<Zone, Vec<usize>>> = BTreeMap::new();
        for (i, e) in endpoints.iter().enumerate() {
            by_tier
                .entry(e.spec.tier)
                .or_default()
                .entry(e.spec.zone.clone())
                .or_default()
                .push(i);
        }
        let weights = |members: &[usize]| {
            members.iter().fold((0u64, 0u64), |(h, t), &i| {
                let w = u64::from(endpoints[i].weight());
                (h + if endpoints[i].healthy { w } else { 0 }, t + w)
            })
        };
        let mut tiers: Vec<TierPlan> = by_tier
            .into_iter()
            .map(|(tier, zones)| {
                let mut zones: Vec<ZonePlan> = zones
                    .into_iter()
                    .map(|(zone, members)| {
                        let (healthy_weight, total_weight) = weights(&members);
                        let is_local = local == Some(&zone);
                        let share = if is_local {
                            (op * healthy_weight as f64 / total_weight as f64).min(1.0)
                        } else {
                            0.0
                        };
                        ZonePlan {
                            zone,
                            local: is_local,
                            share,
                            healthy_weight,
                            members,
                        }
                    })
                    .collect();
                let remote: u64 = zones
                    .iter()
                    .filter(|z| !z.local)
                    .map(|z| z.healthy_weight)
                    .sum();
                let has_local = zones.iter().any(|z| z.local);
                // What the local zone cannot take spills by healthy weight; with no local
                // zone everything is shared that way; with no remote capacity local keeps all.
                let spill = if has_local {
                    zones
                        .iter()
                        .find(|z| z.local)
                        .map_or(1.0, |z| 1.0 - z.share)
                } else {
                    1.0
                };
                for z in zones.iter_mut() {
                    if z.local {
                        if remote == 0 && z.healthy_weight > 0 {
                            z.share = 1.0;
                        }
                    } else if remote > 0 {
                        z.share = spill * z.healthy_weight as f64 / remote as f64;
                    }
                }
                let members: Vec<usize> = zones.iter().flat_map(|z| z.members.clone()).collect();
                let (healthy, total) = weights(&members);
                TierPlan {
                    tier,
                    load: 0.0,
                    healthy_share: healthy as f64 / total as f64,
                    panic: false,
                    has_local,
                    members,
                    zones,
                }
            })
            .collect();

        // Tier loads, Envoy's priority levels: each takes what it can up to its health.
        let health: Vec<f64> = tiers
            .iter()
            .map(|t| (op * t.healthy_share).min(1.0))
            .collect();
        let sum: f64 = health.iter().sum();
        if sum <= 0.0 {
            if let Some(first) = tiers.first_mut() {
                first.load = 1.0;
                first.panic = true;
            }
            return Self { tiers };
        }
        let mut remaining = 1.0f64;
        for (t, h) in tiers.iter_mut().zip(&health) {
            t.load = remaining.min(*h);
            remaining -= t.load;
        }
        if sum < 1.0 {
            for t in tiers.iter_mut() {
                t.load /= sum;
                t.panic = t.healthy_share * 100.0 < config.panic_threshold;
            }
        }
        Self { tiers }
    }

    /// Samples a tier and a zone: the members to draw from, the tier, and why.
    pub(super) fn choose<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        avoid: &[Zone],
    ) -> (&[usize], Tier, PickReason) {
        let ti = sample(rng, self.tiers.iter().map(|t| t.load)).unwrap_or(0);
        let t = &self.tiers[ti];
        let failover = ti > 0;
        if t.panic {
            return (&t.members, t.tier, PickReason::Panic);
        }
        if !avoid.is_empty() {
            let other = |z: &ZonePlan| !avoid.contains(&z.zone);
            let weights = t.zones.iter().map(|z| {
                if other(z) {
                    z.healthy_weight as f64
                } else {
                    0.0
                }
            });
            if let Some(zi) = sample(rng, weights) {
                let reason = if failover {
                    PickReason::Failover
                } else {
                    PickReason::OtherZone
                };
                return (&t.zones[zi].members, t.tier, reason);
            }
        }
        let Some(zi) = sample(rng, t.zones.iter().map(|z| z.share)) else {
            return (&t.members, t.tier, PickReason::Fallback);
        };
        let z = &t.zones[zi];
        let reason = match (failover, z.local, t.has_local) {
            (true, _, _) => PickReason::Failover,
            (false, true, _) => PickReason::Local,
            (false, false, true) => PickReason::Spill,
            (false, false, false) => PickReason::Spread,
        };
        (&z.members, t.tier, reason)
    }

    pub(super) fn distribution(&self, endpoints: &[EndpointState]) -> Distribution {
        Distribution {
            tiers: self
                .tiers
                .iter()
                .map(|t| TierShare {
                    tier: t.tier,
                    load: t.load,
                    healthy_share: t.healthy_share,
                    panic: t.panic,
                    zones: t
                        .zones
                        .iter()
                        .map(|z| ZoneShare {
                            zone: z.zone.clone(),
                            local: z.local,
                            share: z.share,
                            traffic: t.load * z.share,
                            healthy: z.members.iter().filter(|&&i| endpoints[i].healthy).count(),
                            total: z.members.len(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}
