//! `meshedge doctor` against a real gateway broken on purpose, one runbook step each: an
//! upstream presenting the wrong SPIFFE ID (the mTLS handshake probe), a dead endpoint
//! (endpoints per zone, 5xx answers), a rate-limit spike and circuit breakers at their limits
//! (concurrent requests, upstream connections), and a rejected config reload. Each must be
//! named in its step, and the exit code is 1.

#[path = "support/edge.rs"]
mod edge;
mod support;

use std::time::Duration;

use edge::*;
use serde_json::Value;
use support::*;

/// Clusters and routes added to the World's config (its `payments` upstream is `{pay}`).
const BROKEN: &str = r#"
[clusters.dead]
endpoints = [{ address = "127.0.0.1:9", zone = "z9" }]
allowed_ids = ["spiffe://example.org/svc/payments"]
connect_timeout = "200ms"
health_check = { interval = "200ms", timeout = "150ms" }

[clusters.slow]
endpoints = ["{pay}"]
allowed_ids = ["spiffe://example.org/svc/payments"]
circuit_breaker = { max_requests = 1 }
health_check = { enabled = false }

[clusters.narrow]
endpoints = ["{pay}"]
allowed_ids = ["spiffe://example.org/svc/payments"]
protocol = "http1"
circuit_breaker = { max_connections = 1 }
health_check = { enabled = false }

[[routes]]
name = "narrow"
match = { path_prefix = "/narrow" }
cluster = "narrow"

[[routes]]
name = "limited"
match = { path_prefix = "/limited" }
cluster = "payments"
rate_limit = { requests_per_second = 0.5, burst = 1, key = "client_ip" }

[[routes]]
name = "slowc"
match = { path_prefix = "/slowc" }
cluster = "slow"

[[routes]]
name = "dead"
match = { path_prefix = "/dead" }
cluster = "dead"
"#;

fn doctor(w: &World, extra: &[&str]) -> (Option<i32>, String) {
    let out = meshedge()
        .args(["doctor", "--admin", &w.edge.admin.to_string()])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `n` requests at once to `{prefix}{i}` (each its own curl and connection).
fn concurrently(w: &World, prefix: &str, n: usize) -> Vec<CurlResult> {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let (addr, bundle) = (w.edge.https, w.pki.bundle_path.clone());
            let path = format!("{prefix}{i}");
            std::thread::spawn(move || curl(addr, &bundle, "api.example.org", &path, &[]))
        })
        .collect();
    calls.into_iter().map(|t| t.join().unwrap()).collect()
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {report:#}"))
}

fn says(step: &Value, text: &str) -> bool {
    step["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e.as_str().unwrap_or("").contains(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_each_broken_thing_in_its_step() {
    let w = World::start("doctor", "", "").await;
    w.rewrite_config("", &BROKEN.replace("{pay}", &w.pay.addr.to_string()));
    poll(Duration::from_secs(30), || {
        let (_, clusters) = admin(w.edge.admin, "GET", "/clusters");
        clusters.contains("\"dead\"").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the config with the broken clusters was not applied; gateway log:\n{}",
            w.edge.guard.stderr()
        )
    });

    // A rate-limit spike, a breaker at its limit, requests to a dead endpoint.
    for i in 0..4 {
        curl_async(&w, "api.example.org", &format!("/limited/{i}"), &[]).await;
    }
    let slow: Vec<u16> = concurrently(&w, "/slowc/slow", 3)
        .iter()
        .map(|r| r.status)
        .collect();
    assert!(slow.contains(&503), "breaker never opened: {slow:?}");
    // max_connections = 1 over HTTP/1.1 (one request per connection at a time): concurrent
    // requests needing a second upstream connection get a fast 503 naming the limit; the
    // one on the connection is served.
    let narrow = concurrently(&w, "/narrow/slow", 3);
    assert!(narrow.iter().any(|r| r.status == 200), "{narrow:?}");
    assert!(
        narrow.iter().any(|r| r.status == 503
            && r.headers.get("x-meshedge-circuit-open").map(String::as_str)
                == Some("max_connections")),
        "{narrow:?}"
    );
    for i in 0..5 {
        let r = curl_async(&w, "api.example.org", &format!("/dead/{i}"), &[]).await;
        assert!(r.status >= 500, "{r:?}");
    }
    poll(Duration::from_secs(30), || {
        let (_, clusters) = admin(w.edge.admin, "GET", "/clusters");
        let clusters: Value = serde_json::from_str(&clusters).ok()?;
        let dead = clusters["clusters"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "dead")?
            .clone();
        (dead["endpoints"][0]["health"] == "unhealthy").then_some(())
    })
    .expect("the dead endpoint turns unhealthy");

    // A config that does not load, on SIGHUP: rejected, the old one keeps serving.
    let good = std::fs::read_to_string(&w.config_path).unwrap();
    std::fs::write(&w.config_path, good.clone() + "\n[listener.nonsense]\n").unwrap();
    w.signal("HUP");
    poll(Duration::from_secs(30), || {
        let (_, m) = admin(w.edge.admin, "GET", "/metrics");
        m.contains("result=\"rejected\"").then_some(())
    })
    .expect("the reload is rejected");
    std::fs::write(&w.config_path, good).unwrap();

    let (code, text) = doctor(&w, &["--json", "--window", "0s"]);
    assert_eq!(code, Some(1), "{text}");
    let report: Value = serde_json::from_str(&text).unwrap();
    let handshake = step(&report, "mTLS handshake per zone");
    assert_eq!(handshake["verdict"], "critical", "{handshake:#}");
    assert!(
        says(handshake, "cluster rogue") && says(handshake, ROGUE_ID),
        "{handshake:#}"
    );
    assert!(
        says(handshake, PAY_ID),
        "payments presented its ID: {handshake:#}"
    );
    let zones = step(&report, "endpoints per zone");
    assert_eq!(zones["verdict"], "critical", "{zones:#}");
    assert!(
        says(zones, "cluster dead: all 1 endpoints unhealthy"),
        "{zones:#}"
    );
    let errors = step(&report, "upstream latency and errors");
    assert!(says(errors, "were 5xx"), "{errors:#}");
    assert!(says(errors, "cluster=\"dead\""), "{errors:#}");
    let limits = step(&report, "rate limits and circuit breakers");
    assert_eq!(limits["verdict"], "warning", "{limits:#}");
    assert!(
        says(limits, "rate-limited") && says(limits, "circuit breaker"),
        "{limits:#}"
    );
    assert!(says(limits, "reason=\"max_connections\""), "{limits:#}");
    // The SIGHUP and the file watch (1 s) may both try the broken file: one or two rejections.
    let reloads = step(&report, "config reloads");
    assert_eq!(reloads["verdict"], "warning", "{reloads:#}");
    assert!(
        says(reloads, "1 config reloads rejected") || says(reloads, "2 config reloads rejected"),
        "{reloads:#}"
    );
    assert_eq!(step(&report, "gateway live and ready")["verdict"], "ok");

    // The default: counters over a 2 s window, nothing happening meanwhile, so the
    // counter-based steps are quiet while the state-based ones still fail.
    let (code, text) = doctor(&w, &["--window", "1s"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("0 of 0 answers were 5xx"), "{text}");
    assert!(
        text.contains("[critical]  mTLS handshake per zone"),
        "{text}"
    );
    assert!(
        text.contains("[ok]        rate limits and circuit breakers"),
        "{text}"
    );
}
