//! A CA outage longer than several SVID lifetimes: the node SVID expires while the CA is
//! down, and when the CA returns the agent gets back in by itself (re-attestation with its
//! attestation key), without a join token and without restarting any process.

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
    while stale_since.elapsed() < Duration::from_secs(2) {
        // Traffic keeps trying during the outage; failures here are expected once the
        // workload SVIDs expired too.
        let _ = get(&cfg, &echo_addr, "/", false).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The CA returns: no token, no restart, and the node and workloads are fresh again.
    mesh.start_ca();
    let back = Instant::now();
    let mut recovered = None;
    while back.elapsed() < Duration::from_secs(45) {
        let fresh_node = node_svid_not_after(&mesh) > time::OffsetDateTime::now_utc();
        if fresh_node {
            if let Ok(a) = get(&cfg, &echo_addr, "/", false).await {
                if a.status == 200 {
                    recovered = Some(back.elapsed());
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = recovered
        .unwrap_or_else(|| panic!("no recovery within 45 s; agent log:\n{}", agent.stderr()));
    assert!(
        agent.stderr().contains("node re-attested"),
        "the agent did not re-attest:\n{}",
        agent.stderr()
    );
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent process restarted or died"
    );
    eprintln!("recovered {took:?} after the CA came back");
}
