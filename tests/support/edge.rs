//! Helpers of the edge gateway's process tests: certificates from a real `meshedge ca`,
//! a tiny mTLS upstream (hyper + rustls, client certificates required), the gateway as a
//! child process, curl as the client. Include with `#[path = "support/edge.rs"] mod edge;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use meshedge_ca::client::CaClient;
use meshedge_ca::tls::certs_from_pem;
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::*;

/// A running `meshedge ca` with one enrolled node that can get workload SVIDs.
pub struct Pki {
    pub dir: TempDir,
    _ca: ChildGuard,
    node: CaClient,
    pub bundle_pem: String,
    pub bundle_path: PathBuf,
    pub ca_addr: String,
}

fn csr(id: &str) -> (KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    (
        key.clone_key(),
        p.serialize_request(&key).unwrap().pem().unwrap(),
    )
}

trait CloneKey {
    fn clone_key(&self) -> KeyPair;
}
impl CloneKey for KeyPair {
    fn clone_key(&self) -> KeyPair {
        KeyPair::from_pem(&self.serialize_pem()).unwrap()
    }
}

/// A workload SVID written to files.
#[derive(Clone)]
pub struct SvidFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub chain_pem: String,
    pub key_pem: String,
}

impl Pki {
    /// `ca init` + `ca serve`, registers `ids` (with DNS names) under node `n1`, enrolls.
    pub async fn start(tag: &str, ids: &[(&str, &[&str])]) -> Self {
        let dir = TempDir::new(tag);
        let state = dir.join("ca");
        run_ok(
            meshedge()
                .args(["ca", "init", "--trust-domain", "example.org", "--state-dir"])
                .arg(&state),
        );
        for (id, dns) in ids {
            let mut cmd = meshedge();
            cmd.args([
                "ca",
                "entry",
                "create",
                "--parent",
                "n1",
                "--selector",
                "unix:uid:0",
            ])
            .args(["--spiffe-id", id, "--state-dir"])
            .arg(&state);
            for d in *dns {
                cmd.args(["--dns", d]);
            }
            run_ok(&mut cmd);
        }
        let token = stdout_of(
            meshedge()
                .args(["ca", "token", "create", "--node", "n1", "--state-dir"])
                .arg(&state),
        );
        let token = token.lines().last().unwrap().trim().to_owned();
        let bundle_pem = stdout_of(meshedge().args(["ca", "bundle", "--state-dir"]).arg(&state));
        let mut cmd = meshedge();
        cmd.args(["ca", "serve", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(&state);
        let (ca, addr) = spawn_until(cmd, "ca listening on", dir.path());
        let roots = certs_from_pem(&bundle_pem).unwrap();
        let ca_addr = addr.clone();
        let anon = CaClient::new(vec![addr.clone()], &roots, None).unwrap();
        let (key, pem) = csr("spiffe://example.org/node/n1");
        let svid = anon.enroll(&token, &pem, None).await.expect("enrollment");
        let node = CaClient::new(
            vec![addr],
            &roots,
            Some((
                certs_from_pem(&svid.chain_pem).unwrap(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )),
        )
        .unwrap();
        let bundle_path = dir.join("bundle.pem");
        std::fs::write(&bundle_path, &bundle_pem).unwrap();
        Self {
            dir,
            _ca: ca,
            node,
            bundle_pem,
            bundle_path,
            ca_addr,
        }
    }

    /// A fresh SVID for `id` (registered at start), written as `<name>.crt` / `<name>.key`.
    pub async fn svid(&self, id: &str, name: &str) -> SvidFiles {
        let (key, pem) = csr(id);
        let svid = self.node.workload(&pem, None).await.expect("workload svid");
        let cert = self.dir.join(&format!("{name}.crt"));
        let keyp = self.dir.join(&format!("{name}.key"));
        std::fs::write(&cert, &svid.chain_pem).unwrap();
        std::fs::write(&keyp, key.serialize_pem()).unwrap();
        SvidFiles {
            cert,
            key: keyp,
            chain_pem: svid.chain_pem,
            key_pem: key.serialize_pem(),
        }
    }

    pub fn roots(&self) -> Vec<CertificateDer<'static>> {
        certs_from_pem(&self.bundle_pem).unwrap()
    }
}

/// What the test upstream saw.
#[derive(Default)]
pub struct UpstreamStats {
    pub requests: AtomicU64,
    /// Connections accepted, ever.
    pub connections: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    pub last: Mutex<Option<serde_json::Value>>,
    /// Leaf certificates the gateway presented, one per connection.
    pub client_certs: Mutex<Vec<Vec<u8>>>,
    /// (connection number, path) of every request.
    pub requests_by_conn: Mutex<Vec<(u64, String)>>,
}

/// Counts a connection as open while it lives.
struct OpenConnection(Arc<UpstreamStats>);

impl OpenConnection {
    fn new(stats: Arc<UpstreamStats>) -> Self {
        stats.open.fetch_add(1, Ordering::SeqCst);
        Self(stats)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A tiny HTTPS upstream requiring client certificates that chain to the bundle; answers
/// JSON describing the request (path, headers, HTTP version, the caller's SPIFFE ID).
pub struct Upstream {
    pub addr: SocketAddr,
    pub stats: Arc<UpstreamStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start(pki: &Pki, svid: &SvidFiles, name: &'static str) -> Self {
        let acceptor = upstream_tls(pki, svid);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(UpstreamStats::default());
        let st = stats.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, st) = (acceptor.clone(), st.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let conn_no = st.connections.fetch_add(1, Ordering::SeqCst);
                    let _open = OpenConnection::new(st.clone());
                    if let Some(c) = tls.get_ref().1.peer_certificates() {
                        st.client_certs.lock().unwrap().push(c[0].to_vec());
                    }
                    let peer = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| meshedge_ca::svid::spiffe_id_of(&c[0]).ok())
                        .map(|id| id.to_string())
                        .unwrap_or_default();
                    let sni = tls.get_ref().1.server_name().map(str::to_owned);
                    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let (st, peer, sni) = (st.clone(), peer.clone(), sni.clone());
                        async move {
                            // Proxied requests; the gateway's active health checks are not.
                            if req.uri().path() != "/healthz" {
                                st.requests.fetch_add(1, Ordering::SeqCst);
                            }
                            st.requests_by_conn
                                .lock()
                                .unwrap()
                                .push((conn_no, req.uri().path().to_owned()));
                            if req.uri().path().contains("/slow") {
                                tokio::time::sleep(Duration::from_millis(1500)).await;
                            }
                            let headers: HashMap<String, String> = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                                .collect();
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes().len())
                                .unwrap_or(0);
                            let v = serde_json::json!({
                                "upstream": name,
                                "method": parts.method.to_string(),
                                "path": parts.uri.path_and_query().map(|p| p.to_string()),
                                "version": format!("{:?}", parts.version),
                                "headers": headers,
                                "peer": peer,
                                "sni": sni,
                                "body_bytes": body,
                            });
                            *st.last.lock().unwrap() = Some(v.clone());
                            let mut resp =
                                hyper::Response::new(Full::new(Bytes::from(v.to_string())));
                            resp.headers_mut()
                                .insert("connection", "keep-alive".parse().unwrap());
                            resp.headers_mut()
                                .insert("x-upstream", name.parse().unwrap());
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
                });
            }
        });
        Self { addr, stats, task }
    }
}

