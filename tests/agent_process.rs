//! The agent as real processes: CA + agent + `meshedge echo` + a client through the
//! library; rotation under load; CA down and back; restart without a token; attestation
//! denials; `agent fetch`.

mod support;

use std::time::{Duration, Instant};

use meshedge_agent::client::WorkloadClient;
use meshedge_agent::source::X509Source;
use meshedge_agent::tls::client_config;
use meshedge_ca::tls::AllowedIds;
use meshedge_ca::SpiffeId;
use support::mesh::*;
use support::*;

const ECHO_ID: &str = "spiffe://example.org/svc/echo";
const CLIENT_ID: &str = "spiffe://example.org/svc/client";

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

/// Polls an async condition until a deadline.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// CA, one agent, an echo and this test as its client, with `ttl` SVIDs.
struct Setup {
    mesh: Mesh,
    agent: ChildGuard,
    echo: ChildGuard,
    echo_addr: String,
    source: X509Source,
}

async fn setup(tag: &str, ttl: Option<&str>) -> Setup {
    let mesh = Mesh::start(tag);
    mesh.entry(ECHO_ID, "n1", &meshedge_selectors(), ttl);
    mesh.entry(CLIENT_ID, "n1", &test_selectors(), ttl);
    let agent = mesh.agent("n1", Some(&mesh.token("n1")));
    let (echo, echo_addr) = mesh.echo("n1", "e1", &[]);
    let source = X509Source::from_workload_api(mesh.socket("n1"), Duration::from_secs(10))
        .await
        .expect("the test gets its SVID from the agent");
    Setup {
        mesh,
        agent,
        echo,
        echo_addr,
        source,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_answers_over_mtls_h1_and_h2_through_the_library() {
    let s = setup("echo", None).await;
    let ctx = s.source.current();
    assert_eq!(ctx.default_svid().unwrap().spiffe_id, id(CLIENT_ID));
    assert_eq!(ctx.svids.len(), 1, "only the test's own entry matches it");
    let cfg = client_config(&s.source, AllowedIds::Exact(vec![id(ECHO_ID)])).unwrap();
    for h2 in [false, true] {
        let a = get(&cfg, &s.echo_addr, "/some/path", h2).await.unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.body["service"], "echo");
        assert_eq!(a.body["instance"], "e1");
        assert_eq!(a.body["zone"], "a");
        assert_eq!(a.body["path"], "/some/path");
        assert_eq!(a.body["peer_spiffe_id"], CLIENT_ID);
    }
    let health = get(&cfg, &s.echo_addr, "/healthz", true).await.unwrap();
    assert_eq!((health.status, &health.body["status"]), (200, &"ok".into()));

    // The client refuses a server whose ID it does not expect.
    let wrong = client_config(
        &s.source,
        AllowedIds::Exact(vec![id("spiffe://example.org/svc/other")]),
    )
    .unwrap();
    let err = get(&wrong, &s.echo_addr, "/", false).await.unwrap_err();
    assert!(err.contains("tls"), "{err}");

    // The echo refuses a client outside the IDs it allows.
    let (_strict, strict_addr) = s.mesh.echo(
        "n1",
        "e2",
        &["--allow", "spiffe://example.org/svc/someone-else"],
    );
    let refused = get(&cfg, &strict_addr, "/", false).await;
    assert!(refused.is_err(), "echo accepted a client it does not allow");
    drop((s.agent, s.echo));
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_rate_and_latency() {
    let s = setup("fail", None).await;
    let (_bad, addr) = s
        .mesh
        .echo("n1", "bad", &["--fail-rate", "1", "--latency", "300ms"]);
    let cfg = client_config(&s.source, AllowedIds::Exact(vec![id(ECHO_ID)])).unwrap();
    let start = Instant::now();
    let a = get(&cfg, &addr, "/", false).await.unwrap();
    assert_eq!(a.status, 503);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        get(&cfg, &addr, "/healthz", false).await.unwrap().status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_under_load_fails_no_request() {
    let s = setup("rotate", Some("2s")).await;
    let cfg = client_config(&s.source, AllowedIds::Exact(vec![id(ECHO_ID)])).unwrap();
    let mut own = s.source.subscribe();
    let first_own = own
        .borrow_and_update()
        .default_svid()
        .unwrap()
        .serial
        .clone();
    let mut long_lived = H2Conn::open(&cfg, &s.echo_addr).await.unwrap();
    let mut server_serials = std::collections::HashSet::new();
    let mut own_serials = std::collections::HashSet::from([first_own]);
    let (mut ok, mut failed) = (0u32, Vec::new());
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        // New connections (new handshakes on both sides) over h1 and h2 ...
        for h2 in [false, true] {
            match get(&cfg, &s.echo_addr, "/load", h2).await {
                Ok(a) if a.status == 200 && a.body["peer_spiffe_id"] == CLIENT_ID => {
                    ok += 1;
                    server_serials.insert(a.peer_serial);
                }
                Ok(a) => failed.push(format!("{} {}", a.status, a.body)),
                Err(e) => failed.push(e),
            }
        }
        // ... and one connection established before every rotation.
        match long_lived.get("/long").await {
            Ok(a) if a.status == 200 => ok += 1,
            Ok(a) => failed.push(format!("long-lived: {}", a.status)),
            Err(e) => failed.push(format!("long-lived: {e}")),
        }
        own_serials.insert(s.source.current().default_svid().unwrap().serial.clone());
    }
    assert!(failed.is_empty(), "{} ok, failures: {failed:?}", ok);
    assert!(ok > 20, "only {ok} requests");
    assert!(
        server_serials.len() >= 3,
        "echo presented {} certificates in 5 s with a 2 s TTL",
        server_serials.len()
    );
    assert!(
        own_serials.len() >= 3,
        "client SVID rotated {} times",
        own_serials.len() - 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ca_down_keeps_workloads_serving_and_recovers() {
    let mut s = setup("cadown", Some("6s")).await;
    let cfg = client_config(&s.source, AllowedIds::Exact(vec![id(ECHO_ID)])).unwrap();
    s.mesh.kill_ca();
    let killed = Instant::now();
    // For the next seconds (SVIDs still valid): requests succeed, and a new Workload API
    // client still gets the cached SVID.
    while killed.elapsed() < Duration::from_secs(3) {
        let a = get(&cfg, &s.echo_addr, "/", true)
            .await
            .expect("served while the CA is down");
        assert_eq!(a.status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = WorkloadClient::connect(s.mesh.socket("n1")).await.unwrap();
    let cached = c
        .fetch_x509_context()
        .await
        .expect("agent serves its cache with the CA down");
    assert_eq!(cached.default_svid().unwrap().spiffe_id, id(CLIENT_ID));
    assert!(
        s.agent.stderr().contains("keeping the cached"),
        "agent did not log the CA failure:\n{}",
        s.agent.stderr()
    );
    let before = s.source.current().default_svid().unwrap().serial.clone();
    s.mesh.start_ca();
    // Backoff is capped; the agent renews soon after the CA returns.
    eventually(
        "a renewal after the CA came back",
        Duration::from_secs(40),
        || {
            let now = s.source.current().default_svid().unwrap().serial.clone();
            let cfg = cfg.clone();
            let addr = s.echo_addr.clone();
            let before = before.clone();
            async move {
                if now == before {
                    return None;
                }
                get(&cfg, &addr, "/", false)
                    .await
                    .ok()
                    .filter(|a| a.status == 200)
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_restart_resumes_without_a_token() {
    use std::os::unix::fs::PermissionsExt;
    let mesh = Mesh::start("restart");
    mesh.entry(CLIENT_ID, "n1", &test_selectors(), None);
    let mut agent = mesh.agent("n1", Some(&mesh.token("n1")));
    let node_pem = mesh.dir.join("n1/node.pem");
    let mode = std::fs::metadata(&node_pem).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "node key file mode");
    agent.kill9();
    let _agent = mesh.agent("n1", None);
    let mut c = WorkloadClient::connect(mesh.socket("n1")).await.unwrap();
    let ctx = c.fetch_x509_context().await.unwrap();
    assert_eq!(ctx.default_svid().unwrap().spiffe_id, id(CLIENT_ID));

    // A fresh state dir without a token is refused, naming what is missing.
    let out = mesh.agent_cmd("n2", None).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("join token"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_svid_renews_over_mtls() {
    let mesh = Mesh::start("noderenew");
    mesh.entry(CLIENT_ID, "n1", &test_selectors(), None);
    let mut cmd = mesh.agent_cmd("n1", Some(&mesh.token("n1")));
    cmd.args(["--node-ttl", "2s"]);
    let (agent, _) = spawn_until(cmd, "agent listening on", mesh.dir.path());
    let node_pem = mesh.dir.join("n1/node.pem");
    let first = std::fs::read(&node_pem).unwrap();
    poll(Duration::from_secs(10), || {
        (std::fs::read(&node_pem).unwrap() != first && agent.stderr().contains("node SVID renewed"))
            .then_some(())
    })
    .expect("node SVID renewed and saved");
}

#[tokio::test(flavor = "multi_thread")]
async fn attestation_denials() {
    let mesh = Mesh::start("deny");
    let other_uid = my_uid() + 4242;
    mesh.entry(CLIENT_ID, "n1", &[format!("unix:uid:{other_uid}")], None);
    let _agent = mesh.agent("n1", Some(&mesh.token("n1")));
    let mut c = WorkloadClient::connect(mesh.socket("n1")).await.unwrap();
    let err = c.fetch_x509_context().await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    let err = c.fetch_x509_bundles().await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");

    // Without the security header: InvalidArgument, before any attestation.
    use meshedge_agent::proto::service::spiffe_workload_a_p_i_client::SpiffeWorkloadAPIClient;
    let socket = mesh.socket("n1");
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap();
    let status = SpiffeWorkloadAPIClient::new(channel)
        .fetch_x509_svid(meshedge_agent::proto::X509SvidRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // An entry created while the agent runs is picked up by the next call.
    mesh.entry(CLIENT_ID, "n1", &test_selectors(), None);
    let ctx = c.fetch_x509_context().await.unwrap();
    assert_eq!(ctx.default_svid().unwrap().spiffe_id, id(CLIENT_ID));
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_writes_files_and_keeps_them_rotated() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup("fetch", Some("2s")).await;
    let out = s.mesh.dir.join("files");
    let hook_log = s.mesh.dir.join("hook.log");
    let mut cmd = meshedge();
    cmd.args(["agent", "fetch", "--watch", "--socket"])
        .arg(s.mesh.socket("n1"))
        .arg("--write-dir")
        .arg(&out)
        .arg("--on-rotate")
        .arg(format!("echo rotated >> {}", hook_log.display()));
    let (_fetch, _) = spawn_until(cmd, "wrote", s.mesh.dir.path());
    let key_mode = std::fs::metadata(out.join("svid.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);
    let chain = std::fs::read_to_string(out.join("svid.pem")).unwrap();
    let bundle = std::fs::read_to_string(out.join("bundle.pem")).unwrap();
    openssl_verify(s.mesh.dir.path(), &bundle, &chain).expect("openssl verifies the written chain");
    poll(Duration::from_secs(10), || {
        let runs = std::fs::read_to_string(&hook_log)
            .unwrap_or_default()
            .lines()
            .count();
        (runs >= 3 && std::fs::read_to_string(out.join("svid.pem")).unwrap() != chain).then_some(())
    })
    .expect("files rewritten and the hook run on rotation");
    // Once-only mode exits after writing.
    let once = s.mesh.dir.join("once");
    run_ok(
        meshedge()
            .args(["agent", "fetch", "--socket"])
            .arg(format!("unix://{}", s.mesh.socket("n1").display()))
            .arg("--write-dir")
            .arg(&once),
    );
    assert!(once.join("svid.pem").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_runs_the_fleet_role_and_stops_its_gateway_on_sigterm() {
    let mesh = Mesh::start("agent-fleet");
    let status_file = mesh.dir.join("fleet.json");
    let (fleet_config, port) = one_node_fleet(mesh.dir.path(), "n1", "a", &status_file);

    // A broken fleet config is refused at start, naming the file.
    std::fs::write(mesh.dir.join("bad.toml"), "node = 1\n").unwrap();
    let mut bad = mesh.agent_cmd("n9", Some(&mesh.token("n9")));
    let out = bad
        .arg("--fleet-config")
        .arg(mesh.dir.join("bad.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.toml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut cmd = mesh.agent_cmd("n1", Some(&mesh.token("n1")));
    cmd.arg("--fleet-config").arg(&fleet_config);
    let (mut agent, _) = spawn_until(cmd, "agent listening on", mesh.dir.path());
    let ready = poll(Duration::from_secs(20), || {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&status_file).ok()?).ok()?;
        (doc["members"][0]["gateway"] == "Ready").then_some(doc)
    });
    assert!(
        ready.is_some(),
        "the agent's fleet role did not start a ready gateway: {}",
        agent.stderr()
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    // The Workload API serves alongside.
    assert!(WorkloadClient::connect(mesh.socket("n1")).await.is_ok());

    // SIGTERM stops both: the supervised gateway is drained and gone.
    run_ok(std::process::Command::new("kill").arg(agent.child.id().to_string()));
    let exited = poll(Duration::from_secs(20), || {
        agent.child.try_wait().ok().flatten()
    });
    assert!(exited.is_some(), "agent did not exit: {}", agent.stderr());
    let gone = poll(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    });
    assert!(gone.is_some(), "the gateway outlived its agent");
}
