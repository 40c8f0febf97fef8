//! Upstreams outside the mesh: a cluster with `verify_dns_name` checks the upstream's
//! certificate by DNS name (chain to the bundle + name), not by SPIFFE ID. The upstream is
//! the test's mTLS server presenting a certificate whose DNS SAN is `api.example.org`.

#[path = "support/edge.rs"]
mod edge;
mod support;

use edge::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_verifies_upstream_by_dns_name() {
    let pki = Pki::start(
        "edge-dnsname",
        &[(EDGE_ID, &[]), (WEB_ID, &["api.example.org"])],
    )
    .await;
    let serving = pki.svid(WEB_ID, "serving").await;
    let me = pki.svid(EDGE_ID, "edge").await;
    let web = Upstream::start(&pki, &serving, "web").await;
    let identity = format!(
        "cert = \"{}\"\nkey = \"{}\"\nbundle = \"{}\"",
        me.cert.display(),
        me.key.display(),
        pki.bundle_path.display()
    );
    let config = config_head(&serving.cert, &serving.key, &identity)
        + &format!(
            r#"
[clusters.by-name]
endpoints = ["{web}"]
verify_dns_name = "api.example.org"
[clusters.wrong-name]
endpoints = ["{web}"]
verify_dns_name = "other.example.org"
[[routes]]
match = {{ path_prefix = "/right" }}
cluster = "by-name"
[[routes]]
match = {{ path_prefix = "/wrong" }}
cluster = "wrong-name"
"#,
            web = web.addr,
        );
    let path = pki.dir.join("edge.toml");
    std::fs::write(&path, config).unwrap();
    let edge = spawn_edge(&path, pki.dir.path());
    let addr = edge.https;
    let bundle = pki.bundle_path.clone();
    let (right, wrong) = tokio::task::spawn_blocking(move || {
        (
            curl(addr, &bundle, "api.example.org", "/right", &[]),
            curl(addr, &bundle, "api.example.org", "/wrong", &[]),
        )
    })
    .await
    .unwrap();
    assert_eq!(right.status, 200, "{right:?}");
    assert_eq!(
        right.json()["peer"],
        EDGE_ID,
        "the upstream saw the edge's SVID"
    );
    assert_eq!(
        right.json()["sni"],
        "api.example.org",
        "SNI is the verified name"
    );
    assert_eq!(wrong.status, 502, "{wrong:?}");
    assert_eq!(
        wrong.headers.get("x-meshedge-error").map(String::as_str),
        Some("tls"),
        "{wrong:?}"
    );
    assert_eq!(
        web.stats.requests.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the request to the wrongly named cluster never reached the upstream"
    );
}
