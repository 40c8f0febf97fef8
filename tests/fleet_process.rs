//! The fleet role as real processes on loopback: 3 zones x 2 nodes of `meshedge fleet`, one
//! `meshedge dns serve`, and a stand-in gateway (a small Python HTTP server serving
//! `/healthz/ready`) until `meshedge edge` serves for real.
//!
//! Scenarios of issue 8: (1) `kill -9` of a gateway: its agent restarts it and DNS-SD does
//! not advertise it while down beyond one TTL; (2) `kill -9` of a node's agent and gateway:
//! the other node of the zone runs a gateway, is advertised, and the dead one is withdrawn.
//! The fleet as an agent sees it reaches operators through a real `meshedge edge`: the
//! agent's `status_file`, served at the edge's `GET /fleet`, shown by `meshedge status`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{meshedge, poll, spawn_until, stdout_of, TempDir};

/// A `meshedge fleet` process whose stdout lines are kept.
struct Agent {
    name: String,
    zone: String,
    serve_port: u16,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
    /// The pid of the last gateway that became ready.
    fn ready_pid(&self) -> Option<u32> {
        self.lines()
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("fleet: gateway ready pid "))
            .and_then(|p| p.trim().parse().ok())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        support::kill_tree(&mut self.child);
    }
}

fn free_tcp() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn kill9(pid: u32) {
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
}

fn browse(dns: &str) -> String {
    stdout_of(meshedge().args([
        "dns",
        "browse",
        "--server",
        dns,
        "_meshedge-edge._tcp.mesh.test",
    ]))
}

