//! Whole-policy scenarios of the failure table in DESIGN.md, on a fake clock: 3 zones x 2
//! endpoints, the gateway in zone "a".

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::resilience::balance::PickReason;
use crate::resilience::health::CheckResult;
use crate::resilience::testutil::ep;
use crate::resilience::Tier;

const OK: Outcome = Outcome::Response { status: 200 };

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Endpoints 1-2 in zone a, 3-4 in b, 5-6 in c.
fn policy(config: ClusterResilience, t0: Instant) -> ClusterPolicy {
    let mut p = ClusterPolicy::new("pay", config, Some(Zone::new("a")), 7);
    p.set_endpoints(
        t0,
        (1..=6u8).map(|n| EndpointSpec {
            id: ep(n),
            zone: Zone::new(["a", "b", "c"][usize::from((n - 1) / 2)]),
            tier: Tier(0),
            weight: 1,
        }),
    );
    p.tick(t0);
    p
}

/// Sends `n` tries at `now`, answering with `answer(endpoint)`; returns picks per zone.
fn traffic(
    p: &mut ClusterPolicy,
    now: Instant,
    n: usize,
    answer: impl Fn(EndpointId) -> Outcome,
) -> HashMap<String, usize> {
    let mut zones = HashMap::new();
    for _ in 0..n {
        let pick = p.pick(now, &[], false).expect("endpoints");
        *zones.entry(pick.decision.zone.to_string()).or_default() += 1;
        p.report(now, pick.endpoint, ms(5), answer(pick.endpoint));
    }
    zones
}

fn in_zone_a(id: EndpointId) -> bool {
    id == ep(1) || id == ep(2)
}

#[test]
fn a_lost_or_hung_zone_is_drained_at_once_and_comes_back() {
    // (how zone a fails, how it comes back: by health check or drain time-out)
    let cases = [
        (Outcome::ConnectFailure, true),
        (Outcome::Timeout, false),
        (Outcome::Reset, true),
    ];
    for (failure, by_health_check) in cases {
        let t0 = Instant::now();
        let mut p = policy(ClusterResilience::default(), t0);
        let before = traffic(&mut p, t0, 100, |_| OK);
        assert_eq!(before.get("a"), Some(&100), "{failure:?}: local first");
        // The zone fails: within a handful of tries it is drained as a zone.
        let failing = |id| if in_zone_a(id) { failure } else { OK };
        let during = traffic(&mut p, t0 + ms(1), 10, failing);
        assert!(
            during.get("a").copied().unwrap_or(0) <= 4,
            "{failure:?}: {during:?}"
        );
        let after = traffic(&mut p, t0 + ms(2), 1000, failing);
        assert_eq!(
            after.get("a"),
            None,
            "{failure:?}: no traffic to the drained zone"
        );
        let b = after.get("b").copied().unwrap_or(0);
        assert!(
            (400..=600).contains(&b),
            "{failure:?}: spill shared by b and c: {after:?}"
        );
        let snap = p.snapshot(t0 + ms(2));
        assert!(snap.events.iter().any(
            |e| matches!(&e.event, PolicyEvent::ZoneDrained { zone, .. } if zone.as_str() == "a")
        ));
        assert!(snap
            .endpoints
            .iter()
            .filter(|e| e.zone.as_str() == "a")
            .all(|e| !e.available));
        // Recovery.
        let back = if by_health_check {
            let report = CheckReport {
                at: t0 + ms(500),
                endpoint: ep(1),
                result: CheckResult::Pass,
                transition: Transition::Unchanged,
            };
            assert!(p
                .on_health_report(&report)
                .contains(&PolicyEvent::ZoneRestored {
                    zone: Zone::new("a")
                }));
            t0 + ms(500)
        } else {
            let drain_end = t0 + ms(1) + Duration::from_secs(10);
            loop {
                let deadline = p.next_deadline().expect("a drain to end");
                assert!(deadline <= drain_end, "{failure:?}");
                let restored = PolicyEvent::ZoneRestored {
                    zone: Zone::new("a"),
                };
                if p.tick(deadline).contains(&restored) {
                    break deadline;
                }
            }
        };
        // Back on the local zone; at least 70% even if one host's own ejection runs on.
        let recovered = traffic(&mut p, back, 100, |_| OK);
        let a = recovered.get("a").copied().unwrap_or(0);
        assert!(
            a >= 60,
            "{failure:?}: back on the local zone: {recovered:?}"
        );
    }
}

