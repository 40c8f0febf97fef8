//! `meshedge demo` as a user runs it: everything starts, both gateways answer over HTTPS
//! (curl, checked against the printed bundle) and HTTP/3 (aioquic), `status` shows the three
//! zones, `doctor` is clean; Ctrl-C (SIGTERM) stops every process and a second run works.
//! The demo uses its documented fixed ports, so this test must not run twice at once.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

struct Demo {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Demo {
    /// Ctrl-C, so that the demo stops its children; SIGKILL only if it does not exit.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let stopped = poll(Duration::from_secs(15), || {
            self.child.try_wait().ok().flatten()
        });
        if stopped.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start(state: &std::path::Path) -> (Demo, Vec<String>) {
    let mut child = meshedge()
        .args(["demo", "--state-dir"])
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(state.with_extension("stderr")).unwrap())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut demo = Demo { child, lines: rx };
    let mut printed = Vec::new();
    loop {
        match demo.lines.recv_timeout(Duration::from_secs(90)) {
            Ok(l) => {
                let done = l.starts_with("Ctrl-C");
                printed.push(l);
                if done {
                    break;
                }
            }
            Err(_) => panic!(
                "demo never became ready:\n{}\n{}",
                printed.join("\n"),
                std::fs::read_to_string(state.with_extension("stderr")).unwrap_or_default()
            ),
        }
        if let Ok(Some(status)) = demo.child.try_wait() {
            panic!("demo exited {status}:\n{}", printed.join("\n"));
        }
    }
    (demo, printed)
}

fn line<'a>(printed: &'a [String], prefix: &str) -> &'a str {
    printed
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{}", printed.join("\n")))
        .trim()
}

