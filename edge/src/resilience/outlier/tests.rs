//! Table-driven tests: the case tuples are the tables.
#![allow(clippy::type_complexity)]

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::resilience::testutil::ep;

const OK: Outcome = Outcome::Response { status: 200 };
const E500: Outcome = Outcome::Response { status: 500 };
const E503: Outcome = Outcome::Response { status: 503 };

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `n` endpoints, `per_zone` per zone (zones "z0", "z1", ...).
fn detector(config: OutlierConfig, n: u8, per_zone: u8) -> OutlierDetector {
    let mut d = OutlierDetector::new(config);
    d.set_endpoints((1..=n).map(|i| (ep(i), Zone::new(&format!("z{}", (i - 1) / per_zone)))));
    d
}

fn no_zone_drain() -> OutlierConfig {
    OutlierConfig {
        zone_drain: false,
        ..OutlierConfig::default()
    }
}

#[test]
fn consecutive_failures_eject() {
    // (outcomes in order, index of the outcome that ejects (None: never), reason)
    let c = Outcome::ConnectFailure;
    let cases: &[(&[Outcome], Option<usize>, EjectionReason)] = &[
        (
            &[E503, E503, E503, E503, E503],
            Some(4),
            EjectionReason::ConsecutiveGatewayFailure,
        ),
        (
            &[E503, E503, E503, E503, OK, E503],
            None,
            EjectionReason::Consecutive5xx,
        ),
        (
            &[E500, E500, E500, E500, E500],
            Some(4),
            EjectionReason::Consecutive5xx,
        ),
        // a 500 resets the gateway run but extends the 5xx run
        (
            &[E503, E503, E500, E503, E503],
            Some(4),
            EjectionReason::Consecutive5xx,
        ),
        (
            &[c, Outcome::Reset, Outcome::Timeout, c, c],
            Some(4),
            EjectionReason::ConsecutiveGatewayFailure,
        ),
        (
            &[c, c, Outcome::Cancelled, c, c, c],
            Some(5),
            EjectionReason::ConsecutiveGatewayFailure,
        ),
        (
            &[OK, Outcome::Response { status: 404 }, OK, OK, OK, OK],
            None,
            EjectionReason::Consecutive5xx,
        ),
    ];
    let t0 = Instant::now();
    for (i, &(outcomes, at, reason)) in cases.iter().enumerate() {
        let mut d = detector(no_zone_drain(), 10, 10);
        for (k, &o) in outcomes.iter().enumerate() {
            let got = d.record(t0, ep(1), o);
            if Some(k) == at {
                let e = got.unwrap_or_else(|| panic!("case {i}: no ejection at {k}"));
                assert_eq!((e.reason, e.duration), (reason, secs(30)), "case {i}");
                assert_eq!(e.target, EjectionTarget::Endpoint(ep(1)));
            } else {
                assert_eq!(got, None, "case {i}: outcome {k}");
            }
        }
        assert_eq!(d.is_ejected(ep(1)), at.is_some(), "case {i}");
    }
}

#[test]
fn ejection_time_grows_and_is_capped() {
    let mut d = detector(no_zone_drain(), 10, 10);
    let mut now = Instant::now();
    d.tick(now);
    // (ejection number, expected duration)
    let cases = [
        (1, 30),
        (2, 60),
        (3, 90),
        (4, 120),
        (9, 270),
        (10, 300),
        (11, 300),
    ];
    let mut n = 0;
    for (nth, want) in cases {
        while n < nth {
            n += 1;
            let e = (0..5)
                .find_map(|_| d.record(now, ep(1), E503))
                .expect("ejected");
            if n == nth {
                assert_eq!(e.duration, secs(want), "ejection {nth}");
            }
            now = e.until;
            assert!(
                d.tick(now).contains(&Event::Unejected(ep(1))),
                "ejection {n} ends on time"
            );
            assert!(!d.is_ejected(ep(1)));
        }
    }
}

