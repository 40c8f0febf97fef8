//! The in-task HTTP/1.1 upstream client (`protocol = "http1"`) against a scripted mTLS
//! upstream that speaks raw HTTP/1.1: chunked and until-close bodies, interim responses,
//! a large body, request bodies (in-task up to 64 KiB, hyper's client beyond), keep-alive
//! reuse, idle connections closed by the upstream, the stale-connection resend, a
//! malformed response (502, the gateway keeps serving), and the per-try timeout on a pooled
//! connection whose timer was set for an earlier request.

#[path = "support/edge.rs"]
mod edge;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use edge::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connections the scripted upstream accepted.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const BIG_BODY: usize = 300_000;

/// Reads one request (head and content-length body); `None` when the peer closed.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
) -> Option<(String, Vec<u8>, String)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let mut chunk = [0u8; 16384];
                let n = io.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + length].to_vec();
            buf.drain(..end + 4 + length);
            let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
            return Some((path, body, head));
        }
        let mut chunk = [0u8; 16384];
        let n = io.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An upstream answering by path with hand-written HTTP/1.1.
async fn scripted(acceptor: tokio_rustls::TlsAcceptor) -> Scripted {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let count = connections.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut buf = Vec::new();
                let mut armed = false;
                while let Some((path, body, head)) = read_request(&mut tls, &mut buf).await {
                    if armed {
                        // The race of a keep-alive timeout: the request arrives as the
                        // upstream closes the connection; nothing is answered.
                        return;
                    }
                    let answer: Vec<u8> = match path.as_str() {
                        "/s/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n".to_vec(),
                        "/s/continue" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n".iter().copied().chain(ok("after interim")).collect(),
                        "/s/garbage" => b"HTTP/1.1 abc nonsense\r\n\r\n".to_vec(),
                        "/s/fields" => b"HTTP/1.1 200 OK\r\nServer: scripted\r\nX-Request-Id: from-upstream\r\nAlt-Svc: h2=\":1\"\r\nSet-Cookie: a=1\r\nProxy-Authenticate: Basic\r\nset-cookie: b=2\r\nTrailer: x-t\r\nUpgrade: h2c\r\nTE: gzip\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nContent-Length: 6\r\n\r\nfields".to_vec(),
                        "/s/listed" => b"HTTP/1.1 200 OK\r\nConnection: x-hop\r\nX-Hop: 1\r\nX-Kept: 2\r\nContent-Length: 6\r\n\r\nlisted".to_vec(),
                        "/s/post" => ok(&format!("got {} bytes", body.len())),
                        "/s/head" => ok(&head),
                        "/s/until-close" => {
                            let _ = tls.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
                            let _ = tls.shutdown().await;
                            return;
                        }
                        "/s/big" => {
                            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG_BODY}\r\n\r\n");
                            let _ = tls.write_all(head.as_bytes()).await;
                            for _ in 0..3 {
                                let _ = tls.write_all(&vec![b'x'; BIG_BODY / 3]).await;
                                let _ = tls.flush().await;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            continue;
                        }
                        "/s/idle-close" => {
                            let _ = tls.write_all(&ok("closing soon")).await;
                            let _ = tls.flush().await;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            return;
                        }
                        slow if slow.starts_with("/s/slow-") => {
                            let ms = slow["/s/slow-".len()..].parse().unwrap_or(0);
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            ok("slow")
                        }
                        "/s/arm" => {
                            armed = true;
                            ok("armed")
                        }
                        _ => ok("plain"),
                    };
                    if tls.write_all(&answer).await.is_err() || tls.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Scripted {
        addr,
        connections,
        task,
    }
}

/// The scripted cluster and its route, with `cluster_keys` added to the cluster's table.
fn extra_with(addr: SocketAddr, cluster_keys: &str) -> String {
    format!(
        r#"
[clusters.scripted]
endpoints = ["{addr}"]
allowed_ids = ["{PAY_ID}"]
protocol = "http1"
health_check = {{ enabled = false }}
{cluster_keys}

[[routes]]
name = "scripted"
match = {{ path_prefix = "/s/" }}
cluster = "scripted"
"#
    )
}

/// Rewrites the gateway's config (its listener keys `listener` as started) to route `/s/`
/// to `up` and waits until it does.
async fn route_to_scripted(w: &World, listener: &str, up: &Scripted, cluster_keys: &str) {
    w.rewrite_config(listener, &extra_with(up.addr, cluster_keys));
    for _ in 0..150 {
        if curl_async(w, "api.example.org", "/s/plain", &[])
            .await
            .status
            == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway never routed /s/ after the reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_task_http1_client_against_a_scripted_upstream() {
    let w = World::start("edge-h1-upstream", "http3 = true", "").await;
    let svid = w.pki.svid(PAY_ID, "scripted").await;
    let up = scripted(upstream_tls(&w.pki, &svid)).await;
    route_to_scripted(&w, "http3 = true", &up, "").await;
    let host = "api.example.org";

    // Keep-alive: sequential requests share one upstream connection.
    let before = up.connections.load(Ordering::SeqCst);
    for _ in 0..5 {
        let r = curl_async(&w, host, "/s/chunked", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "hello world"), "{r:?}");
        assert!(
            !r.headers.contains_key("x-trailer"),
            "trailers are not forwarded"
        );
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        before,
        "chunked responses left the pooled connection reusable"
    );

    let r = curl_async(&w, host, "/s/continue", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "after interim"), "{r:?}");

    let r = curl_async(&w, host, "/s/until-close", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "until the end"), "{r:?}");

    let r = curl_async(&w, host, "/s/big", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), BIG_BODY);
    assert!(r.body.bytes().all(|b| b == b'x'));

    // Request bodies: up to 64 KiB through the in-task client, larger through hyper's.
    for size in [1_000usize, 100 * 1024] {
        let file = w.pki.dir.join(&format!("body-{size}"));
        std::fs::write(&file, vec![b'b'; size]).unwrap();
        let arg = format!("@{}", file.display());
        let r = curl_async(&w, host, "/s/post", &["--data-binary", &arg]).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, format!("got {size} bytes").as_str())
        );
    }

    // Upstream header fields: forwarded in order and spelling to HTTP/1.1 clients (the
    // fields as received), by name to HTTP/2 clients (through a header map); hop-by-hop
    // fields and the upstream's request id never pass, names listed in `connection` neither.
    for version in ["--http1.1", "--http2"] {
        let r = curl_async(
            &w,
            host,
            "/s/fields",
            &[version, "-H", "x-request-id: rid-7"],
        )
        .await;
        assert_eq!((r.status, r.body.as_str()), (200, "fields"), "{r:?}");
        assert_eq!(r.headers["server"], "scripted", "{r:?}");
        assert_eq!(r.headers["x-request-id"], "rid-7", "{r:?}");
        assert_eq!(r.headers["date"], "Tue, 01 Dec 2026 00:00:00 GMT", "{r:?}");
        assert_eq!(r.head.matches("rid-7").count(), 1, "{}", r.head);
        let h3_port = w.edge.http3.expect("http3 is on").port();
        assert_eq!(r.headers["alt-svc"], format!("h3=\":{h3_port}\"; ma=86400"));
        assert_eq!(
            r.head.to_ascii_lowercase().matches("alt-svc").count(),
            1,
            "{}",
            r.head
        );
        assert_eq!(
            r.head
                .to_ascii_lowercase()
                .matches("content-length")
                .count(),
            1,
            "{}",
            r.head
        );
        assert_eq!(
            r.head.to_ascii_lowercase().matches("\ndate:").count()
                + usize::from(r.head.to_ascii_lowercase().starts_with("date:")),
            1,
            "{}",
            r.head
        );
        let names: Vec<String> = r
            .head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(name, _)| name.trim().to_ascii_lowercase())
            .collect();
        for gone in ["proxy-authenticate", "trailer", "upgrade", "te"] {
            assert!(!names.iter().any(|n| n == gone), "{gone}: {}", r.head);
        }
        assert!(!r.head.contains("from-upstream"), "{}", r.head);
        let cookies: Vec<_> = r
            .head
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
            .collect();
        assert_eq!(cookies.len(), 2, "{}", r.head);
        if version == "--http1.1" {
            assert_eq!(
                cookies,
                ["Set-Cookie: a=1", "set-cookie: b=2"],
                "as received"
            );
            assert!(r.head.contains("Server: scripted"), "{}", r.head);
        }
        let r = curl_async(&w, host, "/s/listed", &[version]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "listed"), "{r:?}");
        assert_eq!(r.headers["x-kept"], "2", "{r:?}");
        assert!(!r.headers.contains_key("x-hop"), "{r:?}");
        assert!(
            !r.head.to_ascii_lowercase().contains("connection: x-hop"),
            "{}",
            r.head
        );
    }

    // Request header fields: HTTP/1.1 clients' go to the HTTP/1.1 upstream as received (no
    // header map on the fast path), HTTP/2 clients' through the map; both get the gateway's
    // forwarding fields once each, and lose the hop-by-hop ones.
    let client_trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let tp_header = format!("Traceparent: {client_trace}");
    for version in ["--http1.1", "--http2"] {
        let r = curl_async(
            &w,
            host,
            "/s/head",
            &[
                version,
                "-H",
                "X-Custom: A",
                "-H",
                "x-custom: b",
                "-H",
                "X-Forwarded-For: 10.0.0.9",
                "-H",
                "X-Forwarded-Proto: http",
                "-H",
                "TE: gzip",
                "-H",
                "Proxy-Authorization: Basic eA==",
                "-H",
                &tp_header,
                "-H",
                "X-Request-Id: rid-9",
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        let lines: Vec<(String, &str)> = r
            .body
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.trim()))
            .collect();
        let values = |name: &str| -> Vec<&str> {
            lines
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .collect()
        };
        assert_eq!(values("x-custom"), ["A", "b"], "{}", r.body);
        assert_eq!(
            values("x-forwarded-for"),
            ["10.0.0.9, 127.0.0.1"],
            "{}",
            r.body
        );
        assert_eq!(values("x-forwarded-proto"), ["https"], "{}", r.body);
        assert_eq!(values("x-request-id"), ["rid-9"], "{}", r.body);
        assert_eq!(values("host").len(), 1, "{}", r.body);
        let tp = values("traceparent");
        assert_eq!(tp.len(), 1, "{}", r.body);
        assert!(
            tp[0].starts_with(&client_trace[..36]) && tp[0] != client_trace,
            "{tp:?}"
        );
        for gone in ["te", "proxy-authorization", "connection", "keep-alive"] {
            assert!(values(gone).is_empty(), "{gone}: {}", r.body);
        }
        if version == "--http1.1" {
            assert!(
                r.body
                    .replace('\r', "")
                    .contains("\nX-Custom: A\nx-custom: b"),
                "as sent: {}",
                r.body
            );
        }
    }
    // An absolute-form target without a Host field: the upstream gets one host, the URI's.
    let target = format!("https://{host}/s/head");
    let r = curl_async(
        &w,
        host,
        "/s/head",
        &["--http1.1", "--request-target", &target, "-H", "Host:"],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let hosts: Vec<&str> = r
        .body
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
        .collect();
    assert_eq!(hosts.len(), 1, "{}", r.body);
    assert!(hosts[0].contains(host), "{}", r.body);
    // A `connection` field naming another field: that field is not forwarded either.
    let r = curl_async(
        &w,
        host,
        "/s/head",
        &[
            "--http1.1",
            "-H",
            "Connection: x-secret",
            "-H",
            "X-Secret: 1",
            "-H",
            "X-Open: 2",
        ],
    )
    .await;
    let body = r.body.to_ascii_lowercase();
    assert!(
        body.contains("x-open: 2") && !body.contains("x-secret"),
        "{}",
        r.body
    );

    // A malformed response is a 502; the gateway keeps serving.
    let r = curl_async(&w, host, "/s/garbage", &[]).await;
    assert_eq!(r.status, 502, "{r:?}");
    let r = curl_async(&w, host, "/s/plain", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "plain"));

    // An idle connection the upstream closed is not reused.
    let r = curl_async(&w, host, "/s/idle-close", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "closing soon"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = curl_async(&w, host, "/s/plain", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "plain"), "{r:?}");

    // The upstream closes a pooled connection as the next request arrives: that GET is
    // sent again on a new connection, counted, and the client sees no error.
    let r = curl_async(&w, host, "/s/arm", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "armed"));
    let r = curl_async(&w, host, "/s/plain", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "plain"), "{r:?}");
    let (_, text) = admin(w.edge.admin, "GET", "/metrics");
    let resent = metric(
        &text,
        "meshedge_edge_upstream_stale_connection_retries_total{cluster=\"scripted\"}",
    );
    assert_eq!(resent, Some(1.0), "{text}");
}

