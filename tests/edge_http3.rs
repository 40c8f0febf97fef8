//! HTTP/3 on the gateway's port (UDP), checked with aioquic's client (tests/h3_client.py):
//! requests routed to the mTLS upstream like TCP ones, `Alt-Svc` advertised on TCP
//! responses, several requests on one QUIC connection.

#[path = "support/edge.rs"]
mod edge;
mod support;

use edge::*;

fn h3(w: &World, path: &str, n: usize, headers: &[&str]) -> Vec<serde_json::Value> {
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
        .args(["--path", path, "-n", &n.to_string()]);
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
