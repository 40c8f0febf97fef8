//! A CA, agents and echo workloads as real processes, for the agent tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;

use super::*;

/// The uid of the test process.
pub fn my_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        })
        .expect("/proc/self is readable")
}

/// A running CA with its state dir, and the files agents need.
pub struct Mesh {
    pub dir: TempDir,
    pub ca: Option<ChildGuard>,
    pub ca_addr: String,
    pub bundle: PathBuf,
}

impl Mesh {
    /// `ca init` (min TTL 1 s so tests can ask for short SVIDs) and `ca serve` on port 0.
    pub fn start(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        run_ok(
            meshedge()
                .args([
                    "ca",
                    "init",
                    "--trust-domain",
                    "example.org",
                    "--min-ttl",
                    "1s",
                ])
                .args(["--default-ttl", "1h", "--state-dir"])
                .arg(dir.join("ca")),
        );
        let bundle = dir.join("bundle.pem");
        std::fs::write(
            &bundle,
            stdout_of(
                meshedge()
                    .args(["ca", "bundle", "--state-dir"])
                    .arg(dir.join("ca")),
            ),
        )
        .unwrap();
        let mut mesh = Self {
            dir,
            ca: None,
            ca_addr: "127.0.0.1:0".into(),
            bundle,
        };
        mesh.start_ca();
        mesh
    }

    /// (Re)starts `ca serve` on the same address as before (port 0 the first time).
    pub fn start_ca(&mut self) {
        let addr = self.ca_addr.clone();
        let (guard, bound) = poll(Duration::from_secs(10), || {
            let mut cmd = meshedge();
            cmd.args(["ca", "serve", "--listen", &addr, "--state-dir"])
                .arg(self.dir.join("ca"));
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                spawn_until(cmd, "ca listening on", self.dir.path())
            }))
            .ok()
        })
        .expect("ca serve starts");
        self.ca_addr = bound;
        self.ca = Some(guard);
    }

    /// SIGKILLs the CA.
    pub fn kill_ca(&mut self) {
        if let Some(mut g) = self.ca.take() {
            g.kill9();
        }
    }

    /// Runs a `meshedge ca ...` admin command on the state dir.
    pub fn cli(&self, args: &[&str]) -> String {
        stdout_of(
            meshedge()
                .args(args)
                .arg("--state-dir")
                .arg(self.dir.join("ca")),
        )
    }

    /// A join token for `node` (the last line of `ca token create`).
    pub fn token(&self, node: &str) -> String {
        self.cli(&["ca", "token", "create", "--node", node])
            .lines()
            .last()
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Registers `id` under `node` with `selectors` and an optional SVID TTL.
    pub fn entry(&self, id: &str, node: &str, selectors: &[String], ttl: Option<&str>) {
        let mut args = vec!["ca", "entry", "create", "--spiffe-id", id, "--parent", node];
        for s in selectors {
            args.extend(["--selector", s.as_str()]);
        }
        if let Some(t) = ttl {
            args.extend(["--ttl", t]);
        }
        self.cli(&args);
    }

    /// The `meshedge agent` command for `node` (state in `<dir>/<node>`).
    pub fn agent_cmd(&self, node: &str, token: Option<&str>) -> Command {
        let mut cmd = meshedge();
        cmd.args([
            "agent",
            "--ca-addr",
            &self.ca_addr,
            "--node",
            node,
            "--zone",
            "a",
        ])
        .arg("--ca-bundle")
        .arg(&self.bundle)
        .arg("--state-dir")
        .arg(self.dir.join(node))
        .arg("--socket")
        .arg(self.socket(node))
        .args(["--entry-refresh", "1s"]);
        if let Some(t) = token {
            cmd.args(["--join-token", t]);
        }
        cmd
    }

    /// The Workload API socket of `node`'s agent.
    pub fn socket(&self, node: &str) -> PathBuf {
        self.dir.join(&format!("{node}.sock"))
    }

    /// Starts an agent and waits until its socket is served.
    pub fn agent(&self, node: &str, token: Option<&str>) -> ChildGuard {
        spawn_until(
            self.agent_cmd(node, token),
            "agent listening on",
            self.dir.path(),
        )
        .0
    }

    /// Starts `meshedge echo` on `node`'s socket; returns the guard and its address.
    pub fn echo(&self, node: &str, instance: &str, extra: &[&str]) -> (ChildGuard, String) {
        let mut cmd = meshedge();
        cmd.args([
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--zone",
            "a",
            "--service",
            "echo",
        ])
        .args(["--instance", instance, "--socket"])
        .arg(self.socket(node))
        .args(extra);
        spawn_until(cmd, "echo listening on", self.dir.path())
    }
}

