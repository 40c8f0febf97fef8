//! The admin dashboard (`GET /` on the admin listener) in a real browser: Debian's
//! `chromium`, headless, driven by Playwright (`tests/dashboard/check.mjs`). A gateway with
//! a zonal cluster (two zones serving, a third one on a failover tier) runs as a process;
//! the page must show exactly the endpoints and zones of `/clusters`, chart the share of
//! the traffic we send for the zones whose upstreams served it (none for the others), list
//! the failures we cause (identity mismatch, rejected reload), show certificate expiry,
//! and a screenshot lands in `target/test-artifacts/dashboard.png`.
//!
//! Needs `node`, `/usr/bin/chromium` and `tests/dashboard/node_modules` (scripts/test.sh
//! installs all three); fails loudly without them.

#[path = "support/edge.rs"]
mod edge;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use edge::*;
use support::{meshedge, poll, spawn_until, TempDir};

const CHROMIUM: &str = "/usr/bin/chromium";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Panics with the fix when node, chromium or playwright-core is missing.
fn require_browser_tools() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        matches!(&node, Ok(o) if o.status.success()),
        "node is required for the dashboard browser test (scripts/test.sh installs it): {node:?}"
    );
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is required for the dashboard browser test \
         (scripts/test.sh installs Debian's chromium package)"
    );
    assert!(
        repo()
            .join("tests/dashboard/node_modules/playwright-core")
            .exists(),
        "tests/dashboard/node_modules/playwright-core is missing: run scripts/test.sh \
         (or `npm ci` in tests/dashboard)"
    );
}

