//! DNS-SD clusters: the gateway browses `_payments._tcp.mesh.test` on a real
//! `meshedge dns serve`, follows registrations and deregistrations made with
//! `meshedge dns register|deregister`, and calls what it finds over mTLS.

#[path = "support/edge.rs"]
mod edge;
mod support;

use std::time::Duration;

use edge::*;
use support::*;

fn dns_update(dns: &str, dir: &TempDir, verb: &str, instance: &str, extra: &[&str]) {
    let mut cmd = meshedge();
    cmd.args(["dns", verb, "--server", dns, "--zone", "mesh.test"])
        .args([
            "--service",
            "_payments._tcp.mesh.test",
            "--instance",
            instance,
        ])
        .arg("--tsig-key-file")
        .arg(dir.join("tsig.key"))
        .args(extra);
    run_ok(&mut cmd);
}

fn register(dns: &str, dir: &TempDir, instance: &str, up: &Upstream, zone: &str) {
    let port = up.addr.port().to_string();
    dns_update(
        dns,
        dir,
        "register",
        instance,
        &[
            "--port",
            &port,
            "--address",
            "127.0.0.1",
            "--locality",
            zone,
            "--ttl",
            "1",
        ],
    );
}

async fn upstream_name(w: &World) -> String {
    let r = curl_async(w, "api.example.org", "/sd/x", &[]).await;
    if r.status != 200 {
        return format!("status {}", r.status);
    }
    r.json()["upstream"].as_str().unwrap_or_default().to_owned()
}

async fn eventually_upstream(w: &World, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = upstream_name(w).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "got {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_sd_cluster_follows_registrations() {
    let dns_dir = TempDir::new("edge-dns");
    let mut cmd = meshedge();
    cmd.args([
        "dns",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--zone",
        "mesh.test",
    ])
    .arg("--state-dir")
    .arg(dns_dir.join("dns"))
    .arg("--tsig-key-file")
    .arg(dns_dir.join("tsig.key"));
    let (_dns, dns) = spawn_until(cmd, "dns listening on", dns_dir.path());

    let extra = format!(
        r#"
[clusters.sd]
dns_sd = {{ service = "_payments._tcp.mesh.test", resolvers = ["{dns}"], refresh = "1s" }}
allowed_ids = ["{PAY_ID}"]

[[routes]]
name = "sd"
match = {{ path_prefix = "/sd" }}
cluster = "sd"
strip_prefix = true
"#
    );
    let w = World::start("edge-dns-sd", "", &extra).await;
    // Nothing registered yet: no endpoint -> 503.
    assert_eq!(upstream_name(&w).await, "status 503");

    register(&dns, &dns_dir, "pay-1", &w.pay, "a");
    eventually_upstream(&w, "payments").await;
    let (_, clusters) = admin(w.edge.admin, "GET", "/clusters");
    let c: serde_json::Value = serde_json::from_str(&clusters).unwrap();
    let sd = c["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sd")
        .unwrap();
    assert_eq!(sd["source"], "dns_sd");
    assert_eq!(sd["endpoints"][0]["zone"], "a");
    assert_eq!(sd["endpoints"][0]["address"], w.pay.addr.to_string());

    // A second instance appears, the first goes away: traffic follows DNS-SD.
    let pay2_svid = w.pki.svid(PAY_ID, "pay2").await;
    let pay2 = Upstream::start(&w.pki, &pay2_svid, "payments-2").await;
    register(&dns, &dns_dir, "pay-2", &pay2, "b");
    dns_update(&dns, &dns_dir, "deregister", "pay-1", &[]);
    eventually_upstream(&w, "payments-2").await;
}
