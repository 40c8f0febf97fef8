//! Helpers shared by the integration tests: real DNS servers as child processes.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Fails the test loudly when a tool is missing: CI installs them, a silent skip would hide
/// a broken setup.
pub fn require_tool(tool: &str, package: &str) -> std::path::PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "required tool `{tool}` not found: install it with \
         `apt-get install -y {package}` (see discovery/README.md)"
    );
}

static NEXT_HOST: AtomicU8 = AtomicU8::new(10);

/// A loopback address of its own (127.0.0.x) with a free UDP+TCP port, for one server.
pub fn free_addr() -> SocketAddr {
    let host = NEXT_HOST.fetch_add(1, Ordering::Relaxed);
    let seed = u8::try_from(std::process::id() % 200).unwrap_or(0);
    let ip = Ipv4Addr::new(127, 0, seed.wrapping_add(1), host);
    for _ in 0..50 {
        let udp = UdpSocket::bind((ip, 0)).expect("bind loopback");
        let addr = udp.local_addr().expect("addr");
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free port on {ip}");
}

/// A free UDP+TCP port on 127.0.0.1 (for servers such as named that only listen on
/// addresses configured on an interface).
pub fn free_localhost_addr() -> SocketAddr {
    for _ in 0..50 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind loopback");
        let addr = udp.local_addr().expect("addr");
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free port on 127.0.0.1");
}

/// A child process killed (by PID) and reaped on drop.
pub struct ChildGuard {
    name: &'static str,
    child: Child,
}

impl ChildGuard {
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self { name, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics with the child's stderr if it already exited.
    pub fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("{} exited early ({status}): {err}", self.name);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
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

/// Runs `dig` and returns its short output lines.
pub fn dig(server: SocketAddr, name: &str, rtype: &str) -> Vec<String> {
    let dig = require_tool("dig", "bind9-dnsutils");
    let out = Command::new(dig)
        .args([
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            "+short",
            "+tries=1",
            "+time=2",
            name,
            rtype,
        ])
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.starts_with(';'))
        .collect()
}

/// Waits until a DNS server answers on `addr` (any response code).
pub async fn wait_for_dns(addr: SocketAddr, child: &mut ChildGuard) {
    let deadline = Instant::now() + Duration::from_secs(15);
    // A minimal query for ". SOA" with id 1.
    let query: [u8; 17] = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1];
    loop {
        child.check_alive();
        let sock = tokio::net::UdpSocket::bind((addr.ip(), 0))
            .await
            .expect("bind");
        let _ = sock.send_to(&query, addr).await;
        let mut buf = [0u8; 512];
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "dns server on {addr} never answered"
        );
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
