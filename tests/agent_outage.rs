//! A CA outage longer than several SVID lifetimes: the node SVID expires while the CA is
//! down, and when the CA returns the agent gets back in by itself (re-attestation with its
//! attestation key), without a join token and without restarting any process. A gateway
//! taking its SVID from the same agent carries client traffic throughout: it never sends a
//! request with an expired certificate (the echo upstream reports the certificate each
//! request came with) and answers 503 `own_svid_expired` instead, until the CA is back.

#[path = "support/edge.rs"]
mod edge;
mod support;

use std::time::{Duration, Instant};

use meshedge_agent::source::X509Source;
use meshedge_agent::tls::client_config;
use meshedge_ca::tls::AllowedIds;
use meshedge_ca::SpiffeId;
use support::mesh::*;
use support::*;

const ECHO_ID: &str = "spiffe://example.org/svc/echo";
const CLIENT_ID: &str = "spiffe://example.org/svc/client";

fn node_svid_not_after(mesh: &Mesh) -> time::OffsetDateTime {
    let text = std::fs::read_to_string(mesh.dir.join("n1").join("node.pem")).unwrap();
    let leaf = meshedge_ca::tls::certs_from_pem(&text).unwrap().remove(0);
    meshedge_ca::svid::not_after_of(&leaf).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_reattests_after_its_node_svid_expired_during_a_ca_outage() {
    let mut mesh = Mesh::start("outage");
    mesh.entry(ECHO_ID, "n1", &meshedge_selectors(), Some("3s"));
    mesh.entry(CLIENT_ID, "n1", &test_selectors(), Some("3s"));
    let mut agent_cmd = mesh.agent_cmd("n1", Some(&mesh.token("n1")));
    agent_cmd.args(["--node-ttl", "3s"]);
    let (mut agent, _) = spawn_until(agent_cmd, "agent listening on", mesh.dir.path());
    let (_echo, echo_addr) = mesh.echo("n1", "e1", &[]);
    let source = X509Source::from_workload_api(mesh.socket("n1"), Duration::from_secs(10))
        .await
        .unwrap();
    let allowed = AllowedIds::Exact(vec![SpiffeId::parse(ECHO_ID).unwrap()]);
    let cfg = client_config(&source, allowed).unwrap();
    assert_eq!(get(&cfg, &echo_addr, "/", false).await.unwrap().status, 200);
    assert!(mesh.dir.join("n1").join("attestation.key").exists());
    let mut gateway = Gateway::start(&mesh, &echo_addr);
    let first = gateway.call();
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.json()["peer_cert_expired"], false);

    // The CA goes away for longer than the node SVID lives.
    mesh.kill_ca();
    let expired = poll(Duration::from_secs(30), || {
        (node_svid_not_after(&mesh) < time::OffsetDateTime::now_utc()).then_some(())
    });
    assert!(
        expired.is_some(),
        "the node SVID never expired while the CA was down"
    );
    let stale_since = Instant::now();
    let mut refused = 0;
    while stale_since.elapsed() < Duration::from_secs(3) || refused == 0 {
        assert!(
            stale_since.elapsed() < Duration::from_secs(20),
            "the gateway never noticed its SVID expired; log:\n{}",
            gateway.edge.guard.stderr()
        );
        // Traffic keeps trying during the outage; failures here are expected once the
        // workload SVIDs expired too.
        let _ = get(&cfg, &echo_addr, "/", false).await;
        let r = gateway.call();
        refused += gateway.check_outage_answer(&r);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // doctor names it: the gateway's certificate step is critical, with the refusals.
    let doctor = meshedge()
        .args(["doctor", "--json", "--window", "0s", "--admin"])
        .arg(gateway.edge.admin.to_string())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let certs = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "certificates valid and renewing")
        .cloned()
        .unwrap_or_default();
    assert_eq!(certs["verdict"], "critical", "{report:#}");
    assert!(
        certs["evidence"].to_string().contains("own SVID expired"),
        "{certs:#}"
    );

    // The CA returns: no token, no restart, and the node and workloads are fresh again.
    mesh.start_ca();
    let back = Instant::now();
    let retry_logged = agent.stderr();
    let mut recovered = None;
    let mut gateway_recovered = None;
    while back.elapsed() < Duration::from_secs(45) {
        let fresh_node = node_svid_not_after(&mesh) > time::OffsetDateTime::now_utc();
        if fresh_node && recovered.is_none() {
            if let Ok(a) = get(&cfg, &echo_addr, "/", false).await {
                if a.status == 200 {
                    recovered = Some(back.elapsed());
                }
            }
        }
        if gateway_recovered.is_none() {
            let r = gateway.call();
            gateway.check_outage_answer(&r);
            if r.status == 200 {
                gateway_recovered = Some(back.elapsed());
            }
        }
        if recovered.is_some() && gateway_recovered.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = recovered
        .unwrap_or_else(|| panic!("no recovery within 45 s; agent log:\n{}", agent.stderr()));
    let gateway_took = gateway_recovered.unwrap_or_else(|| {
        panic!(
            "the gateway did not recover within 45 s; log:\n{}",
            gateway.edge.guard.stderr()
        )
    });
    // Within one retry interval: the node's last backoff delay before the CA came back
    // (the workload cache retries as soon as the node is back), plus 2 s for the
    // re-attestation, the workload SVIDs and the echo and gateway picking them up.
    let interval = last_retry_interval(&retry_logged);
    assert!(
        took.max(gateway_took) <= interval + Duration::from_secs(2),
        "recovery took {took:?} (gateway {gateway_took:?}), the retry interval was {interval:?}; agent log:\n{}",
        agent.stderr()
    );
    // Rotations after the outage keep working: traffic across two more SVID lifetimes.
    let after = Instant::now();
    while after.elapsed() < Duration::from_secs(7) {
        let r = gateway.call();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["peer_cert_expired"], false, "{r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, metrics) = edge::admin(gateway.edge.admin, "GET", "/metrics");
    let counted = metrics
        .lines()
        .filter(|l| l.contains("own_svid_expired") && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(counted >= 1.0, "own_svid_expired not counted:\n{metrics}");
    assert!(
        gateway.edge.guard.child.try_wait().unwrap().is_none(),
        "the gateway process restarted or died"
    );
    assert!(
        agent.stderr().contains("node re-attested"),
        "the agent did not re-attest:\n{}",
        agent.stderr()
    );
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent process restarted or died"
    );
    eprintln!("recovered {took:?} (gateway {gateway_took:?}) after the CA came back; {refused} requests refused while the gateway SVID was expired");
}

/// The last `retry_in` of a failed node SVID renewal in an agent log.
fn last_retry_interval(log: &str) -> Duration {
    let text = log
        .lines()
        .rev()
        .find_map(|l| l.split("retry_in=").nth(1)?.split_whitespace().next())
        .unwrap_or_else(|| panic!("no retry logged:\n{log}"));
    let (number, unit) = text.split_at(text.find(|c: char| c.is_alphabetic() || c == 'µ').unwrap());
    let value: f64 = number.parse().unwrap();
    let secs = match unit {
        "s" => value,
        "ms" => value / 1e3,
        "µs" => value / 1e6,
        "ns" => value / 1e9,
        other => panic!("unit {other} in {text}"),
    };
    Duration::from_secs_f64(secs)
}

/// A `meshedge edge` whose SVID comes from the agent of `n1` (it runs the `meshedge`
/// binary like echo, so it is attested as ECHO_ID), routing everything to one echo.
struct Gateway {
    edge: edge::Edge,
    listener_ca: std::path::PathBuf,
}

impl Gateway {
    fn start(mesh: &Mesh, echo_addr: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["outage.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_path = mesh.dir.join("listener.crt");
        let key_path = mesh.dir.join("listener.key");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let identity = format!(
            r#"workload_api_socket = "unix://{}""#,
            mesh.socket("n1").display()
        );
        let config = edge::config_head(&cert_path, &key_path, &identity)
            + &format!(
                r#"
[clusters.echo]
endpoints = ["{echo_addr}"]
allowed_ids = ["{ECHO_ID}"]
[[routes]]
cluster = "echo"
"#
            );
        let path = mesh.dir.join("edge.toml");
        std::fs::write(&path, config).unwrap();
        Self {
            edge: edge::spawn_edge(&path, mesh.dir.path()),
            listener_ca: cert_path,
        }
    }

    fn call(&self) -> edge::CurlResult {
        edge::curl(self.edge.https, &self.listener_ca, "outage.test", "/", &[])
    }

    /// Checks one answer during or after the outage; 1 if the gateway refused to send.
    fn check_outage_answer(&self, r: &edge::CurlResult) -> u32 {
        match r.status {
            // Reached the echo: with a certificate valid at that moment.
            200 => {
                assert_eq!(r.json()["peer_cert_expired"], false, "{r:?}");
                0
            }
            // Refused by the gateway itself: its own SVID expired.
            503 if r.headers.get("x-meshedge-error").map(String::as_str)
                == Some("own_svid_expired") =>
            {
                1
            }
            // The echo's own certificate expired first: the gateway's handshake fails.
            502 => 0,
            _ => panic!("unexpected answer during the outage: {r:?}"),
        }
    }
}