fn curl(printed: &[String], port: u16, path: &str) -> serde_json::Value {
    let bundle = line(printed, "bundle:");
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "--cacert", bundle, "--resolve"])
        .arg(format!("edge.mesh.test:{port}:127.0.0.1"))
        .arg(format!("https://edge.mesh.test:{port}{path}"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON from :{port}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn demo_starts_serves_and_stops_cleanly_twice() {
    let dir = TempDir::new("demo");
    let state = dir.join("state");
    let (mut demo, printed) = start(&state);
    assert_eq!(line(&printed, "https:"), "https://edge.mesh.test:8443/");
    assert_eq!(line(&printed, "admin:"), "http://127.0.0.1:9901/");
    assert_eq!(line(&printed, "HTTP/3:"), "127.0.0.1:8443");
    let curl_line = printed
        .iter()
        .find(|l| l.starts_with("curl "))
        .expect("a curl line");
    assert!(curl_line.contains("--resolve edge.mesh.test:8443:127.0.0.1"));

    // Both gateways answer through the mesh: echo says which zone served and that the
    // caller was the gateway's SPIFFE ID.
    let a = poll(Duration::from_secs(20), || {
        let v = curl(&printed, 8443, "/hello");
        v["zone"].is_string().then_some(v)
    })
    .expect("gateway 1 serves");
    assert_eq!(a["service"], "echo");
    assert_eq!(a["path"], "/hello");
    assert_eq!(a["peer_spiffe_id"], "spiffe://mesh.test/edge/gw-1");
    let b = curl(&printed, 8444, "/x");
    assert_eq!(b["peer_spiffe_id"], "spiffe://mesh.test/edge/gw-2");

    // HTTP/3 with a client nobody here wrote.
    let h3 = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h3_client.py"))
        .args([
            "--connect",
            "127.0.0.1:8443",
            "--server-name",
            "edge.mesh.test",
            "--cacert",
        ])
        .arg(line(&printed, "bundle:"))
        .args(["--path", "/h3"])
        .output()
        .expect("python3 with aioquic (scripts/test.sh installs it)");
    let h3_out = String::from_utf8_lossy(&h3.stdout);
    assert!(
        h3_out.contains("\\\"path\\\": \\\"/h3\\\"") || h3_out.contains("/h3"),
        "HTTP/3: {h3_out} {}",
        String::from_utf8_lossy(&h3.stderr)
    );
    assert!(h3_out.contains("\"status\": 200"), "HTTP/3: {h3_out}");

    // status shows all three zones with their endpoints; doctor has no findings.
    let status = stdout_of(meshedge().args([
        "status",
        "--admin",
        "127.0.0.1:9901",
        "--admin",
        "127.0.0.1:9902",
    ]));
    for zone in ["zone-a", "zone-b", "zone-c"] {
        assert!(
            status.matches(zone).count() >= 2,
            "{zone} missing:
{status}"
        );
    }
    assert!(status.contains("[ready]"), "{status}");
    let doctor = meshedge()
        .args([
            "doctor",
            "--admin",
            "127.0.0.1:9901",
            "--admin",
            "127.0.0.1:9902",
        ])
        .output()
        .unwrap();
    assert!(
        doctor.status.success(),
        "doctor: {}",
        String::from_utf8_lossy(&doctor.stdout)
    );

    // Kill zone-a's instances the printed way while requests flow: no request fails and
    // gateway 1 (in zone-a) moves to the other zones.
    for n in 1..=2 {
        let pid = std::fs::read_to_string(state.join(format!("pids/echo-zone-a-{n}.pid"))).unwrap();
        run_ok(Command::new("kill").arg(pid.trim()));
    }
    let mut zones = std::collections::BTreeMap::new();
    for i in 0..30 {
        let v = curl(&printed, 8443, &format!("/zone-loss-{i}"));
        *zones
            .entry(v["zone"].as_str().expect("a served answer").to_owned())
            .or_insert(0) += 1;
    }
    assert!(!zones.contains_key("zone-a"), "{zones:?}");
    assert!(
        zones.contains_key("zone-b") && zones.contains_key("zone-c"),
        "{zones:?}"
    );

    // Break something else the printed way: kill the DNS server; gateways keep serving and
    // doctor names the stale discovery.
    let dns_pid = std::fs::read_to_string(state.join("pids/dns.pid")).unwrap();
    run_ok(Command::new("kill").arg(dns_pid.trim()));
    let stale = poll(Duration::from_secs(20), || {
        let d = meshedge()
            .args(["doctor", "--admin", "127.0.0.1:9901"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&d.stdout).into_owned();
        (!d.status.success() && text.contains("stale")).then_some(text)
    });
    assert!(stale.is_some(), "doctor did not report stale discovery");
    assert!(curl(&printed, 8443, "/after-dns")["zone"].is_string());

    // Kill the CA: workloads keep serving; doctor names the outage and the deadline.
    let ca_pid = std::fs::read_to_string(state.join("pids/ca.pid")).unwrap();
    run_ok(Command::new("kill").arg(ca_pid.trim()));
    let outage = poll(Duration::from_secs(60), || {
        let d = meshedge()
            .args(["doctor", "--agent", "127.0.0.1:9201"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&d.stdout).into_owned();
        (!d.status.success() && text.contains("CA outage")).then_some(text)
    })
    .expect("doctor names the CA outage");
    assert!(outage.contains("node SVID expires in"), "{outage}");
    assert!(curl(&printed, 8443, "/after-ca")["zone"].is_string());

    // Ctrl-C: every child stops; a second run on the same ports works.
    run_ok(Command::new("kill").args(["-INT", &demo.child.id().to_string()]));
    let status = poll(Duration::from_secs(20), || {
        demo.child.try_wait().ok().flatten()
    })
    .expect("demo stops on SIGINT");
    assert!(status.success(), "{status}");
    for pid_file in std::fs::read_dir(state.join("pids")).unwrap() {
        let pid = std::fs::read_to_string(pid_file.unwrap().path()).unwrap();
        let alive = std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "process {} outlived the demo", pid.trim());
    }
    let (_again, printed2) = start(&state);
    assert!(curl(&printed2, 8443, "/second")["zone"].is_string());
}
