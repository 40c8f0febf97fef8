//! Shared helpers of the process-level tests: temp dirs, `meshedge` child processes that
//! die with the test, polling with a deadline, and openssl.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn meshedge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshedge"))
}

/// A temp dir removed on drop (kept, and named on stderr, when `MESHEDGE_TEST_KEEP` is set:
/// the logs of the processes a failed test started).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "meshedge-test-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("MESHEDGE_TEST_KEEP").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command to completion and returns its output; panics with stderr on failure.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("command starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Stdout of a successful command, trimmed.
pub fn stdout_of(cmd: &mut Command) -> String {
    String::from_utf8(run_ok(cmd).stdout)
        .unwrap()
        .trim()
        .to_owned()
}

/// A child process killed (SIGKILL) with the processes it started, and reaped, on drop.
pub struct ChildGuard {
    pub child: Child,
    pub stderr_path: PathBuf,
}

impl ChildGuard {
    /// Sends SIGKILL now (to the processes it started too) and waits.
    pub fn kill9(&mut self) {
        kill_tree(&mut self.child);
    }
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Spawns `cmd`, waits (up to 30 s) for a stdout line containing `marker`, and returns the
/// guard and the line's last word (e.g. the bound address).
pub fn spawn_until(mut cmd: Command, marker: &str, logs: &Path) -> (ChildGuard, String) {
    let stderr_path = logs.join(format!("child-{}.stderr", rand::random::<u32>()));
    let err = std::fs::File::create(&stderr_path).unwrap();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = marker.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(&marker) {
                let _ = tx.send(line.split_whitespace().last().unwrap_or("").to_owned());
            }
        }
    });
    let guard = ChildGuard { child, stderr_path };
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(word) => (guard, word),
        Err(_) => panic!(
            "child never printed {:?}; stderr:\n{}",
            "marker",
            guard.stderr()
        ),
    }
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `openssl verify -CAfile bundle -untrusted intermediate leaf`; Ok when openssl says OK.
pub fn openssl_verify(dir: &Path, bundle_pem: &str, chain_pem: &str) -> Result<(), String> {
    let blocks: Vec<String> = pem::parse_many(chain_pem)
        .unwrap()
        .iter()
        .map(pem::encode)
        .collect();
    let tag = rand::random::<u32>();
    let ca = dir.join(format!("v{tag}-bundle.pem"));
    let leaf = dir.join(format!("v{tag}-leaf.pem"));
    let inter = dir.join(format!("v{tag}-inter.pem"));
    std::fs::write(&ca, bundle_pem).unwrap();
    std::fs::write(&leaf, &blocks[0]).unwrap();
    std::fs::write(&inter, blocks[1..].concat()).unwrap();
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&ca)
        .arg("-untrusted")
        .arg(&inter)
        .arg(&leaf)
        .output()
        .expect("openssl is installed (the README test command installs it)");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A P-256 key and a PEM CSR for `id` made by openssl (a CSR writer that is not ours).
pub fn openssl_csr(dir: &Path, id: &str, keyspec: &[&str]) -> (PathBuf, String) {
    let tag = rand::random::<u32>();
    let key = dir.join(format!("k{tag}.key"));
    let csr = dir.join(format!("k{tag}.csr"));
    run_ok(
        Command::new("openssl")
            .args(["req", "-new", "-nodes", "-newkey"])
            .args(keyspec)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .args(["-subj", "/O=test", "-addext"])
            .arg(format!("subjectAltName=URI:{id}")),
    );
    (key, std::fs::read_to_string(&csr).unwrap())
}
pub mod mesh;

/// A stand-in gateway for fleet agents (`python3 -c SCRIPT PORT`): answers 200 to every GET,
/// so `/healthz/ready` passes.
pub const STAND_IN_GATEWAY: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// Writes a one-node fleet config (`node` in `zone`, gossip on a free port, key in `dir`,
/// `status_file`) supervising [`STAND_IN_GATEWAY`] on a free port; returns the config path
/// and the gateway's port.
pub fn one_node_fleet(dir: &Path, node: &str, zone: &str, status_file: &Path) -> (PathBuf, u16) {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let gossip = udp.local_addr().unwrap().port();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    drop((udp, tcp));
    std::fs::write(dir.join("fleet.key"), [9u8; 32]).unwrap();
    let config = format!(
        r#"node = "{node}"
zone = "{zone}"
listen = "127.0.0.1:{gossip}"
key_file = "{key}"
expected_members = 1
start_delay = "100ms"
status_file = "{status}"
[gateway]
command = ["python3", "-c", '''{gateway}''', "{port}"]
ready = "127.0.0.1:{port}"
serve = "127.0.0.1:{port}"
"#,
        key = dir.join("fleet.key").display(),
        status = status_file.display(),
        gateway = STAND_IN_GATEWAY,
    );
    let path = dir.join("fleet.toml");
    std::fs::write(&path, config).unwrap();
    (path, port)
}

/// Process ids of the children of `pid` (e.g. an agent's supervised gateway); empty when
/// `pid` is gone.
pub fn children_of(pid: u32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// SIGKILLs `child` and then the processes it had started: a SIGKILLed supervisor cannot
/// stop its own children, and a test must not leave them running.
pub fn kill_tree(child: &mut std::process::Child) {
    let children = children_of(child.id());
    let _ = child.kill();
    let _ = child.wait();
    for pid in children {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}
