//! Table-driven tests: the case tuples are the tables.
#![allow(clippy::type_complexity)]

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::time::Instant;

use super::*;
use crate::resilience::testutil::ep;

const PICKS: usize = 10_000;

/// (tier, zone, endpoints, healthy) groups; endpoints are numbered from 1 in order.
fn balancer(local: Option<&str>, groups: &[(u16, &str, u8, u8)]) -> Balancer {
    let mut b = Balancer::new(BalancerConfig::default(), local.map(Zone::new));
    let mut specs = Vec::new();
    let mut unhealthy = Vec::new();
    let mut n = 0u8;
    for &(tier, zone, count, healthy) in groups {
        for k in 0..count {
            n += 1;
            specs.push(EndpointSpec {
                id: ep(n),
                zone: Zone::new(zone),
                tier: Tier(tier),
                weight: 1,
            });
            if k >= healthy {
                unhealthy.push(ep(n));
            }
        }
    }
    b.set_endpoints(specs);
    for id in unhealthy {
        b.set_healthy(id, false);
    }
    b
}

/// Picks PICKS times; returns the share per (tier, zone), per reason, and of unhealthy picks.
fn shares(
    b: &mut Balancer,
    seed: u64,
) -> (HashMap<(u16, String), f64>, HashMap<PickReason, f64>, f64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let now = Instant::now();
    let (mut zones, mut reasons, mut unhealthy) = (HashMap::new(), HashMap::new(), 0.0);
    for _ in 0..PICKS {
        let p = b.pick(now, &mut rng, &[], false).expect("endpoints exist");
        *zones
            .entry((p.decision.tier.0, p.decision.zone.to_string()))
            .or_insert(0.0) += 1.0 / PICKS as f64;
        *reasons.entry(p.decision.reason).or_insert(0.0) += 1.0 / PICKS as f64;
        if b.is_healthy(p.endpoint) == Some(false) {
            unhealthy += 1.0 / PICKS as f64;
        }
    }
    (zones, reasons, unhealthy)
}

fn near(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 0.02,
        "{what}: got {got:.3}, want {want:.3}"
    );
}

#[test]
fn local_zone_spills_by_overprovisioned_health() {
    // (healthy of 10 in local zone "a", expected share for a; b and c split the rest)
    let cases = [
        (10, 1.0),
        (8, 1.0),
        (7, 0.98),
        (5, 0.70),
        (4, 0.56),
        (1, 0.14),
        (0, 0.0),
    ];
    for (healthy, want_local) in cases {
        let mut b = balancer(
            Some("a"),
            &[(0, "a", 10, healthy), (0, "b", 10, 10), (0, "c", 10, 10)],
        );
        let (zones, reasons, unhealthy) = shares(&mut b, 7);
        let local = zones.get(&(0, "a".into())).copied().unwrap_or(0.0);
        near(
            local,
            want_local,
            &format!("local share with {healthy}/10 healthy"),
        );
        near(
            zones.get(&(0, "b".into())).copied().unwrap_or(0.0),
            (1.0 - want_local) / 2.0,
            "zone b",
        );
        near(
            reasons.get(&PickReason::Spill).copied().unwrap_or(0.0),
            1.0 - want_local,
            "spill reason",
        );
        assert_eq!(
            unhealthy, 0.0,
            "no unhealthy picks with {healthy}/10 healthy"
        );
    }
}

#[test]
fn tiers_fail_over_like_envoy_priorities() {
    // (healthy of 10 in tier 0, tier 1 healthy of 10, expected tier-0 load, panic expected)
    let cases = [
        (10, 10, 1.0, false),
        (8, 10, 1.0, false),
        (5, 10, 0.70, false),
        (3, 10, 0.42, false),
        (0, 10, 0.0, false),
        // Both short (0.42 + 0.42 < 1): loads scaled to 50/50, both below 50% healthy: panic.
        (3, 3, 0.5, true),
    ];
    for (h0, h1, want0, panic) in cases {
        let mut b = balancer(Some("a"), &[(0, "a", 10, h0), (1, "a", 10, h1)]);
        let (zones, reasons, unhealthy) = shares(&mut b, 11);
        let got0 = zones.get(&(0, "a".into())).copied().unwrap_or(0.0);
        near(
            got0,
            want0,
            &format!("tier 0 load with {h0}/10 and {h1}/10 healthy"),
        );
        let failover = reasons.get(&PickReason::Failover).copied().unwrap_or(0.0);
        let panicked = reasons.get(&PickReason::Panic).copied().unwrap_or(0.0);
        if panic {
            near(panicked, 1.0, "panic reason");
            near(unhealthy, 0.7, "panic routes to all endpoints");
        } else {
            near(failover, 1.0 - want0, "failover reason");
            assert_eq!(unhealthy, 0.0);
        }
    }
}