#[test]
fn one_failing_instance_is_ejected_and_its_share_moves() {
    let t0 = Instant::now();
    let mut p = policy(ClusterResilience::default(), t0);
    let bad = |id| {
        if id == ep(1) {
            Outcome::Response { status: 503 }
        } else {
            OK
        }
    };
    traffic(&mut p, t0, 200, bad);
    let snap = p.snapshot(t0);
    let e1 = snap
        .endpoints
        .iter()
        .find(|e| e.endpoint == ep(1))
        .expect("listed");
    assert!(!e1.available);
    assert_eq!(e1.outlier.map(|o| o.ejected), Some(true));
    assert!(
        !p.outlier.is_zone_drained(&Zone::new("a")),
        "one host is not a zone"
    );
    // Zone a is at 50% healthy: 0.5 x 1.4 = 70% local, all of it on endpoint 2.
    let mut seen = HashMap::new();
    for _ in 0..2000 {
        let pick = p.pick(t0, &[], false).expect("endpoints");
        *seen.entry(pick.endpoint).or_insert(0usize) += 1;
        p.report(t0, pick.endpoint, ms(5), OK);
    }
    assert_eq!(seen.get(&ep(1)), None);
    let local = seen.get(&ep(2)).copied().unwrap_or(0) as f64 / 2000.0;
    assert!((local - 0.7).abs() < 0.03, "local share {local}");
}

#[test]
fn breaker_and_budget_refuse_fast() {
    let t0 = Instant::now();
    let config = ClusterResilience {
        circuit_breaker: crate::resilience::config::CircuitBreakerConfig {
            max_requests: 10,
            ..Default::default()
        },
        ..ClusterResilience::default()
    };
    let mut p = policy(config, t0);
    for _ in 0..10 {
        assert_eq!(p.start_request(), Ok(()));
    }
    let refused = p.start_request().expect_err("11th request");
    assert_eq!(refused.resource, Resource::Requests);
    let ctx = TryContext {
        idempotent: true,
        never_sent: false,
        retries: 0,
    };
    // 10 active requests: 20% is 2, the floor 3 wins; the 4th retry is refused.
    for _ in 0..3 {
        assert!(p.retry(Outcome::Timeout, ctx).is_ok());
    }
    assert_eq!(
        p.retry(Outcome::Timeout, ctx),
        Err(NoRetry::BudgetExhausted)
    );
    assert_eq!(p.start_hedge(), Err(NoRetry::BudgetExhausted));
    // A request that never reached an upstream is retried even with the budget spent.
    let never_sent = TryContext {
        never_sent: true,
        ..ctx
    };
    assert!(p.retry(Outcome::ConnectFailure, never_sent).is_ok());
    p.finish_retry(false);
    p.finish_retry(true);
    assert_eq!(p.start_hedge(), Ok(()));
    p.finish_request();
    assert_eq!(p.start_request(), Ok(()));
}

#[test]
fn timeouts_and_hedges_follow_observed_latency() {
    let t0 = Instant::now();
    let mut p = policy(ClusterResilience::default(), t0);
    assert_eq!(
        p.per_try_timeout(None),
        ms(2000),
        "nothing observed: the ceiling"
    );
    assert_eq!(p.hedge_delay(), None);
    for latency in [30u64, 80] {
        for _ in 0..100 {
            let pick = p.pick(t0, &[], false).expect("endpoints");
            p.report(t0, pick.endpoint, ms(latency), OK);
        }
    }
    // p99 = 80ms (+ one bucket): 2 x p99 ~ 160-180ms; p90 = 80ms too.
    let t = p.per_try_timeout(None);
    assert!(t >= ms(160) && t <= ms(181), "{t:?}");
    assert_eq!(p.per_try_timeout(Some(ms(50))), ms(50));
    let h = p.hedge_delay().expect("latency known");
    assert!(h >= ms(80) && h <= ms(91), "{h:?}");
}

#[test]
fn snapshot_serializes_decisions_for_clusters_json() {
    let t0 = Instant::now();
    let mut p = policy(ClusterResilience::default(), t0);
    let pick = p.pick(t0, &[], false).expect("endpoints");
    assert_eq!(pick.decision.reason, PickReason::Local);
    let json = serde_json::to_value(p.snapshot(t0)).expect("serializes");
    assert_eq!(json["cluster"], "pay");
    assert_eq!(json["local_zone"], "a");
    assert_eq!(json["distribution"]["tiers"][0]["zones"][0]["traffic"], 1.0);
    assert_eq!(json["endpoints"].as_array().map(Vec::len), Some(6));
    assert_eq!(json["endpoints"][0]["endpoint"], "10.0.0.1:8443");
    assert_eq!(json["retry_budget"]["limit"], 3);
}
