//! Hot reload and shutdown of the real gateway process: SIGHUP and file changes apply a
//! new config atomically; an invalid one is refused, counted, and the old one keeps
//! serving; a rotated SVID on disk is presented on new upstream connections without a
//! restart; SIGTERM turns readiness false, finishes in-flight requests and exits 0.

#[path = "support/edge.rs"]
mod edge;
mod support;

use std::time::Duration;

use edge::*;
use support::*;

const NEW_ROUTE: &str = r#"
[[routes]]
name = "new"
match = { path_prefix = "/new" }
cluster = "payments"
"#;

const LATE_CLUSTER: &str = r#"
[clusters.late]
endpoints = ["{pay}"]
allowed_ids = ["spiffe://example.org/svc/payments"]

[[routes]]
name = "late"
match = { path_prefix = "/late" }
cluster = "late"
"#;

fn reloads(w: &World, result: &str) -> f64 {
    let (_, text) = admin(w.edge.admin, "GET", "/metrics");
    metric(
        &text,
        &format!("meshedge_edge_config_reloads_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

async fn status_of(w: &World, path: &str) -> u16 {
    curl_async(w, "api.example.org", path, &[]).await.status
}

async fn eventually_status(w: &World, path: &str, want: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = status_of(w, path).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path}: {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_file_change_invalid_config_and_svid_rotation() {
    let w = World::start("edge-reload", "", "").await;
    assert_eq!(status_of(&w, "/new/x").await, 404);

    // SIGHUP applies a new route.
    w.rewrite_config("", NEW_ROUTE);
    w.signal("HUP");
    eventually_status(&w, "/new/x", 200).await;
    assert!(reloads(&w, "applied") >= 1.0);

    // An invalid file is refused and counted; the running config keeps serving.
    let text = std::fs::read_to_string(&w.config_path).unwrap();
    std::fs::write(
        &w.config_path,
        text.replace("[gateway]", "[gateway]\ntypo_key = 1"),
    )
    .unwrap();
    poll(Duration::from_secs(10), || {
        (reloads(&w, "rejected") >= 1.0).then_some(())
    })
    .expect("the invalid config is rejected (file change noticed)");
    assert_eq!(
        status_of(&w, "/new/x").await,
        200,
        "old config still serving"
    );
    assert!(
        w.edge.guard.stderr().contains("typo_key"),
        "the rejection names the key"
    );

    // Rotate the gateway's SVID on disk: new upstream connections present the new one,
    // the pooled connection keeps working.
    let before = w.pay.stats.client_certs.lock().unwrap().clone();
    assert!(!before.is_empty());
    let fresh = w.pki.svid(EDGE_ID, "edge-next").await;
    let key_tmp = w.pki.dir.join("edge.key.tmp");
    let cert_tmp = w.pki.dir.join("edge.crt.tmp");
    std::fs::write(&key_tmp, &fresh.key_pem).unwrap();
    std::fs::write(&cert_tmp, &fresh.chain_pem).unwrap();
    std::fs::rename(&key_tmp, &w.me.key).unwrap();
    std::fs::rename(&cert_tmp, &w.me.cert).unwrap();
    // A valid config again, with a cluster whose first connection comes after rotation.
    w.rewrite_config(
        "",
        &(NEW_ROUTE.to_owned() + &LATE_CLUSTER.replace("{pay}", &w.pay.addr.to_string())),
    );
    eventually_status(&w, "/late/x", 200).await;
    assert_eq!(
        status_of(&w, "/pay/x").await,
        200,
        "pooled connection still serves"
    );
    let certs = w.pay.stats.client_certs.lock().unwrap().clone();
    let fresh_leaf = meshedge_ca::tls::certs_from_pem(&fresh.chain_pem).unwrap()[0].to_vec();
    assert_eq!(
        certs.last(),
        Some(&fresh_leaf),
        "new connection presents the rotated SVID"
    );
    assert!(!before.contains(&fresh_leaf));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let mut w = World::start("edge-term", "", "").await;
    assert_eq!(admin(w.edge.admin, "GET", "/healthz/ready").0, 200);
    let slow = {
        let (addr, bundle) = (w.edge.https, w.pki.bundle_path.clone());
        std::thread::spawn(move || curl(addr, &bundle, "api.example.org", "/pay/slow", &[]))
    };
    poll(Duration::from_secs(10), || {
        let seen = w.pay.stats.requests_by_conn.lock().unwrap().clone();
        seen.iter().any(|(_, p)| p == "/slow").then_some(())
    })
    .expect("the slow request reached the upstream");
    // An idle HTTP/2 connection, to see its GOAWAY.
    let tls = raw_tls(w.edge.https, &w.pki, b"h2").await;
    let (_h2, h2_conn) = h2::client::handshake(tls).await.unwrap();
    let h2_driver = tokio::spawn(h2_conn);
    w.signal("TERM");
    poll(Duration::from_secs(5), || {
        let (code, _) = admin(w.edge.admin, "GET", "/healthz/ready");
        (code == 503).then_some(())
    })
    .expect("readiness goes false while draining");
    let ended = tokio::time::timeout(Duration::from_secs(10), h2_driver)
        .await
        .expect("the idle HTTP/2 connection is closed by GOAWAY")
        .unwrap();
    if let Err(e) = &ended {
        // GOAWAY, or the socket closing right behind it (the frame then reads as a reset).
        assert!(e.is_go_away() || e.is_io(), "{e:?}");
    }
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "the in-flight request finished: {r:?}");
    let status = poll(Duration::from_secs(10), || {
        w.edge.guard.child.try_wait().unwrap()
    })
    .expect("the gateway exits after draining");
    assert_eq!(status.code(), Some(0), "{}", w.edge.guard.stderr());
}