/// Requests per zone of `cluster` from `/clusters`.
fn zone_requests(
    admin_addr: std::net::SocketAddr,
    cluster: &str,
) -> std::collections::HashMap<String, u64> {
    let (status, body) = admin(admin_addr, "GET", "/clusters");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut out = std::collections::HashMap::new();
    for c in v["clusters"].as_array().unwrap() {
        if c["name"] != cluster {
            continue;
        }
        for e in c["endpoints"].as_array().unwrap() {
            let zone = e["zone"].as_str().unwrap_or("").to_owned();
            *out.entry(zone).or_insert(0) += e["requests"].as_u64().unwrap_or(0);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium_matches_clusters_and_charts_zone_traffic() {
    require_browser_tools();
    let pki = Pki::start(
        "edge-dashboard",
        &[
            (EDGE_ID, &[]),
            (PAY_ID, &[]),
            (ROGUE_ID, &[]),
            (WEB_ID, &["api.example.org", "www.example.org"]),
        ],
    )
    .await;
    let serving = pki.svid(WEB_ID, "serving").await;
    let me = pki.svid(EDGE_ID, "edge").await;
    let pay_svid = pki.svid(PAY_ID, "pay").await;
    let rogue_svid = pki.svid(ROGUE_ID, "rogue").await;
    let pay = Upstream::start(&pki, &pay_svid, "payments").await;
    let rogue = Upstream::start(&pki, &rogue_svid, "rogue").await;
    // zone-a: two endpoints, zone-b: one, zone-c: one on the failover tier (idle).
    let a1 = Upstream::start(&pki, &pay_svid, "a1").await;
    let a2 = Upstream::start(&pki, &pay_svid, "a2").await;
    let b1 = Upstream::start(&pki, &pay_svid, "b1").await;
    let c1 = Upstream::start(&pki, &pay_svid, "c1").await;
    let zonal = format!(
        r#"
[clusters.zonal]
allowed_ids = ["{PAY_ID}"]
endpoints = [
  {{ address = "{a1}", zone = "zone-a", weight = 2 }},
  {{ address = "{a2}", zone = "zone-a", weight = 2 }},
  {{ address = "{b1}", zone = "zone-b", weight = 1 }},
  {{ address = "{c1}", zone = "zone-c", weight = 1, priority = 1 }},
]

[[routes]]
name = "zonal"
match = {{ path_prefix = "/z" }}
cluster = "zonal"
"#,
        a1 = a1.addr,
        a2 = a2.addr,
        b1 = b1.addr,
        c1 = c1.addr,
    );
    // A one-node fleet (a real `meshedge fleet` supervising a stand-in gateway) whose
    // status file this edge serves at /fleet.
    let fleet_status = pki.dir.join("fleet.json");
    let _fleet = start_fleet(&pki.dir, &fleet_status);
    let text = world_config(
        pki.dir.path(),
        &pki,
        &serving,
        &me,
        &pay,
        &rogue,
        "",
        &zonal,
    )
    .replacen("name = \"e1\"", "name = \"e1\"\nzone = \"zone-a\"", 1)
    .replacen(
        "[admin]\n",
        &format!(
            "[admin]\nfleet_status_file = \"{}\"\n",
            fleet_status.display()
        ),
        1,
    );
    let config_path = pki.dir.join("edge.toml");
    std::fs::write(&config_path, &text).unwrap();
    let edge = spawn_edge(&config_path, pki.dir.path());

    // The page itself: one self-contained HTML file.
    let (status, html) = admin(edge.admin, "GET", "/");
    assert_eq!(status, 200);
    assert!(
        html.contains("<script>") && html.contains("<style>"),
        "{html}"
    );
    for external in ["src=\"http", "href=\"http", "@import", "<link"] {
        assert!(
            !html.contains(external),
            "dashboard loads external assets ({external})"
        );
    }

    poll(Duration::from_secs(20), || {
        let (_, f) = admin(edge.admin, "GET", "/fleet");
        f.contains("\"Ready\"").then_some(())
    })
    .expect("the fleet agent's gateway is ready and served at /fleet");

    // The browser.
    let shot = repo().join("target/test-artifacts/dashboard.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&shot);
    let stderr_path = pki.dir.join("check.stderr");
    let child = Command::new("node")
        .current_dir(repo().join("tests/dashboard"))
        .arg("check.mjs")
        .arg("--admin")
        .arg(format!("http://{}", edge.admin))
        .arg("--screenshot")
        .arg(&shot)
        .arg("--chromium")
        .arg(CHROMIUM)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("node starts");
    let mut child = support::ChildGuard {
        child,
        stderr_path: stderr_path.clone(),
    };
    let mut stdin = child.child.stdin.take().unwrap();
    let stdout = child.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("check.mjs: {line}");
            let _ = tx.send(line);
        }
    });
    let wait_line = |prefix: &str, secs: u64| -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l[prefix.len()..].trim().to_owned(),
                Ok(_) => continue,
                Err(e) => panic!(
                    "no {prefix:?} line from check.mjs ({e}); its stderr:\n{}\nedge stderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default(),
                    edge.guard.stderr()
                ),
            }
        }
    };
    let ready = wait_line("READY", 90);
    eprintln!("page ready: {ready}");
    let before = zone_requests(edge.admin, "zonal");

    // Traffic over a few seconds (several chart bars), one identity mismatch (the rogue
    // upstream presents the wrong SPIFFE ID) and one rejected reload (a broken config).
    let (https, bundle) = (edge.https, pki.bundle_path.clone());
    let cfg = config_path.clone();
    tokio::task::spawn_blocking(move || {
        for round in 0..5 {
            for i in 0..12 {
                let r = curl(https, &bundle, "api.example.org", &format!("/z/{i}"), &[]);
                assert_eq!(r.status, 200, "{r:?}");
            }
            if round == 1 {
                let r = curl(https, &bundle, "api.example.org", "/rogue", &[]);
                assert_eq!(r.status, 502, "{r:?}");
            }
            if round == 2 {
                let tmp = cfg.with_extension("tmp");
                std::fs::write(&tmp, "this is [not a valid config").unwrap();
                std::fs::rename(&tmp, &cfg).unwrap();
            }
            std::thread::sleep(Duration::from_millis(900));
        }
    })
    .await
    .unwrap();
    // Put the good config back (unchanged, so no visible effect beyond a reload).
    let tmp = config_path.with_extension("tmp");
    std::fs::write(&tmp, &text).unwrap();
    std::fs::rename(&tmp, &config_path).unwrap();

    // What each zone served, by the gateway's own counters (the upstreams also see the
    // gateway's health checks, so their request counts are not comparable).
    let after = zone_requests(edge.admin, "zonal");
    let delta = |z: &str| after.get(z).unwrap_or(&0) - before.get(z).unwrap_or(&0);
    let (na, nb, nc) = (delta("zone-a"), delta("zone-b"), delta("zone-c"));
    assert!(
        na + nb + nc >= 60,
        "60 requests counted: {before:?} -> {after:?}"
    );
    assert!(
        na > 0,
        "zone-a (the gateway's zone) served nothing: {after:?}"
    );
    let upstream_saw = |u: &Upstream| u.stats.requests.load(Ordering::SeqCst);
    assert!(upstream_saw(&a1) + upstream_saw(&a2) >= na);
    let report = serde_json::json!({
        "cluster": "zonal",
        "served": { "zone-a": na, "zone-b": nb, "zone-c": nc },
        "events": ["identity mismatch", "config reload rejected"],
    });
    writeln!(stdin, "{report}").unwrap();
    stdin.flush().unwrap();

    let result: serde_json::Value = serde_json::from_str(&wait_line("RESULT", 90)).unwrap();
    let status = child.child.wait().unwrap();
    assert!(
        status.success(),
        "check.mjs failed: {}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    eprintln!("dashboard: {result:#}");
    let legend = &result["legend"];
    assert!(
        legend["zone-a"]["share"].as_f64().unwrap() > 0.0,
        "{legend}"
    );
    assert_eq!(legend["zone-a"]["requests"], na);
    if nc == 0 {
        assert_eq!(legend["zone-c"]["share"].as_f64(), Some(0.0), "{legend}");
    }
    let fleet = result["fleet"].as_str().unwrap_or("");
    assert!(
        fleet.contains("a1") && fleet.contains("Ready") && fleet.contains("zone-a"),
        "fleet members not shown: {fleet:?}"
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 0, "screenshot {} is empty", shot.display());
    eprintln!("screenshot: {} ({size} bytes)", shot.display());
}

/// Starts a one-node `meshedge fleet` (node a1, zone-a) writing `status_file`.
fn start_fleet(dir: &TempDir, status_file: &Path) -> support::ChildGuard {
    let (path, _) = support::one_node_fleet(dir.path(), "a1", "zone-a", status_file);
    let mut cmd = meshedge();
    cmd.args(["fleet", "--config"]).arg(&path);
    spawn_until(cmd, "fleet listening on", dir.path()).0
}
