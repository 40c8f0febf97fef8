//! Scenario 5 of issue 8 with real namespaces (needs root; fails loudly without it): three
//! `meshedge fleet` nodes on a bridge hold one VIP in front of a stand-in gateway; the
//! holder's link is cut under a 200 req/s client loop from a fourth namespace. Measures
//! the failed requests and the takeover window; checks one holder at every sample.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{poll, TempDir};

const VIP: &str = "198.18.1.1";
const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/netns/fleet-lab.sh");

const GATEWAY: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(sys.argv[1].encode())
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"#;

const CLIENT: &str = r#"
import socket, sys, time
end = time.time() + float(sys.argv[1]); ok = failed = 0; fails = []
while time.time() < end:
    t = time.time()
    try:
        s = socket.create_connection((sys.argv[2], 8080), timeout=0.1); s.settimeout(0.1)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n"); data = s.recv(200); s.close()
        if b" 200 " in data: ok += 1
        else: raise OSError("bad")
    except OSError:
        failed += 1; fails.append(t)
    time.sleep(max(0, 0.005 - (time.time() - t)))
w = (max(fails) - min(fails)) if fails else 0
print(f"ok {ok} failed {failed} window {w:.3f} first {min(fails) if fails else 0:.3f}", flush=True)
"#;

struct Lab(String);

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .args([LAB, "down", &self.0, "3"])
            .status();
    }
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn holders(prefix: &str) -> Vec<usize> {
    (1..=3)
        .filter(|i| {
            let out = Command::new("ip")
                .args([
                    "-n",
                    &format!("{prefix}-n{i}"),
                    "-o",
                    "addr",
                    "show",
                    "dev",
                    "eth0",
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/"))
        })
        .collect()
}

#[test]
fn vip_moves_on_link_cut_never_two_holders() {
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    assert_eq!(
        uid.trim(),
        "0",
        "this test needs root (network namespaces); run as root"
    );
    let prefix = format!("mf{}", std::process::id() % 100000);
    let out = Command::new("bash")
        .args([LAB, "up", &prefix, "3"])
        .status()
        .unwrap();
    let _lab = Lab(prefix.clone());
    assert!(out.success(), "building the namespaces");
    let dir = TempDir::new("vip");
    std::fs::write(dir.join("fleet.key"), [9u8; 32]).unwrap();
    let mut agents = Vec::new();
    for i in 1..=3 {
        let config = format!(
            r#"node = "n{i}"
zone = "a"
listen = "198.18.0.{i}:7946"
peers = ["198.18.0.1:7946", "198.18.0.2:7946", "198.18.0.3:7946"]
key_file = "{key}"
expected_members = 3
min_per_zone = 3
start_delay = "100ms"
probe_period = "200ms"
suspect_to_down = "600ms"
[gateway]
command = ["python3", "-c", '''{GATEWAY}''', "n{i}"]
ready = "127.0.0.1:8080"
serve = "198.18.0.{i}:8080"
[[vip]]
address = "{VIP}"
prefix = 15
interface = "eth0"
"#,
            key = dir.join("fleet.key").display()
        );
        let path = dir.join(&format!("n{i}.toml"));
        std::fs::write(&path, config).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &format!("{prefix}-n{i}")])
            .arg(env!("CARGO_BIN_EXE_meshedge"))
            .args(["fleet", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(&format!("n{i}.err"))).unwrap())
            .spawn()
            .unwrap();
        agents.push(Kill(child));
    }
    let holder = poll(Duration::from_secs(20), || {
        let h = holders(&prefix);
        (h.len() == 1).then(|| h[0])
    })
    .expect("one holder");
    let client = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{prefix}-cl"),
            "python3",
            "-c",
            CLIENT,
            "4",
            VIP,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let cut_at = Instant::now();
    assert!(Command::new("bash")
        .args([LAB, "cut", &prefix, &holder.to_string()])
        .status()
        .unwrap()
        .success());
    let mut max_holders = 0;
    let mut took = None;
    while cut_at.elapsed() < Duration::from_secs(3) {
        let h = holders(&prefix);
        max_holders = max_holders.max(h.len());
        if took.is_none() && h.iter().any(|&x| x != holder) {
            took = Some(cut_at.elapsed());
        }
    }
    let out = client.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("link cut of n{holder}: survivor holds after {took:?}; client: {summary}");
    let _ = Command::new("bash")
        .args([LAB, "heal", &prefix, &holder.to_string()])
        .status();
    assert!(took.is_some(), "a survivor holds the VIP; client {summary}");
    assert!(max_holders <= 1, "two holders seen at once");
    let back = poll(Duration::from_secs(10), || {
        let h = holders(&prefix);
        (h.len() == 1).then_some(h)
    });
    assert!(back.is_some(), "one holder after the node returns");
}