/// The TLS side of a test upstream: serves `svid`, requires a client certificate that
/// chains to the PKI's bundle, offers `h2` and `http/1.1`.
pub fn upstream_tls(pki: &Pki, svid: &SvidFiles) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for r in pki.roots() {
        roots.add(r).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain = certs_from_pem(&svid.chain_pem).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        pem::parse(&svid.key_pem).unwrap().into_contents(),
    ));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// A running gateway and its addresses.
pub struct Edge {
    pub guard: ChildGuard,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub http3: Option<SocketAddr>,
    pub redirect: Option<SocketAddr>,
}

/// The head of a minimal gateway config: a TLS listener on port 0 (no HTTP/3) serving
/// `cert`/`key`, the admin listener on port 0, and `[identity]` with the given lines.
pub fn config_head(cert: &Path, key: &Path, identity: &str) -> String {
    format!(
        r#"
[listener]
address = "127.0.0.1:0"
http3 = false
[[listener.certificates]]
cert = "{}"
key = "{}"
[admin]
address = "127.0.0.1:0"
[identity]
{identity}
"#,
        cert.display(),
        key.display(),
    )
}

/// Starts `meshedge edge --config PATH` and waits for its listening lines.
pub fn spawn_edge(config: &Path, logs: &Path) -> Edge {
    let stderr_path = logs.join(format!("edge-{}.stderr", rand::random::<u32>()));
    let err = std::fs::File::create(&stderr_path).unwrap();
    let mut child = meshedge()
        .args(["edge", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("edge starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = HashMap::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((what, addr)) = line.split_once(" listening on ") {
                seen.insert(what.to_owned(), addr.trim().to_owned());
                if what == "admin" {
                    let _ = tx.send(seen.clone());
                }
            }
        }
    });
    let guard = ChildGuard { child, stderr_path };
    let seen = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("edge never got ready; stderr:\n{}", guard.stderr()));
    Edge {
        https: seen["edge"].parse().unwrap(),
        admin: seen["admin"].parse().unwrap(),
        http3: seen.get("http3").map(|a| a.parse().unwrap()),
        redirect: seen.get("redirect").map(|a| a.parse().unwrap()),
        guard,
    }
}