#[test]
fn panic_threshold_ignores_health_in_a_short_tier() {
    // (healthy of 10, panic, unhealthy share of picks)
    let cases = [
        (10, false, 0.0),
        (6, false, 0.0),
        (5, false, 0.0),
        (4, true, 0.6),
        (0, true, 1.0),
    ];
    for (healthy, panic, want_unhealthy) in cases {
        let mut b = balancer(
            Some("a"),
            &[
                (0, "a", 5, healthy.min(5)),
                (0, "b", 5, healthy.saturating_sub(5)),
            ],
        );
        let dist = b.distribution();
        assert_eq!(dist.tiers[0].panic, panic, "{healthy}/10 healthy");
        let (_, _, unhealthy) = shares(&mut b, 3);
        near(
            unhealthy,
            want_unhealthy,
            &format!("unhealthy picks with {healthy}/10 healthy"),
        );
    }
}

#[test]
fn power_of_two_choices_prefers_lower_load_and_honours_weight() {
    let now = Instant::now();
    let ms = Duration::from_millis;
    // (weights, latency per endpoint in ms, in-flight per endpoint, expected share of endpoint 1)
    let cases: &[(&[u32], &[u64], &[u32], f64)] = &[
        (&[1, 1], &[30, 30], &[0, 0], 0.5),
        (&[1, 3], &[30, 30], &[0, 0], 0.25),
        (&[1, 1], &[200, 10], &[0, 0], 0.0),
        (&[1, 1, 1], &[200, 10, 10], &[0, 0, 0], 0.0),
        (&[1, 1], &[10, 10], &[5, 0], 0.0),
        // Equal cost at 10ms x 3 vs 30ms x 1: ties keep the first draw.
        (&[1, 1], &[10, 30], &[2, 0], 0.5),
    ];
    for (i, &(weights, latency, in_flight, want)) in cases.iter().enumerate() {
        let mut b = Balancer::new(BalancerConfig::default(), None);
        b.set_endpoints(weights.iter().enumerate().map(|(k, &w)| EndpointSpec {
            id: ep(k as u8 + 1),
            zone: Zone::unknown(),
            tier: Tier(0),
            weight: w,
        }));
        for k in 0..weights.len() {
            let id = ep(k as u8 + 1);
            b.start(id);
            b.finish(id, now, ms(latency[k]), Outcome::Response { status: 200 });
            for _ in 0..in_flight[k] {
                b.start(id);
            }
        }
        let mut rng = SmallRng::seed_from_u64(i as u64);
        let first = (0..PICKS)
            .filter(|_| b.pick(now, &mut rng, &[], false).map(|p| p.endpoint) == Some(ep(1)))
            .count();
        near(first as f64 / PICKS as f64, want, &format!("case {i}"));
    }
}

#[test]
fn retries_avoid_tried_endpoints_and_their_zone() {
    let mut b = balancer(Some("a"), &[(0, "a", 2, 2), (0, "b", 2, 2), (1, "c", 2, 2)]);
    let mut rng = SmallRng::seed_from_u64(5);
    let now = Instant::now();
    // (exclude, prefer_other_zone, allowed endpoints, expected reason)
    let cases: &[(&[u8], bool, &[u8], PickReason)] = &[
        (&[1], false, &[2], PickReason::Local),
        (&[1], true, &[3, 4], PickReason::OtherZone),
        (&[1, 3], true, &[2], PickReason::Local), // no third zone in tier 0
        (&[1, 2, 3, 4], false, &[5, 6], PickReason::Fallback),
        (&[1, 2, 3, 4, 5, 6], false, &[1, 2], PickReason::Fallback),
    ];
    for &(exclude, other, allowed, reason) in cases {
        let exclude: Vec<_> = exclude.iter().map(|&n| ep(n)).collect();
        for _ in 0..200 {
            let p = b
                .pick(now, &mut rng, &exclude, other)
                .expect("endpoints exist");
            assert!(
                allowed.iter().any(|&n| ep(n) == p.endpoint),
                "exclude {exclude:?}: picked {}",
                p.endpoint
            );
            assert_eq!(p.decision.reason, reason, "exclude {exclude:?}");
        }
    }
}