/// A pooled connection keeps its exchange timer between requests and moves it only when it
/// fires early: a timer set for an earlier request that fired while the connection was idle
/// must neither fail the next request nor keep a slow one from timing out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeout_on_a_pooled_connection_whose_timer_fired_while_idle() {
    let w = World::start("edge-h1-upstream-timer", "", "").await;
    let svid = w.pki.svid(PAY_ID, "scripted").await;
    let up = scripted(upstream_tls(&w.pki, &svid)).await;
    // One retry: the first try has the per-try timeout, the retry (last) the time left.
    let retry =
        "retry = { max_retries = 1, per_try_timeout = { adaptive = false, ceiling = \"300ms\" } }";
    route_to_scripted(&w, "", &up, retry).await;
    let host = "api.example.org";
    let timeouts = || {
        let (_, text) = admin(w.edge.admin, "GET", "/metrics");
        metric(
            &text,
            "meshedge_edge_upstream_failures_total{cluster=\"scripted\",reason=\"timeout\"}",
        )
        .unwrap_or(0.0)
    };

    let r = curl_async(&w, host, "/s/plain", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "plain"), "{r:?}");
    let pooled = up.connections.load(Ordering::SeqCst);
    // The timer set for that request (300 ms) fires while the connection is idle.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = curl_async(&w, host, "/s/slow-150", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "slow"), "{r:?}");
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        pooled,
        "the slow request went over the pooled connection"
    );
    assert_eq!(timeouts(), 0.0, "150 ms is within the per-try timeout");
    // Again after the timer fired while idle, a try over the per-try timeout: the timer is
    // re-armed for it and the try times out; the retry (last, with the request's time left)
    // gets the answer on a new connection.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = curl_async(&w, host, "/s/slow-1000", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "slow"), "{r:?}");
    assert_eq!(timeouts(), 1.0, "the first try timed out");
}
