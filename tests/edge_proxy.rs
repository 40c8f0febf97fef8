//! The edge gateway as a real process: certificates from a real `meshedge ca`, mTLS
//! upstreams requiring client certificates, curl as the client. Routing, header rules,
//! HTTP/1.1 and HTTP/2 (ALPN) on both sides, pooled upstream connections, identity mismatch
//! (502, counted, never sent), 404, the admin API, `promtool check metrics`.

#[path = "support/edge.rs"]
mod edge;
mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use edge::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_over_mtls_with_header_rules_and_pooling() {
    let w = World::start("edge-proxy", "", "").await;

    // HTTP/2 client, h2 upstream (ALPN), prefix stripped, headers set.
    let r = curl_async(
        &w,
        "api.example.org",
        "/pay/charge?x=1",
        &[
            "--http2",
            "-H",
            "x-request-id: req-42",
            "-H",
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "-H",
            "x-forwarded-for: 203.0.113.9",
        ],
    )
    .await;
    assert_eq!((r.status, r.version.as_str()), (200, "2"), "{r:?}");
    let j = r.json();
    assert_eq!(j["upstream"], "payments");
    assert_eq!(j["path"], "/charge?x=1");
    assert_eq!(j["version"], "HTTP/2.0");
    assert_eq!(j["peer"], EDGE_ID, "the upstream sees the gateway's SVID");
    let h = &j["headers"];
    assert_eq!(h["x-request-id"], "req-42");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    let tp = h["traceparent"].as_str().unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && tp.ends_with("-01"),
        "{tp}"
    );
    assert!(!tp.contains("00f067aa0ba902b7"), "new parent id: {tp}");
    assert_eq!(r.headers["x-request-id"], "req-42");

    // HTTP/1.1 client, h1-only cluster, wildcard host, prefix rewritten, hop-by-hop dropped.
    let r = curl_async(
        &w,
        "www.example.org",
        "/h1/items",
        &[
            "--http1.1",
            "-H",
            "connection: x-secret",
            "-H",
            "x-secret: 1",
            "-H",
            "keep-alive: 5",
        ],
    )
    .await;
    assert_eq!((r.status, r.version.as_str()), (200, "1.1"), "{r:?}");
    let j = r.json();
    assert_eq!(j["path"], "/v1/items");
    assert_eq!(j["version"], "HTTP/1.1");
    assert_eq!(
        j["headers"]["host"],
        format!("www.example.org:{}", w.edge.https.port())
    );
    assert!(j["headers"].get("x-secret").is_none(), "{j}");
    assert!(j["headers"].get("keep-alive").is_none(), "{j}");
    let rid = r.headers["x-request-id"].clone();
    assert_eq!(rid.len(), 32, "a new request id: {rid}");
    assert_eq!(j["headers"]["x-request-id"], rid.as_str());

    // Method mismatch and unknown host: no route.
    let r = curl_async(&w, "www.example.org", "/h1/items", &["-X", "POST"]).await;
    assert_eq!(r.status, 404);
    let r = curl_async(
        &w,
        "api.example.org",
        "/pay/x",
        &["--http1.1", "-H", "host: other.org"],
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.headers["x-meshedge-error"], "no_route");

    // Pooling: many client connections, few upstream connections.
    let before = w.pay.stats.connections.load(Ordering::SeqCst);
    for _ in 0..6 {
        let r = curl_async(&w, "api.example.org", "/pay/again", &[]).await;
        assert_eq!(r.status, 200);
    }
    let after = w.pay.stats.connections.load(Ordering::SeqCst);
    assert_eq!(
        after, before,
        "upstream h2 connection reused (before {before}, after {after})"
    );
    // One per cluster, plus the HTTP/1.1 one an active health check may open while a
    // request holds the other. Connections that stay open are counted, not accepted ones:
    // when the first request and the first health check of the ALPN cluster race, hyper's
    // pool opens two and closes the second once the first has negotiated h2.
    let open = poll(Duration::from_secs(5), || {
        let open = w.pay.stats.open.load(Ordering::SeqCst);
        (open <= 3).then_some(open)
    });
    assert!(
        open.is_some(),
        "{} upstream connections open for two clusters ({after} accepted)",
        w.pay.stats.open.load(Ordering::SeqCst)
    );

    // Identity mismatch: 502, never sent, counted, logged with both IDs.
    let r = curl_async(&w, "api.example.org", "/rogue/x", &[]).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.headers["x-meshedge-error"], "identity");
    assert_eq!(
        w.rogue.stats.requests.load(Ordering::SeqCst),
        0,
        "request never sent"
    );
    let (code, metrics) = admin(w.edge.admin, "GET", "/metrics");
    assert_eq!(code, 200);
    // At least the request's handshake (active health checks also meet the rogue).
    assert!(
        metric(
            &metrics,
            "meshedge_edge_identity_mismatch_total{cluster=\"rogue\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    let log = poll(Duration::from_secs(5), || {
        let s = w.edge.guard.stderr();
        s.contains(ROGUE_ID).then_some(s)
    })
    .expect("mismatch logged");
    let line = log
        .lines()
        .find(|l| l.contains("identity mismatch"))
        .unwrap();
    assert!(
        line.contains(ROGUE_ID) && line.contains("svc/payments"),
        "{line}"
    );

    // Access log: JSON lines with route, cluster, upstream, status.
    let access = poll(Duration::from_secs(5), || {
        let s = std::fs::read_to_string(w.pki.dir.join("access.log")).ok()?;
        (s.lines().count() >= 11).then_some(s)
    })
    .expect("access log lines");
    let first: serde_json::Value = serde_json::from_str(access.lines().next().unwrap()).unwrap();
    assert_eq!(first["route"], "pay");
    assert_eq!(first["cluster"], "payments");
    assert_eq!(first["upstream"], w.pay.addr.to_string());
    assert_eq!(first["status"], 200);
    assert_eq!(first["request_id"], "req-42");
    assert!(first["response_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_and_metrics_pass_promtool() {
    let w = World::start("edge-admin", "", "").await;
    let r = curl_async(&w, "api.example.org", "/pay/x", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(admin(w.edge.admin, "GET", "/healthz/live").0, 200);
    assert_eq!(admin(w.edge.admin, "GET", "/healthz/ready").0, 200);
    let (code, clusters) = admin(w.edge.admin, "GET", "/clusters");
    assert_eq!(code, 200);
    let c: serde_json::Value = serde_json::from_str(&clusters).unwrap();
    let pay = c["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "payments")
        .unwrap();
    assert_eq!(pay["endpoints"][0]["address"], w.pay.addr.to_string());
    assert_eq!(pay["endpoints"][0]["requests"], 1);
    let (code, config) = admin(w.edge.admin, "GET", "/config");
    assert_eq!(code, 200);
    assert!(
        config.contains("[redacted]") && !config.contains("edge.key"),
        "{config}"
    );

    let (_, text) = admin(w.edge.admin, "GET", "/metrics");
    for name in [
        "meshedge_edge_requests_total",
        "meshedge_edge_request_duration_seconds",
        "meshedge_edge_tls_handshakes_total",
        "meshedge_edge_upstream_connections_total",
        "meshedge_edge_cert_expiry_seconds",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    // The duration histogram (bucket counters of our own recorder): each series' +Inf
    // bucket equals its count, and the requests above were counted.
    let counts: Vec<(&str, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("meshedge_edge_request_duration_seconds_count{"))
        .map(|l| {
            let (labels, n) = l.rsplit_once("} ").expect("a sample line");
            (labels, n.parse().expect("an integer count"))
        })
        .collect();
    assert!(counts.iter().any(|(_, n)| *n > 0), "{text}");
    for (labels, n) in counts {
        let inf =
            format!("meshedge_edge_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {n}\n");
        assert!(text.contains(&inf), "{inf} missing:\n{text}");
    }
    let promtool = ["/usr/bin/promtool", "promtool"]
        .into_iter()
        .find(|p| {
            std::process::Command::new(p)
                .arg("--version")
                .output()
                .is_ok()
        })
        .expect("promtool is installed (scripts/test.sh installs the prometheus package)");
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // POST /drain: readiness goes false.
    assert_eq!(admin(w.edge.admin, "POST", "/drain").0, 200);
    assert_eq!(admin(w.edge.admin, "GET", "/healthz/ready").0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_listener_redirects_to_https() {
    let w = World::start(
        "edge-redirect",
        "",
        "[redirect]\naddress = \"127.0.0.1:0\"\n",
    )
    .await;
    let redirect = w.edge.redirect.expect("redirect listening line");
    let (code, _) = admin(redirect, "GET", "/healthz/live");
    assert_eq!(code, 308);
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-H",
            "host: api.example.org",
        ])
        .arg(format!("http://{redirect}/pay/x?y=1"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text,
        format!(
            "308 https://api.example.org:{}/pay/x?y=1",
            w.edge.https.port()
        )
    );
}