/// A `meshedge edge` (self-signed listener and identity, one unused cluster) whose admin
/// listener serves `status_file` at `GET /fleet`; returns its guard and admin address.
fn edge_serving_fleet(
    dir: &TempDir,
    status_file: &std::path::Path,
) -> (support::ChildGuard, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["fleet.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.join("edge.crt"), dir.join("edge.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let config = format!(
        r#"
[listener]
address = "127.0.0.1:0"
http3 = false
[[listener.certificates]]
cert = "{c}"
key = "{k}"
[admin]
address = "127.0.0.1:0"
fleet_status_file = "{f}"
[identity]
cert = "{c}"
key = "{k}"
bundle = "{c}"
[clusters.none]
endpoints = ["127.0.0.1:9"]
verify_dns_name = "fleet.test"
health_check = {{ enabled = false }}
[[routes]]
cluster = "none"
"#,
        c = cert_path.display(),
        k = key_path.display(),
        f = status_file.display(),
    );
    let path = dir.join("edge.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = meshedge();
    cmd.args(["edge", "--config"]).arg(&path);
    spawn_until(cmd, "admin listening on", dir.path())
}

#[test]
fn gateway_and_node_failures_keep_every_zone_covered() {
    let dir = TempDir::new("fleet");
    let tsig = dir.join("tsig.key");
    let (_dns_guard, dns) = spawn_until(
        {
            let mut c = meshedge();
            c.args([
                "dns",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--zone",
                "mesh.test",
            ])
            .arg("--tsig-key-file")
            .arg(&tsig);
            c
        },
        "dns listening on",
        dir.path(),
    );
    std::fs::write(dir.join("fleet.key"), [7u8; 32]).unwrap();
    let nodes = [
        ("a1", "a"),
        ("a2", "a"),
        ("b1", "b"),
        ("b2", "b"),
        ("c1", "c"),
        ("c2", "c"),
    ];
    let gossip: Vec<u16> = nodes.iter().map(|_| free_udp()).collect();
    let peers: Vec<String> = gossip
        .iter()
        .map(|p| format!("\"127.0.0.1:{p}\""))
        .collect();
    let mut agents: Vec<Agent> = Vec::new();
    for (i, (name, zone)) in nodes.iter().enumerate() {
        let port = free_tcp();
        let config = format!(
            r#"node = "{name}"
zone = "{zone}"
listen = "127.0.0.1:{gossip}"
peers = [{peers}]
key_file = "{key}"
expected_members = 6
min_per_zone = 1
start_delay = "300ms"
drain_delay = "2s"
probe_period = "200ms"
suspect_to_down = "600ms"
status_file = "{status}"
[gateway]
command = ["python3", "-c", '''{gateway}''', "{port}"]
ready = "127.0.0.1:{port}"
serve = "127.0.0.1:{port}"
[dns]
server = "{dns}"
zone = "mesh.test"
tsig_key_file = "{tsig}"
ttl = 2
"#,
            gossip = gossip[i],
            peers = peers.join(", "),
            key = dir.join("fleet.key").display(),
            tsig = tsig.display(),
            status = dir.join(&format!("{name}-fleet.json")).display(),
            gateway = support::STAND_IN_GATEWAY,
        );
        let path = dir.join(&format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut child = meshedge()
            .args(["fleet", "--config"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join(&format!("{name}.stderr"))).unwrap())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        agents.push(Agent {
            name: name.to_string(),
            zone: zone.to_string(),
            serve_port: port,
            child,
            lines,
        });
    }

    // Every zone gets exactly one ready, advertised gateway.
    let ready = poll(Duration::from_secs(30), || {
        let ready: Vec<usize> = (0..agents.len())
            .filter(|&i| agents[i].ready_pid().is_some())
            .collect();
        let listed = browse(&dns);
        let all_listed = ready
            .iter()
            .all(|&i| listed.contains(&format!(":{}", agents[i].serve_port)));
        (ready.len() == 3 && all_listed).then_some(ready)
    })
    .unwrap_or_else(|| panic!("3 ready gateways; dns:\n{}", browse(&dns)));
    for zone in ["a", "b", "c"] {
        assert_eq!(ready.iter().filter(|&&i| agents[i].zone == zone).count(), 1);
    }
    // No duplicates after the drain delay either.
    std::thread::sleep(Duration::from_secs(3));
    let still: Vec<usize> = (0..agents.len())
        .filter(|&i| agents[i].ready_pid().is_some())
        .collect();
    assert_eq!(still, ready, "no extra gateway starts");

    // The fleet as a1 sees it, through a real edge's GET /fleet and `meshedge status`.
    let a1_status = dir.join("a1-fleet.json");
    let seen = poll(Duration::from_secs(10), || {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&a1_status).ok()?).ok()?;
        let members = doc["members"].as_array()?;
        let ready = members.iter().filter(|m| m["gateway"] == "Ready").count();
        (members.len() == 6 && ready == 3).then_some(doc)
    })
    .expect("a1's status file lists 6 members, 3 with a ready gateway");
    assert_eq!(seen["members"][0]["node"], "a1");
    assert_eq!(seen["members"][0]["local"], true);
    let (_edge, admin) = edge_serving_fleet(&dir, &a1_status);
    let status = stdout_of(meshedge().args(["status", "--admin", &admin]));
    assert!(status.contains("fleet as seen by a1"), "{status}");
    for (name, _) in nodes {
        assert!(
            status.contains(&format!("    {name} ")),
            "{name} missing:\n{status}"
        );
    }
    assert_eq!(status.matches(" Ready     ").count(), 3, "{status}");
    let doctor = meshedge()
        .args(["doctor", "--json", "--window", "0s", "--admin", &admin])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let fleet_step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "fleet covers every zone")
        .cloned()
        .unwrap_or_else(|| panic!("no fleet step: {report:#}"));
    assert_eq!(fleet_step["verdict"], "ok", "{fleet_step:#}");
    for zone in ["a", "b", "c"] {
        assert!(
            fleet_step["evidence"]
                .to_string()
                .contains(&format!("zone {zone}: 1 ready gateway(s) of 1 wanted")),
            "{fleet_step:#}"
        );
    }

    // 1. kill -9 a gateway: its agent restarts it.
    let g = ready[0];
    let old_pid = agents[g].ready_pid().unwrap();
    let killed = Instant::now();
    kill9(old_pid);
    poll(Duration::from_secs(10), || {
        (agents[g].ready_pid() != Some(old_pid)).then_some(())
    })
    .expect("gateway restarted by its agent");
    let restarted = killed.elapsed();
    assert!(
        restarted < Duration::from_secs(2),
        "ready again after {restarted:?} (TTL 2 s)"
    );
    poll(Duration::from_secs(5), || {
        browse(&dns)
            .contains(&format!(":{}", agents[g].serve_port))
            .then_some(())
    })
    .expect("advertised again");
    eprintln!("scenario 1: gateway kill -9 -> ready again in {restarted:?}");

    // 2. kill -9 a node's agent and its gateway: the zone's other node takes over.
    let n = ready[1];
    let zone = agents[n].zone.clone();
    let gw_pid = agents[n].ready_pid().unwrap();
    let victim_port = agents[n].serve_port;
    let victim_name = agents[n].name.clone();
    let lost = Instant::now();
    agents[n].child.kill().unwrap();
    kill9(gw_pid);
    let other = (0..agents.len())
        .find(|&i| i != n && agents[i].zone == zone)
        .unwrap();
    let other_port = agents[other].serve_port;
    poll(Duration::from_secs(15), || {
        let listed = browse(&dns);
        (agents[other].ready_pid().is_some()
            && listed.contains(&format!(":{other_port}"))
            && !listed.contains(&format!(":{victim_port}")))
        .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{} replaced {victim_name}; dns:\n{}\n{:?}",
            agents[other].name,
            browse(&dns),
            agents[other].lines()
        )
    });
    let replaced = lost.elapsed();
    eprintln!("scenario 2: node lost -> replacement ready and advertised in {replaced:?}");
    assert!(
        replaced < Duration::from_secs(5),
        "replacement took {replaced:?}"
    );
}
