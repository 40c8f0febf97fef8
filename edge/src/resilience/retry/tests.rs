use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::time::Instant;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn decide_follows_outcome_method_and_count() {
    let policy = RetryPolicy::new(RetryConfig::default());
    let budget = RetryBudget::new(&RetryConfig::default());
    let mut rng = SmallRng::seed_from_u64(1);
    let get = |retries| TryContext {
        idempotent: true,
        never_sent: false,
        retries,
    };
    let post = TryContext {
        idempotent: false,
        ..get(0)
    };
    let post_unsent = TryContext {
        never_sent: true,
        ..post
    };
    let r = |status| Outcome::Response { status };
    // (outcome, context, expected: Ok(prefer_other_zone) or Err(reason))
    let cases = [
        (Outcome::ConnectFailure, get(0), Ok(true)),
        (Outcome::Reset, get(0), Ok(true)),
        (Outcome::Timeout, get(1), Ok(true)),
        (r(502), get(0), Ok(false)),
        (r(503), get(1), Ok(false)),
        (r(504), get(0), Ok(false)),
        (r(500), get(0), Err(NoRetry::NotRetryable)),
        (r(200), get(0), Err(NoRetry::NotRetryable)),
        (r(429), get(0), Err(NoRetry::NotRetryable)),
        (Outcome::Cancelled, get(0), Err(NoRetry::NotRetryable)),
        (Outcome::Timeout, get(2), Err(NoRetry::Exhausted)),
        (r(503), post, Err(NoRetry::NotIdempotent)),
        (Outcome::Reset, post, Err(NoRetry::NotIdempotent)),
        (Outcome::ConnectFailure, post, Ok(true)),
        (r(503), post_unsent, Ok(false)),
    ];
    for (outcome, ctx, want) in cases {
        let got = policy
            .decide(outcome, ctx, &budget, &mut rng)
            .map(|r| r.prefer_other_zone);
        assert_eq!(got, want, "{outcome:?} {ctx:?}");
    }
}

#[test]
fn idempotent_methods() {
    for (m, want) in [
        ("GET", true),
        ("HEAD", true),
        ("PUT", true),
        ("DELETE", true),
        ("OPTIONS", true),
        ("POST", false),
        ("PATCH", false),
    ] {
        let method = http::Method::from_bytes(m.as_bytes()).expect("valid method");
        assert_eq!(is_idempotent(&method), want, "{m}");
    }
}

#[test]
fn backoff_is_full_jitter_under_a_growing_cap() {
    let policy = RetryPolicy::new(RetryConfig::default());
    let mut rng = SmallRng::seed_from_u64(42);
    // (retry number, cap)
    for (retry, cap) in [(0, 25), (1, 50), (2, 100), (3, 200), (4, 250), (40, 250)] {
        let samples: Vec<Duration> = (0..2000).map(|_| policy.backoff(retry, &mut rng)).collect();
        let max = samples.iter().max().copied().unwrap_or_default();
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        assert!(max <= ms(cap), "retry {retry}: {max:?} > {cap}ms");
        assert!(
            max >= ms(cap) * 9 / 10,
            "retry {retry}: uses the whole range"
        );
        let half = ms(cap) / 2;
        assert!(
            mean > half * 9 / 10 && mean < half * 11 / 10,
            "retry {retry}: mean {mean:?}"
        );
    }
}

#[test]
fn budget_allows_a_share_of_active_requests_with_a_floor() {
    // (active requests, retries that fit)
    let cases = [
        (0, 3),
        (1, 3),
        (10, 3),
        (15, 3),
        (20, 4),
        (50, 10),
        (100, 20),
    ];
    let config = RetryConfig::default();
    let policy = RetryPolicy::new(config.clone());
    let mut rng = SmallRng::seed_from_u64(3);
    for (active, fit) in cases {
        let mut budget = RetryBudget::new(&config);
        for _ in 0..active {
            budget.request_started();
        }
        for k in 0..fit {
            assert_eq!(
                budget.try_acquire(),
                Ok(()),
                "{active} active: retry {}",
                k + 1
            );
        }
        assert_eq!(
            budget.try_acquire(),
            Err(NoRetry::BudgetExhausted),
            "{active} active"
        );
        let ctx = TryContext {
            idempotent: true,
            never_sent: false,
            retries: 0,
        };
        assert_eq!(
            policy.decide(Outcome::Timeout, ctx, &budget, &mut rng),
            Err(NoRetry::BudgetExhausted)
        );
        assert!(
            policy
                .decide(Outcome::ConnectFailure, ctx, &budget, &mut rng)
                .is_ok(),
            "a connect failure is retried past the budget"
        );
        budget.release();
        assert_eq!(budget.try_acquire(), Ok(()), "released room is reusable");
        assert_eq!(budget.counts(), (active, fit));
    }
}

#[test]
fn hedging_waits_for_the_latency_derived_delay() {
    let policy = RetryPolicy::new(RetryConfig::default());
    let off = RetryPolicy::new(RetryConfig {
        hedge: false,
        ..RetryConfig::default()
    });
    let t0 = Instant::now();
    // (elapsed ms, p90 ms, expected)
    let cases = [
        (5, Some(20), false),
        (20, Some(20), true),
        (9, Some(2), false), // the 10ms floor
        (10, Some(2), true),
        (1000, None, false), // no latency known yet
    ];
    for (elapsed, p90, want) in cases {
        let p90 = p90.map(ms);
        assert_eq!(
            policy.should_hedge(t0 + ms(elapsed), t0, p90),
            want,
            "{elapsed}ms, p90 {p90:?}"
        );
        assert!(!off.should_hedge(t0 + ms(elapsed), t0, p90));
    }
}
