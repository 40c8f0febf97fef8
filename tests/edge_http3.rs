//! HTTP/3 on the gateway's port (UDP), checked with aioquic's client (tests/h3_client.py):
//! requests routed to the mTLS upstream like TCP ones, `Alt-Svc` advertised on TCP
//! responses, several requests on one QUIC connection; the QUIC connection limit refuses
//! connections beyond it while the others (and TCP) keep being served; an HTTP/3 GET is
//! retried past an endpoint that drops it like a GET over TCP.

#[path = "support/edge.rs"]
mod edge;
mod support;

use edge::*;

/// The aioquic client (tests/h3_client.py) set up for `GET path` to the gateway.
fn h3_command(w: &World, path: &str) -> std::process::Command {
    let addr = w.edge.http3.expect("http3 listening line");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/h3_client.py");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script)
        .args([
            "--connect",
            &addr.to_string(),
            "--server-name",
            "api.example.org",
        ])
        .arg("--cacert")
        .arg(&w.pki.bundle_path)
        .args(["--path", path]);
    cmd
}

fn h3(w: &World, path: &str, n: usize, headers: &[&str]) -> Vec<serde_json::Value> {
    let mut cmd = h3_command(w, path);
    cmd.args(["-n", &n.to_string()]);
    for h in headers {
        cmd.args(["--header", h]);
    }
    let out = cmd.output().expect("python3 runs");
    assert!(
        out.status.success(),
        "h3 client failed (scripts/test.sh installs aioquic): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_requests_are_proxied_and_advertised() {
    let w = World::start("edge-h3", "http3 = true", "").await;
    let h3_addr = w.edge.http3.expect("http3 is on");
    assert_eq!(h3_addr.port(), w.edge.https.port(), "same port, UDP");

    // Alt-Svc on TCP responses.
    let r = curl_async(&w, "api.example.org", "/pay/x", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["alt-svc"],
        format!("h3=\":{}\"; ma=86400", h3_addr.port())
    );

    // Three requests on one QUIC connection through the same routing and mTLS upstream.
    let (bundle_w, path) = (&w, "/pay/h3?q=1");
    let got = tokio::task::block_in_place(|| h3(bundle_w, path, 3, &["x-request-id:h3-req"]));
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_eq!(r["status"], 200, "{r}");
        let j: serde_json::Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert_eq!(j["path"], "/h3?q=1");
        assert_eq!(j["peer"], EDGE_ID);
        assert_eq!(j["headers"]["x-request-id"], "h3-req");
        assert_eq!(j["headers"]["x-forwarded-proto"], "https");
        assert!(
            r["headers"].get("alt-svc").is_none(),
            "no Alt-Svc over HTTP/3"
        );
    }
    let none = tokio::task::block_in_place(|| h3(&w, "/nothing-here", 1, &[]));
    // The catch-all `rogue` route only takes /rogue; this path matches nothing.
    assert_eq!(none[0]["status"], 404);

    let (_, metrics) = admin(w.edge.admin, "GET", "/metrics");
    assert!(
        metrics.contains("protocol=\"h3\""),
        "h3 requests counted:\n{metrics}"
    );
}

/// Starts the aioquic client holding its connection open for `hold` seconds after one
/// request; returns once that request was answered.
fn h3_holder(w: &World, hold: u32) -> (std::process::Child, serde_json::Value) {
    use std::io::BufRead;
    let mut child = h3_command(w, "/pay/held")
        .args(["--hold", &hold.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, serde_json::from_str(&line).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_connections_beyond_the_limit_are_refused_and_others_keep_working() {
    let w = World::start("edge-h3lim", "http3 = true\nquic_max_connections = 2", "").await;
    let (mut a, first) = tokio::task::block_in_place(|| h3_holder(&w, 8));
    let (mut b, second) = tokio::task::block_in_place(|| h3_holder(&w, 8));
    assert_eq!(first["status"], 200, "{first}");
    assert_eq!(second["status"], 200, "{second}");

    // A third connection while two are open: refused during the handshake.
    let refused = tokio::task::block_in_place(|| h3_command(&w, "/pay/third").output().unwrap());
    assert_eq!(
        refused.status.code(),
        Some(3),
        "third QUIC connection not refused: {}",
        String::from_utf8_lossy(&refused.stdout)
    );
    // TCP clients are served all along.
    assert_eq!(
        curl_async(&w, "api.example.org", "/pay/tcp", &[])
            .await
            .status,
        200
    );
    let (_, metrics) = admin(w.edge.admin, "GET", "/metrics");
    assert!(
        metric(
            &metrics,
            "meshedge_edge_requests_refused_total{reason=\"quic_connection_limit\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );

    // Once the held connections close, new QUIC connections are accepted again.
    a.wait().unwrap();
    b.wait().unwrap();
    let again = tokio::task::block_in_place(|| poll_h3(&w));
    assert_eq!(again["status"], 200, "{again}");
}

/// One request on a new QUIC connection, retried for a few seconds while the gateway
/// notices closed connections.
fn poll_h3(w: &World) -> serde_json::Value {
    let started = std::time::Instant::now();
    loop {
        let out = h3_command(w, "/pay/again").output().unwrap();
        if out.status.success() || started.elapsed() > std::time::Duration::from_secs(10) {
            let text = String::from_utf8_lossy(&out.stdout);
            return serde_json::from_str(text.lines().next().unwrap_or("{}")).unwrap_or_default();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// An mTLS endpoint that reads a request and closes the connection without an answer.
async fn dropping_endpoint(w: &World) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncReadExt;
    let acceptor = upstream_tls(&w.pki, &w.pki.svid(PAY_ID, "dropper").await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_gets_are_retried_past_an_endpoint_that_drops_them() {
    let w = World::start("edge-h3retry", "http3 = true", "").await;
    let (dropper, task) = dropping_endpoint(&w).await;
    w.rewrite_config(
        "http3 = true",
        &format!(
            r#"
[clusters.half]
endpoints = ["{dropper}", "{pay}"]
allowed_ids = ["{PAY_ID}"]
protocol = "http1"
health_check = {{ enabled = false }}

[[routes]]
name = "half"
match = {{ path_prefix = "/half" }}
cluster = "half"
"#,
            pay = w.pay.addr
        ),
    );
    support::poll(std::time::Duration::from_secs(30), || {
        let (_, clusters) = admin(w.edge.admin, "GET", "/clusters");
        clusters.contains("\"half\"").then_some(())
    })
    .expect("the config with cluster half is applied");

    // The body of an HTTP/3 GET is only known to be empty at its end: the gateway reads it,
    // so the GET can be sent again after the dropping endpoint failed it.
    let got = tokio::task::block_in_place(|| h3(&w, "/half/x", 12, &[]));
    assert_eq!(got.len(), 12);
    for r in &got {
        assert_eq!(r["status"], 200, "{r}");
    }
    let (_, metrics) = admin(w.edge.admin, "GET", "/metrics");
    let retried = metric(&metrics, "meshedge_edge_retries_total{cluster=\"half\"");
    assert!(
        retried.unwrap_or(0.0) >= 1.0,
        "no retry counted:\n{metrics}"
    );
    task.abort();
}