/// Selectors matching only the `meshedge` binary run by this test's user.
pub fn meshedge_selectors() -> Vec<String> {
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_meshedge")).unwrap();
    vec![
        format!("unix:uid:{}", my_uid()),
        format!("unix:path:{}", exe.display()),
    ]
}

/// Selectors matching only this test binary.
pub fn test_selectors() -> Vec<String> {
    let exe = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
    vec![
        format!("unix:uid:{}", my_uid()),
        format!("unix:path:{}", exe.display()),
    ]
}

/// One answer of an echo server.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
    pub peer_serial: Vec<u8>,
}

/// Opens an mTLS connection to `addr` with ALPN `alpn`.
pub async fn connect_tls(
    cfg: &rustls::ClientConfig,
    addr: &str,
    alpn: &[u8],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut cfg = cfg.clone();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("echo").unwrap(), tcp)
        .await
        .map_err(|e| format!("tls {addr}: {e}"))
}

fn serial_of(tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

async fn read(
    resp: hyper::Response<hyper::body::Incoming>,
    serial: Vec<u8>,
) -> Result<Answer, String> {
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    let body = serde_json::from_slice(&bytes).map_err(|e| format!("json: {e}"))?;
    Ok(Answer {
        status,
        body,
        peer_serial: serial,
    })
}

fn request(path: &str) -> hyper::Request<Empty<Bytes>> {
    hyper::Request::builder()
        .uri(format!("https://echo{path}"))
        .header("host", "echo")
        .body(Empty::new())
        .unwrap()
}

/// GET `path` over a new connection, HTTP/1.1 or HTTP/2.
pub async fn get(
    cfg: &rustls::ClientConfig,
    addr: &str,
    path: &str,
    h2: bool,
) -> Result<Answer, String> {
    let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
    let tls = connect_tls(cfg, addr, alpn).await?;
    let serial = serial_of(&tls);
    let resp = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| format!("h2: {e}"))?;
        tokio::spawn(conn);
        send.send_request(request(path)).await
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("h1: {e}"))?;
        tokio::spawn(conn);
        send.send_request(request(path)).await
    }
    .map_err(|e| format!("request: {e}"))?;
    read(resp, serial).await
}

/// An HTTP/2 connection kept open across requests.
pub struct H2Conn {
    send: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    serial: Vec<u8>,
}

impl H2Conn {
    pub async fn open(cfg: &rustls::ClientConfig, addr: &str) -> Result<Self, String> {
        let tls = connect_tls(cfg, addr, b"h2").await?;
        let serial = serial_of(&tls);
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| format!("h2: {e}"))?;
        tokio::spawn(conn);
        Ok(Self { send, serial })
    }

    pub async fn get(&mut self, path: &str) -> Result<Answer, String> {
        let resp = self
            .send
            .send_request(request(path))
            .await
            .map_err(|e| format!("request: {e}"))?;
        read(resp, self.serial.clone()).await
    }
}

/// Runs `python3 -c CODE` with `SPIFFE_ENDPOINT_SOCKET` pointing at `socket`.
pub fn python(socket: &Path, code: &str) -> std::process::Output {
    Command::new("python3")
        .arg("-c")
        .arg(code)
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", socket.display()),
        )
        .stdin(Stdio::null())
        .output()
        .expect("python3 is installed (scripts/test.sh installs the spiffe package)")
}
