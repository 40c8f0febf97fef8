use std::time::Duration;

use super::*;

#[test]
fn empty_tables_are_the_documented_defaults() {
    let c: ClusterResilience = toml::from_str("").expect("parses");
    assert_eq!(c, ClusterResilience::default());
    assert_eq!(c.balancer.overprovisioning_factor, 1.4);
    assert_eq!(c.balancer.panic_threshold, 50.0);
    let o = &c.outlier;
    assert_eq!((o.consecutive_5xx, o.consecutive_gateway_failure), (5, 5));
    assert_eq!(o.interval, Duration::from_secs(10));
    assert_eq!(
        (o.base_ejection_time, o.max_ejection_time),
        (Duration::from_secs(30), Duration::from_secs(300))
    );
    assert_eq!(o.max_ejection_percent, 10);
    assert_eq!(
        (o.success_rate_minimum_hosts, o.success_rate_request_volume),
        (5, 100)
    );
    assert_eq!(o.success_rate_stdev_factor, 1.9);
    assert_eq!(
        (
            o.failure_percentage_threshold,
            o.failure_percentage_minimum_hosts,
            o.failure_percentage_request_volume
        ),
        (85, 5, 50)
    );
    let h = &c.health_check;
    assert_eq!((h.unhealthy_threshold, h.healthy_threshold), (2, 2));
    let r = &c.retry;
    assert_eq!(r.max_retries, 2);
    assert_eq!(
        (r.base_backoff, r.max_backoff),
        (Duration::from_millis(25), Duration::from_millis(250))
    );
    assert_eq!((r.budget_percent, r.budget_min_concurrent), (20.0, 3));
    assert_eq!(r.retriable_statuses, vec![502, 503, 504]);
    assert_eq!(c.circuit_breaker.max_requests, 1024);
    c.validate().expect("defaults are valid");
}

#[test]
fn tables_parse_durations_and_reject_unknown_keys() {
    let text = r#"
        [balancer]
        overprovisioning_factor = 1.2
        [outlier]
        base_ejection_time = "1m"
        [health_check]
        path = "/ready"
        interval = "250ms"
        [retry]
        max_retries = 1
        [retry.per_try_timeout]
        floor = "50ms"
        [circuit_breaker]
        max_pending_requests = 10
    "#;
    let c: ClusterResilience = toml::from_str(text).expect("parses");
    assert_eq!(c.outlier.base_ejection_time, Duration::from_secs(60));
    assert_eq!(c.health_check.interval, Duration::from_millis(250));
    assert_eq!(c.retry.per_try_timeout.floor, Duration::from_millis(50));
    let back = toml::to_string(&c).expect("serializes");
    assert_eq!(
        toml::from_str::<ClusterResilience>(&back).expect("round trip"),
        c
    );

    for table in [
        "balancer",
        "outlier",
        "health_check",
        "retry",
        "retry.per_try_timeout",
        "circuit_breaker",
    ] {
        let bad = format!("[{table}]\ntypo = 1\n");
        let err = toml::from_str::<ClusterResilience>(&bad)
            .expect_err(table)
            .to_string();
        assert!(err.contains("unknown field `typo`"), "{table}: {err}");
    }
    let err = toml::from_str::<ClusterResilience>("[outlier]\ninterval = \"ten\"")
        .expect_err("bad duration")
        .to_string();
    assert!(err.contains("invalid duration \"ten\""), "{err}");
}

#[test]
fn validate_names_the_key() {
    let cases: &[(&str, &str)] = &[
        (
            "[balancer]\noverprovisioning_factor = 0.5",
            "balancer.overprovisioning_factor",
        ),
        (
            "[balancer]\npanic_threshold = 120.0",
            "balancer.panic_threshold",
        ),
        (
            "[outlier]\nmax_ejection_time = \"10s\"",
            "outlier.max_ejection_time",
        ),
        (
            "[outlier]\nmax_ejection_percent = 101",
            "outlier.max_ejection_percent",
        ),
        (
            "[outlier]\nzone_drain_host_share = 0.0",
            "outlier.zone_drain_host_share",
        ),
        (
            "[health_check]\nhealthy_threshold = 0",
            "health_check.healthy_threshold",
        ),
        ("[health_check]\npath = \"healthz\"", "health_check.path"),
        ("[retry]\nbase_backoff = \"1s\"", "retry.max_backoff"),
        (
            "[retry]\nretriable_statuses = [42]",
            "retry.retriable_statuses",
        ),
        (
            "[retry.per_try_timeout]\nfloor = \"5s\"",
            "retry.per_try_timeout.floor",
        ),
    ];
    for &(text, key) in cases {
        let c: ClusterResilience = toml::from_str(text).expect(text);
        assert_eq!(c.validate().map_err(|e| e.key), Err(key), "{text}");
    }
}

#[test]
fn rate_limit_keys_and_burst() {
    // (TOML, key, effective burst, valid)
    let cases: &[(&str, Option<RateLimitKey>, u32, bool)] = &[
        (
            "requests_per_second = 10.0",
            Some(RateLimitKey::Route),
            10,
            true,
        ),
        (
            "requests_per_second = 2.5\nkey = \"client_ip\"",
            Some(RateLimitKey::ClientIp),
            3,
            true,
        ),
        (
            "requests_per_second = 0.1\nkey = \"spiffe_id\"",
            Some(RateLimitKey::SpiffeId),
            1,
            true,
        ),
        (
            "requests_per_second = 5.0\nburst = 20\nkey = \"header:X-API-Key\"",
            Some(RateLimitKey::Header("x-api-key".into())),
            20,
            true,
        ),
        (
            "requests_per_second = 5.0\nkey = \"header:\"",
            None,
            0,
            false,
        ),
        (
            "requests_per_second = 5.0\nkey = \"cookie\"",
            None,
            0,
            false,
        ),
        (
            "requests_per_second = 0.0",
            Some(RateLimitKey::Route),
            1,
            false,
        ),
        (
            "requests_per_second = 1.0\nburst = 0",
            Some(RateLimitKey::Route),
            0,
            false,
        ),
        ("requests_per_second = 1.0\nmax_key = 3", None, 0, false),
    ];
    for &(text, ref key, burst, valid) in cases {
        match (toml::from_str::<RateLimitConfig>(text), key) {
            (Ok(c), Some(key)) => {
                assert_eq!((&c.key, c.effective_burst()), (key, burst), "{text}");
                assert_eq!(c.validate().is_ok(), valid, "{text}");
            }
            (Err(_), None) => {}
            (got, _) => panic!("{text}: {got:?}"),
        }
    }
}
