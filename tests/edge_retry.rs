//! Retries by the gateway against a cluster whose preferred tier is one dead endpoint
//! (connection refused) and whose next tier is a live one: a GET, a small POST (buffered)
//! and a large streamed POST (never sent to the dead endpoint) are all answered 200 by the
//! live endpoint, and the retries are counted.

#[path = "support/edge.rs"]
mod edge;
mod support;

use edge::*;

#[tokio::test(flavor = "multi_thread")]
async fn never_sent_and_idempotent_requests_are_retried_elsewhere() {
    // A port that refuses connections: bound, then closed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let extra = r#"
[[routes]]
name = "retry"
match = { path_prefix = "/retry" }
cluster = "flaky"
"#;
    let w = World::start("edge-retry", "", "").await;
    let cluster = format!(
        r#"
[clusters.flaky]
endpoints = [{{ address = "{dead}", priority = 0 }}, {{ address = "{pay}", priority = 1 }}]
allowed_ids = ["{PAY_ID}"]
health_check = {{ enabled = false }}
outlier = {{ consecutive_5xx = 0, consecutive_gateway_failure = 0, zone_drain = false }}
"#,
        pay = w.pay.addr,
    );
    // A second gateway of the same world with the extra cluster and route.
    let path = w.pki.dir.join("retry.toml");
    let text = world_config(
        w.pki.dir.path(),
        &w.pki,
        &w.serving,
        &w.me,
        &w.pay,
        &w.rogue,
        "",
        &format!("{cluster}\n{extra}"),
    );
    std::fs::write(&path, text).unwrap();
    let gw = spawn_edge(&path, w.pki.dir.path());

    let big = w.pki.dir.join("big.bin");
    std::fs::write(&big, vec![b'x'; 200 * 1024]).unwrap();
    let data = format!("@{}", big.display());
    for (what, args) in [
        ("GET", vec![]),
        ("small POST", vec!["--data-binary", "hello"]),
        ("streamed POST", vec!["--data-binary", data.as_str()]),
    ] {
        for _ in 0..3 {
            let (addr, bundle) = (gw.https, w.pki.bundle_path.clone());
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            let r = tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                curl(addr, &bundle, "api.example.org", "/retry/x", &args)
            })
            .await
            .unwrap();
            assert_eq!(r.status, 200, "{what}: {r:?}");
            assert_eq!(r.headers["x-upstream"], "payments", "{what}");
        }
    }
    let last = w.pay.stats.last.lock().unwrap().clone().unwrap();
    assert_eq!(last["body_bytes"], 200 * 1024, "{last}");
    let (_, metrics) = admin(gw.admin, "GET", "/metrics");
    let retries = metric(
        &metrics,
        "meshedge_edge_retries_total{cluster=\"flaky\",reason=\"connect_failure\"}",
    );
    assert!(retries.is_some_and(|n| n >= 9.0), "{retries:?}\n{metrics}");
}
