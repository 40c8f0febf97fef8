//! Listener protection against bad clients, each while the gateway keeps serving others:
//! slowloris (408), oversized heads (431), oversized bodies (413, declared and chunked),
//! malformed requests (400), HTTP/2 rapid reset (GOAWAY, no harm to others).

#[path = "support/edge.rs"]
mod edge;
mod support;

use std::time::{Duration, Instant};

use edge::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LISTENER: &str = r#"header_read_timeout = "1s"
h2_max_pending_accept_reset_streams = 10"#;

const SMALL_BODY_ROUTE: &str = r#"
[[routes]]
name = "small"
match = { path_prefix = "/small" }
cluster = "payments"
max_request_body_bytes = 1000
"#;

async fn read_all(s: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `bytes` on a new HTTP/1.1 TLS connection and reads until it closes (10 s at most).
async fn send_raw(w: &World, bytes: &[u8]) -> String {
    let mut s = raw_tls(w.edge.https, &w.pki, b"http/1.1").await;
    s.write_all(bytes).await.unwrap();
    read_all(&mut s, Duration::from_secs(10)).await
}

async fn still_serving(w: &World) {
    let r = curl_async(w, "api.example.org", "/pay/ok", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_get_4xx_and_others_are_served() {
    // The small-body route must come before the catch-all `rogue` route? No: `/small`
    // matches no earlier route, and routes are tried in order.
    let w = World::start("edge-protect", LISTENER, SMALL_BODY_ROUTE).await;

    // Slowloris: half a head, then silence -> 408 after ~1 s, connection closed.
    let mut s = raw_tls(w.edge.https, &w.pki, b"http/1.1").await;
    s.write_all(b"GET /pay/x HTTP/1.1\r\nhost: api.example.org\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let got = read_all(&mut s, Duration::from_secs(10)).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    still_serving(&w).await;

    // Oversized head -> 431.
    let big = format!("x-big: {}", "a".repeat(17_000));
    let r = curl_async(&w, "api.example.org", "/pay/x", &["--http1.1", "-H", &big]).await;
    assert_eq!(r.status, 431, "{r:?}");

    // Declared body over the route's limit -> 413 without calling the upstream.
    let before = w
        .pay
        .stats
        .requests
        .load(std::sync::atomic::Ordering::SeqCst);
    let body = "b".repeat(5000);
    let r = curl_async(
        &w,
        "api.example.org",
        "/small/x",
        &["--http1.1", "--data-binary", &body],
    )
    .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.headers["x-meshedge-error"], "body_too_large");
    assert_eq!(
        w.pay
            .stats
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        before
    );
    // Chunked (no content-length) over the limit -> 413 too.
    let r = curl_async(
        &w,
        "api.example.org",
        "/small/x",
        &[
            "--http1.1",
            "-H",
            "transfer-encoding: chunked",
            "--data-binary",
            &body,
        ],
    )
    .await;
    assert_eq!(r.status, 413, "{r:?}");
    // Under the limit passes.
    let r = curl_async(
        &w,
        "api.example.org",
        "/small/x",
        &["--data-binary", "tiny"],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body_bytes"], 4);

    // Malformed request line -> 400.
    let got = send_raw(&w, b"G@RBAGE \x01\x02 nonsense\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 400"), "{got:?}");
    still_serving(&w).await;

    // HTTP/2 rapid reset: open and cancel streams in a burst -> GOAWAY for that
    // connection; other clients unaffected.
    let tls = raw_tls(w.edge.https, &w.pki, b"h2").await;
    let (mut client, conn) = h2::client::handshake(tls).await.unwrap();
    let driver = tokio::spawn(conn);
    let mut refused = false;
    for _ in 0..2000 {
        let req = hyper::Request::get(format!(
            "https://api.example.org:{}/pay/slow",
            w.edge.https.port()
        ))
        .body(())
        .unwrap();
        match client.send_request(req, false) {
            Ok((_resp, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(_) => {
                refused = true;
                break;
            }
        }
        if driver.is_finished() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), driver).await;
    assert!(
        refused || ended.is_ok(),
        "the gateway never closed the abusive connection"
    );
    if let Ok(Ok(Err(e))) = &ended {
        assert!(e.is_go_away() || e.is_io() || e.is_reset(), "{e:?}");
    }
    still_serving(&w).await;
}

/// HTTP/1.1 connections start on the gateway's fast path; a chunked request in the middle
/// of a pipelined stream hands the connection to hyper with every unparsed byte, and the
/// requests are answered in order. Malformed heads and handoffs are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_hands_a_pipelined_connection_to_hyper_in_order() {
    let w = World::start("edge-handoff", LISTENER, "").await;
    let got = send_raw(
        &w,
        b"GET /pay/first HTTP/1.1\r\nhost: api.example.org\r\n\r\n\
          POST /pay/chunked HTTP/1.1\r\nhost: api.example.org\r\ntransfer-encoding: chunked\r\n\r\n\
          4\r\ntiny\r\n0\r\n\r\n\
          GET /pay/last HTTP/1.1\r\nhost: api.example.org\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(got.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{got}");
    // The route strips `/pay`; the upstream echoes the path it got.
    let first = got.find("\"path\":\"/first\"").expect(&got);
    let chunked = got.find("\"path\":\"/chunked\"").expect(&got);
    let last = got.find("\"path\":\"/last\"").expect(&got);
    assert!(first < chunked && chunked < last, "{got}");
    assert!(
        got.contains("\"body_bytes\":4"),
        "the chunked body arrived: {got}"
    );

    let got = send_raw(
        &w,
        b"GET /pay/x HTTP/1.1\r\nhost: api.example.org\r\nbad header\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 400"), "{got:?}");

    let (code, metrics) = admin(w.edge.admin, "GET", "/metrics");
    assert_eq!(code, 200);
    let handoffs = metric(
        &metrics,
        "meshedge_edge_h1_handoffs_total{reason=\"transfer_encoding\"}",
    );
    assert!(handoffs >= Some(1.0), "{metrics}");
    let refused = metric(
        &metrics,
        "meshedge_edge_requests_refused_total{reason=\"malformed_head\"}",
    );
    assert!(refused >= Some(1.0), "{metrics}");
    still_serving(&w).await;
}