#[test]
fn multiplier_decays_while_healthy() {
    let mut d = detector(no_zone_drain(), 10, 10);
    let t0 = Instant::now();
    d.tick(t0);
    for _ in 0..5 {
        d.record(t0, ep(1), E503);
    }
    d.tick(t0 + secs(30));
    for _ in 0..5 {
        d.record(t0 + secs(30), ep(1), E503);
    }
    assert_eq!(d.status(ep(1), t0 + secs(30)).map(|s| s.ejections), Some(2));
    // Ejected until 90s; intervals at 40..90 had it ejected; 100 and 110 were clean.
    let mut now = t0 + secs(30);
    while now < t0 + secs(110) {
        now += secs(10);
        d.tick(now);
    }
    assert_eq!(d.status(ep(1), now).map(|s| s.ejections), Some(0));
    let e = (0..5)
        .find_map(|_| d.record(now, ep(1), E503))
        .expect("ejected");
    assert_eq!(e.duration, secs(30), "back to the base time");
}

#[test]
fn max_ejection_percent_allows_at_least_one() {
    // (endpoints, max_ejection_percent, endpoints failing, expected ejected)
    let cases = [
        (10, 10, 3, 1),
        (20, 10, 3, 2),
        (3, 10, 3, 1),
        (6, 50, 6, 3),
        (6, 0, 6, 0),
        (4, 100, 4, 4),
    ];
    let t0 = Instant::now();
    for (n, pct, failing, want) in cases {
        let config = OutlierConfig {
            max_ejection_percent: pct,
            ..no_zone_drain()
        };
        let mut d = detector(config, n, n);
        for i in 1..=failing {
            for _ in 0..5 {
                d.record(t0, ep(i), E503);
            }
        }
        let ejected = (1..=n).filter(|&i| d.is_ejected(ep(i))).count();
        assert_eq!(ejected, want, "{n} endpoints, {pct}%");
        assert_eq!(
            d.overflow_total(),
            u64::from(failing) - want as u64,
            "overflow"
        );
    }
}

/// Feeds one interval of traffic: `(requests, failures)` per endpoint 1..; failures are
/// spread out so no consecutive run reaches 5.
fn interval(d: &mut OutlierDetector, now: Instant, traffic: &[(u32, u32)]) -> Vec<Event> {
    for (i, &(requests, failures)) in traffic.iter().enumerate() {
        let id = ep(i as u8 + 1);
        for k in 0..requests {
            let fail = u64::from(k) * u64::from(failures) / u64::from(requests)
                != u64::from(k + 1) * u64::from(failures) / u64::from(requests);
            d.record(now, id, if fail { E500 } else { OK });
        }
    }
    d.tick(now)
}

#[test]
fn statistical_ejection() {
    let t0 = Instant::now();
    let sr_only = OutlierConfig {
        consecutive_5xx: 0,
        consecutive_gateway_failure: 0,
        failure_percentage: false,
        max_ejection_percent: 50,
        ..no_zone_drain()
    };
    let fp_only = OutlierConfig {
        success_rate: false,
        failure_percentage: true,
        ..sr_only.clone()
    };
    // (config, traffic per endpoint, expected ejected endpoints with reason)
    let sr = EjectionReason::SuccessRate;
    let fp = EjectionReason::FailurePercentage;
    let cases: Vec<(&OutlierConfig, Vec<(u32, u32)>, Vec<(u8, EjectionReason)>)> = vec![
        // mean 0.908, stdev 0.183: threshold 0.561; 50% success is ejected
        (
            &sr_only,
            vec![(100, 1); 5].into_iter().chain([(100, 50)]).collect(),
            vec![(6, sr)],
        ),
        // threshold 0.958 - 1.9 x 0.071 = 0.824: 80% is ejected
        (
            &sr_only,
            vec![(100, 1); 5].into_iter().chain([(100, 20)]).collect(),
            vec![(6, sr)],
        ),
        // natural spread 94..99%: mean 0.965, stdev 0.017, threshold 0.933: none
        (
            &sr_only,
            vec![(100, 1), (100, 3), (100, 5), (100, 2), (100, 4), (100, 6)],
            vec![],
        ),
        // only 4 endpoints with volume: no success-rate ejection
        (
            &sr_only,
            vec![(100, 1); 3]
                .into_iter()
                .chain([(100, 50), (99, 99), (10, 10)])
                .collect(),
            vec![],
        ),
        (
            &fp_only,
            vec![(50, 0); 4].into_iter().chain([(50, 45)]).collect(),
            vec![(5, fp)],
        ),
        (
            &fp_only,
            vec![(50, 0); 4].into_iter().chain([(50, 40)]).collect(),
            vec![],
        ),
        (
            &fp_only,
            vec![(50, 0); 3]
                .into_iter()
                .chain([(50, 45), (49, 49)])
                .collect(),
            vec![],
        ),
    ];
    for (i, (config, traffic, want)) in cases.into_iter().enumerate() {
        let mut d = detector(config.clone(), traffic.len() as u8, 10);
        d.tick(t0);
        let events = interval(&mut d, t0 + secs(10), &traffic);
        let got: Vec<(u8, EjectionReason)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Ejected(Ejection {
                    target: EjectionTarget::Endpoint(id),
                    reason,
                    ..
                }) => (1..=traffic.len() as u8)
                    .find(|&n| ep(n) == *id)
                    .map(|n| (n, *reason)),
                _ => None,
            })
            .collect();
        assert_eq!(got, want, "case {i}");
    }
}

