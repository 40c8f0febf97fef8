//! The gateway's SVID from the SPIFFE Workload API: a real `meshedge agent` (enrolled with
//! a real `meshedge ca`) attests the gateway process and serves its SVID on a unix socket;
//! the gateway presents it to an mTLS upstream that checks it.

#[path = "support/edge.rs"]
mod edge;
mod support;

use edge::*;
use support::*;

const WL_EDGE_ID: &str = "spiffe://example.org/edge/wl";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svid_from_the_workload_api_is_presented_upstream() {
    let pki = Pki::start("edge-wl", &[(PAY_ID, &[]), (WEB_ID, &["api.example.org"])]).await;
    let state = pki.dir.join("ca");
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_meshedge")).unwrap();
    let uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").unwrap().uid()
    };
    run_ok(
        meshedge()
            .args([
                "ca",
                "entry",
                "create",
                "--parent",
                "n2",
                "--spiffe-id",
                WL_EDGE_ID,
            ])
            .args(["--selector", &format!("unix:uid:{uid}")])
            .args(["--selector", &format!("unix:path:{}", exe.display())])
            .arg("--state-dir")
            .arg(&state),
    );
    let token = stdout_of(
        meshedge()
            .args(["ca", "token", "create", "--node", "n2", "--state-dir"])
            .arg(&state),
    );
    let token = token.lines().last().unwrap().trim().to_owned();
    let socket = pki.dir.join("n2.sock");
    let mut cmd = meshedge();
    cmd.args([
        "agent",
        "--ca-addr",
        &pki.ca_addr,
        "--node",
        "n2",
        "--zone",
        "a",
    ])
    .arg("--ca-bundle")
    .arg(&pki.bundle_path)
    .arg("--state-dir")
    .arg(pki.dir.join("n2"))
    .arg("--socket")
    .arg(&socket)
    .args(["--entry-refresh", "1s", "--join-token", &token]);
    let (_agent, _) = spawn_until(cmd, "agent listening on", pki.dir.path());

    let serving = pki.svid(WEB_ID, "serving").await;
    let pay_svid = pki.svid(PAY_ID, "pay").await;
    let pay = Upstream::start(&pki, &pay_svid, "payments").await;
    let identity = format!(r#"workload_api_socket = "unix://{}""#, socket.display());
    let config = config_head(&serving.cert, &serving.key, &identity)
        + &format!(
            r#"
[clusters.payments]
endpoints = ["{}"]
allowed_ids = ["{PAY_ID}"]
[[routes]]
cluster = "payments"
"#,
            pay.addr,
        );
    let path = pki.dir.join("edge-wl.toml");
    std::fs::write(&path, config).unwrap();
    let check = meshedge()
        .args(["edge", "--check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "--check asks the Workload API: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let edge = spawn_edge(&path, pki.dir.path());
    let addr = edge.https;
    let bundle = pki.bundle_path.clone();
    let r = tokio::task::spawn_blocking(move || curl(addr, &bundle, "api.example.org", "/x", &[]))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["peer"],
        WL_EDGE_ID,
        "the upstream saw the Workload API SVID"
    );
}