#[test]
fn empty_cluster_picks_nothing_and_set_endpoints_keeps_state() {
    let mut b = Balancer::new(BalancerConfig::default(), None);
    let mut rng = SmallRng::seed_from_u64(1);
    let now = Instant::now();
    assert_eq!(b.pick(now, &mut rng, &[], false), None);
    let spec = |n| EndpointSpec {
        id: ep(n),
        zone: Zone::new("a"),
        tier: Tier(0),
        weight: 0,
    };
    b.set_endpoints([spec(1), spec(2), spec(2)]);
    assert_eq!(b.endpoints().count(), 2, "duplicates collapse");
    b.set_healthy(ep(1), false);
    // (at s, latency ms, outcome, estimate after, ms): failures never lower the estimate
    let steps = [
        (0, 2, Outcome::ConnectFailure, 30.0), // unsampled: the 30ms default
        (100, 10, Outcome::Response { status: 200 }, 10.0),
        (100, 1, Outcome::Response { status: 503 }, 10.0),
        (100, 500, Outcome::Timeout, 500.0),
        (100, 1, Outcome::Cancelled, 500.0),
    ];
    let later = now + Duration::from_secs(100);
    for (at, latency, outcome, want) in steps {
        let at = now + Duration::from_secs(at);
        b.start(ep(1));
        b.finish(ep(1), at, Duration::from_millis(latency), outcome);
        let got = b.load(ep(1), at).map(|l| l.ewma_ms).unwrap_or_default();
        assert!((got - want).abs() < 0.01, "after {outcome:?}: {got}");
    }
    let now = later;
    b.start(ep(1));
    b.set_endpoints([spec(1), spec(3)]);
    let load = b.load(ep(1), now).expect("kept");
    assert_eq!((load.in_flight, load.healthy), (1, false));
    assert_eq!(b.load(ep(2), now), None);
    assert_eq!(
        b.is_healthy(ep(3)),
        Some(true),
        "new endpoints start healthy"
    );
}

#[test]
fn distribution_reports_zone_traffic() {
    let mut b = balancer(
        Some("a"),
        &[(0, "a", 10, 4), (0, "b", 10, 10), (0, "c", 10, 10)],
    );
    let d = b.distribution();
    let t = &d.tiers[0];
    assert_eq!((t.tier, t.panic), (Tier(0), false));
    assert!((t.load - 1.0).abs() < 1e-9);
    let a = &t.zones[0];
    assert_eq!(
        (a.zone.as_str(), a.local, a.healthy, a.total),
        ("a", true, 4, 10)
    );
    assert!((a.traffic - 0.56).abs() < 1e-9, "{}", a.traffic);
    assert!((t.zones[1].share - 0.22).abs() < 1e-9);
}

#[test]
fn an_unsampled_endpoint_is_probed_under_sequential_load() {
    // Zone "b" has a measured endpoint faster than the cluster mean and a new one. One
    // request at a time: the new one must get a probe, then latency decides.
    let mut b = balancer(None, &[(0, "a", 1, 1), (0, "b", 2, 2)]);
    let t0 = Instant::now();
    b.finish(
        ep(1),
        t0,
        Duration::from_millis(5),
        Outcome::Response { status: 200 },
    );
    b.finish(
        ep(2),
        t0,
        Duration::from_millis(1),
        Outcome::Response { status: 200 },
    );
    let mut rng = SmallRng::seed_from_u64(7);
    let mut picks: HashMap<EndpointId, u32> = HashMap::new();
    for _ in 0..200 {
        let p = b.pick(t0, &mut rng, &[], false).expect("endpoints exist");
        *picks.entry(p.endpoint).or_default() += 1;
        let rtt = if p.endpoint == ep(3) { 3 } else { 1 };
        b.finish(
            p.endpoint,
            t0,
            Duration::from_millis(rtt),
            Outcome::Response { status: 200 },
        );
    }
    assert!(picks.get(&ep(3)).copied().unwrap_or(0) >= 1, "{picks:?}");
    assert!(
        picks[&ep(2)] > picks.get(&ep(3)).copied().unwrap_or(0),
        "once measured, the faster endpoint wins: {picks:?}"
    );
}