/// A plain HTTP/1.1 request to the admin listener: (status, body).
pub fn admin(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A Prometheus sample value from `/metrics` text: the first line starting with `prefix`.
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// What curl got.
#[derive(Debug)]
pub struct CurlResult {
    pub status: u16,
    pub version: String,
    pub headers: HashMap<String, String>,
    /// The header lines as received (repeats and spelling kept), without the status line.
    pub head: String,
    pub body: String,
}

impl CurlResult {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

/// `curl` to `https://HOST:PORT/PATH` resolved to the gateway, trusting `bundle`.
pub fn curl(edge: SocketAddr, bundle: &Path, host: &str, path: &str, extra: &[&str]) -> CurlResult {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D", "-", "-o", "-", "--cacert"])
        .arg(bundle)
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", edge.port()))
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(extra)
        .arg(format!("https://{host}:{}{path}", edge.port()))
        .output()
        .expect("curl is installed (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {path} failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (rest, tail) = text.rsplit_once('\n').unwrap();
    let mut tail = tail.split_whitespace();
    let status = tail.next().unwrap().parse().unwrap();
    let version = tail.next().unwrap_or("").to_owned();
    let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    CurlResult {
        status,
        version,
        headers,
        head: head.lines().skip(1).collect::<Vec<_>>().join("\n"),
        body: body.to_owned(),
    }
}

/// A raw TLS connection to the gateway with ALPN http/1.1 (for malformed requests).
pub async fn raw_tls(
    edge: SocketAddr,
    pki: &Pki,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for r in pki.roots() {
        roots.add(r).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(edge).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("api.example.org".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

pub const EDGE_ID: &str = "spiffe://example.org/edge/e1";
pub const PAY_ID: &str = "spiffe://example.org/svc/payments";
pub const ROGUE_ID: &str = "spiffe://example.org/svc/rogue";
pub const WEB_ID: &str = "spiffe://example.org/svc/web";

/// A CA, two upstreams (payments, rogue) and a gateway routing to them.
pub struct World {
    pub pki: Pki,
    pub pay: Upstream,
    pub rogue: Upstream,
    pub edge: Edge,
    pub config_path: PathBuf,
    pub serving: SvidFiles,
    pub me: SvidFiles,
}

/// The gateway config of a [`World`]; `listener_extra` goes into `[listener]`, `extra`
/// at the end (more clusters and routes).
#[allow(clippy::too_many_arguments)]
pub fn world_config(
    dir: &Path,
    pki: &Pki,
    serving: &SvidFiles,
    me: &SvidFiles,
    pay: &Upstream,
    rogue: &Upstream,
    listener_extra: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[gateway]
name = "e1"
drain_timeout = "5s"
watch_interval = "200ms"

[listener]
address = "127.0.0.1:0"
{listener_extra}

[[listener.certificates]]
cert = "{scert}"
key = "{skey}"

[admin]
address = "127.0.0.1:0"

[identity]
cert = "{icert}"
key = "{ikey}"
bundle = "{bundle}"

[access_log]
output = "{log}"

[clusters.payments]
endpoints = ["{pay}"]
allowed_ids = ["{PAY_ID}"]

[clusters.payments-h1]
endpoints = ["{pay}"]
allowed_ids = ["{PAY_ID}"]
protocol = "http1"

[clusters.rogue]
endpoints = ["{rogue}"]
allowed_id_prefixes = ["spiffe://example.org/svc/payments"]

[[routes]]
name = "pay"
match = {{ hosts = ["api.example.org"], path_prefix = "/pay" }}
cluster = "payments"
strip_prefix = true

[[routes]]
name = "pay-h1"
match = {{ hosts = ["*.example.org"], path_prefix = "/h1", methods = ["GET"] }}
cluster = "payments-h1"
rewrite_prefix = "/v1"

[[routes]]
name = "rogue"
match = {{ path_prefix = "/rogue" }}
cluster = "rogue"

{extra}
"#,
        scert = serving.cert.display(),
        skey = serving.key.display(),
        icert = me.cert.display(),
        ikey = me.key.display(),
        bundle = pki.bundle_path.display(),
        log = dir.join("access.log").display(),
        pay = pay.addr,
        rogue = rogue.addr,
        listener_extra = if listener_extra.contains("http3") {
            listener_extra.to_owned()
        } else {
            format!("http3 = false\n{listener_extra}")
        },
    )
}

impl World {
    /// Starts everything; see [`world_config`] for the two extra parts.
    pub async fn start(tag: &str, listener_extra: &str, extra: &str) -> World {
        let pki = Pki::start(
            tag,
            &[
                (EDGE_ID, &[]),
                (PAY_ID, &[]),
                (ROGUE_ID, &[]),
                (WEB_ID, &["api.example.org", "www.example.org"]),
            ],
        )
        .await;
        let serving = pki.svid(WEB_ID, "serving").await;
        let me = pki.svid(EDGE_ID, "edge").await;
        let pay_svid = pki.svid(PAY_ID, "pay").await;
        let rogue_svid = pki.svid(ROGUE_ID, "rogue").await;
        let pay = Upstream::start(&pki, &pay_svid, "payments").await;
        let rogue = Upstream::start(&pki, &rogue_svid, "rogue").await;
        let text = world_config(
            pki.dir.path(),
            &pki,
            &serving,
            &me,
            &pay,
            &rogue,
            listener_extra,
            extra,
        );
        let config_path = pki.dir.join("edge.toml");
        std::fs::write(&config_path, text).unwrap();
        let edge = spawn_edge(&config_path, pki.dir.path());
        World {
            pki,
            pay,
            rogue,
            edge,
            config_path,
            serving,
            me,
        }
    }

    /// Rewrites the gateway's config file (atomically).
    pub fn rewrite_config(&self, listener_extra: &str, extra: &str) {
        let text = world_config(
            self.pki.dir.path(),
            &self.pki,
            &self.serving,
            &self.me,
            &self.pay,
            &self.rogue,
            listener_extra,
            extra,
        );
        let tmp = self.pki.dir.join("edge.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    /// Sends a signal to the gateway.
    pub fn signal(&self, sig: &str) {
        run_ok(
            Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(self.edge.guard.child.id().to_string()),
        );
    }
}

/// [`curl`] off the async runtime.
pub async fn curl_async(w: &World, host: &str, path: &str, extra: &[&str]) -> CurlResult {
    let (addr, bundle) = (w.edge.https, w.pki.bundle_path.clone());
    let (host, path) = (host.to_owned(), path.to_owned());
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        curl(addr, &bundle, &host, &path, &extra)
    })
    .await
    .unwrap()
}