#[test]
fn zone_drains_when_its_endpoints_fail_together() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let t = Outcome::Timeout;
    // (outcomes as (ms, endpoint, outcome), index of the outcome that drains zone z0 or None)
    let cases: &[(&[(u64, u8, Outcome)], Option<usize>)] = &[
        (&[(0, 1, t), (100, 2, t), (200, 1, t)], Some(2)),
        (&[(0, 1, t), (100, 1, t), (200, 1, t), (300, 1, t)], None), // one host of two
        (&[(0, 1, t), (100, 2, OK), (200, 1, t), (300, 2, t)], None), // a success in the window
        (&[(0, 1, t), (700, 2, t), (1400, 1, t)], None),             // spread beyond 500ms
        (&[(0, 1, E500), (10, 2, E500), (20, 1, E500)], None),       // 500 is no gateway failure
        (&[(0, 3, t), (10, 4, t), (20, 3, t)], None),                // zone z1
    ];
    for (i, &(outcomes, at)) in cases.iter().enumerate() {
        let mut d = detector(OutlierConfig::default(), 6, 2);
        for (k, &(off, n, o)) in outcomes.iter().enumerate() {
            let got = d.record(t0 + ms(off), ep(n), o);
            if Some(k) == at {
                let e = got.unwrap_or_else(|| panic!("case {i}: no drain at {k}"));
                assert_eq!(
                    (e.target, e.reason),
                    (
                        EjectionTarget::Zone(Zone::new("z0")),
                        EjectionReason::ZoneFailure
                    )
                );
            } else {
                let z0 = Some(EjectionTarget::Zone(Zone::new("z0")));
                assert_ne!(got.map(|e| e.target), z0, "case {i} at {k}");
            }
        }
        let drained = d.is_zone_drained(&Zone::new("z0"));
        assert_eq!(drained, at.is_some(), "case {i}");
        assert_eq!(
            d.is_ejected(ep(2)),
            drained,
            "case {i}: zone members follow"
        );
    }
}

#[test]
fn drains_and_ejections_end_on_time_or_health_check() {
    let t0 = Instant::now();
    let mut d = detector(OutlierConfig::default(), 6, 2);
    d.tick(t0);
    for n in [1, 2, 1] {
        d.record(t0, ep(n), Outcome::Timeout);
    }
    assert!(d.is_zone_drained(&Zone::new("z0")));
    assert_eq!(d.next_deadline(), Some(t0 + secs(10)));
    assert_eq!(d.on_health_check(ep(2), false), vec![]);
    assert_eq!(
        d.on_health_check(ep(2), true),
        vec![Event::ZoneRestored(Zone::new("z0"))]
    );
    for n in [1, 2, 1] {
        d.record(t0 + secs(1), ep(n), Outcome::Timeout);
    }
    let events = d.tick(t0 + secs(11));
    assert!(
        events.contains(&Event::ZoneRestored(Zone::new("z0"))),
        "{events:?}"
    );
    // Ejected for connect failures: a passing check ends it.
    for _ in 0..5 {
        d.record(t0 + secs(11), ep(5), Outcome::ConnectFailure);
    }
    assert!(d.is_ejected(ep(5)));
    assert_eq!(
        d.on_health_check(ep(5), true),
        vec![Event::Unejected(ep(5))]
    );
    assert!(!d.is_ejected(ep(5)));
    // Ejected for 503 answers: a passing check does not disprove them.
    for _ in 0..5 {
        d.record(t0 + secs(11), ep(4), E503);
    }
    assert!(d.is_ejected(ep(4)));
    assert_eq!(d.on_health_check(ep(4), true), vec![]);
    assert!(d.is_ejected(ep(4)));
}
