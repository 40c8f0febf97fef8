//! `ca serve`: the CA's HTTPS API over rustls, with live reload of the key material.
//!
//! Clients may connect without a certificate (enrollment, bundle); a certificate that is
//! presented must chain to the trust bundle or the handshake is refused.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::api::{self, ApiError};
use crate::audit::AuditLog;
use crate::backend::{self, Backend, BackendError};
use crate::keyset;
use crate::keystore::KeyStore;
use crate::metrics as m;
use crate::pki;
use crate::store::CaStore;
use crate::svid::spiffe_id_of;
use crate::Authority;

mod handlers;

pub use handlers::Caller;

/// Renders the process's metrics as Prometheus text, for `GET /metrics`.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Failure to start the CA server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The key material could not be loaded.
    #[error(transparent)]
    Keyset(#[from] keyset::KeysetError),
    /// The store could not be opened.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A socket or file failed.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error("tls setup: {0}")]
    Tls(String),
}

/// Shared state of a running CA server.
pub struct Ctx {
    authority: RwLock<Arc<Authority>>,
    tls: RwLock<Arc<rustls::ServerConfig>>,
    store: Arc<dyn CaStore>,
    keys: Arc<dyn KeyStore>,
    backend: String,
    audit: AuditLog,
    extra_names: Vec<String>,
    metrics: Option<MetricsRender>,
}

impl Ctx {
    fn authority(&self) -> Arc<Authority> {
        self.authority.read().expect("authority lock").clone()
    }

    fn tls(&self) -> Arc<rustls::ServerConfig> {
        self.tls.read().expect("tls lock").clone()
    }
}

/// A CA server bound to its address.
pub struct CaServer {
    ctx: Arc<Ctx>,
    listener: TcpListener,
}

impl CaServer {
    /// Loads the state dir, opens the store and binds `listen`. `extra_names` are added as
    /// DNS SANs to the API's serving certificate (`localhost` and the listen IP always are).
    pub async fn bind(
        state_dir: PathBuf,
        listen: SocketAddr,
        extra_names: Vec<String>,
        metrics: Option<MetricsRender>,
    ) -> Result<Self, ServeError> {
        let Backend {
            records: store,
            keys,
            description: backend,
            ..
        } = backend::open(&state_dir).await?;
        let keyset = keys.load().await?;
        let audit = AuditLog::open(&state_dir).map_err(|source| ServeError::Io {
            what: state_dir.join("audit.log").display().to_string(),
            source,
        })?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServeError::Io {
                what: format!("bind {listen}"),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| ServeError::Io {
            what: "local_addr".into(),
            source,
        })?;
        let mut names = extra_names;
        names.push(local.ip().to_string());
        let authority = Arc::new(Authority::new(keyset));
        let tls = Arc::new(tls_config(&authority, &names)?);
        let ctx = Arc::new(Ctx {
            authority: RwLock::new(authority),
            tls: RwLock::new(tls),
            store,
            keys,
            backend,
            audit,
            extra_names: names,
            metrics,
        });
        Ok(Self { ctx, listener })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until the task is dropped.
    pub async fn run(self) {
        tracing::info!(addr = %self.local_addr(), store = %self.ctx.backend, "ca api listening on {}", self.local_addr());
        tokio::spawn(reload_loop(self.ctx.clone()));
        loop {
            let (tcp, remote) = match self.listener.accept().await {
                Ok(c) => c,
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let ctx = self.ctx.clone();
            tokio::spawn(
                serve_connection(ctx, tcp, remote)
                    .instrument(tracing::debug_span!("ca_conn", %remote)),
            );
        }
    }
}

async fn serve_connection(ctx: Arc<Ctx>, tcp: tokio::net::TcpStream, remote: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let acceptor = tokio_rustls::TlsAcceptor::from(ctx.tls());
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(err)) => {
            ::metrics::counter!(m::TLS_HANDSHAKE_FAILURES_TOTAL).increment(1);
            tracing::info!(%remote, %err, "tls handshake refused");
            return;
        }
        Err(_) => {
            ::metrics::counter!(m::TLS_HANDSHAKE_FAILURES_TOTAL).increment(1);
            return;
        }
    };
    let id = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| spiffe_id_of(leaf).ok());
    let caller = Arc::new(Caller {
        id,
        remote: remote.to_string(),
    });
    let svc = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        let caller = caller.clone();
        async move { Ok::<_, std::convert::Infallible>(route(&ctx, &caller, req).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(err) = builder.serve_connection(TokioIo::new(tls), svc).await {
        tracing::debug!(%remote, %err, "connection ended with error");
    }
}

type Body = Full<Bytes>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    reply(
        status,
        "application/json",
        serde_json::to_vec(v).expect("serializes"),
    )
}

fn error(e: &ApiError) -> Response<Body> {
    json(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        e,
    )
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    match Limited::new(req.into_body(), api::MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            ::metrics::counter!(m::REQUESTS_DENIED_TOTAL, "op" => "any", "reason" => "too_large")
                .increment(1);
            Err(error(&ApiError {
                status: 413,
                code: "too_large".into(),
                message: format!("request body exceeds {} bytes", api::MAX_BODY),
            }))
        }
        Err(err) => Err(error(&ApiError {
            status: 400,
            code: "bad_request".into(),
            message: format!("reading body: {err}"),
        })),
    }
}

async fn route(ctx: &Ctx, caller: &Caller, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match (method, path.as_str()) {
        (Method::GET, api::PATH_BUNDLE) => reply(
            StatusCode::OK,
            "application/x-pem-file",
            ctx.authority().bundle_pem().to_owned(),
        ),
        (Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
        (Method::GET, "/healthz/ready") => match ctx.store.ping().await {
            Ok(()) => reply(
                StatusCode::OK,
                "text/plain",
                format!("ready ({})\n", ctx.backend),
            ),
            Err(e) => error(&ApiError {
                status: 503,
                code: "store_unavailable".into(),
                message: format!("ca store unavailable: {e}"),
            }),
        },
        (Method::GET, "/metrics") => match &ctx.metrics {
            Some(render) => reply(StatusCode::OK, "text/plain; version=0.0.4", render()),
            None => reply(StatusCode::NOT_FOUND, "text/plain", "metrics not enabled\n"),
        },
        (Method::GET, api::PATH_ENTRIES) => match handlers::entries(ctx, caller).await {
            Ok(es) => json(StatusCode::OK, &es),
            Err(r) => error(&r.0),
        },
        (
            Method::POST,
            p @ (api::PATH_ENROLL
            | api::PATH_RENEW
            | api::PATH_WORKLOAD
            | api::PATH_WORKLOAD_BATCH
            | api::PATH_REATTEST),
        ) => {
            let p = p.to_owned();
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let out = match p.as_str() {
                api::PATH_ENROLL => handlers::enroll(ctx, caller, &body).await,
                api::PATH_RENEW => handlers::renew(ctx, caller, &body).await,
                api::PATH_WORKLOAD => handlers::workload(ctx, caller, &body).await,
                api::PATH_REATTEST => handlers::reattest(ctx, caller, &body).await,
                _ => {
                    return match handlers::workload_batch(ctx, caller, &body).await {
                        Ok(b) => json(StatusCode::OK, &b),
                        Err(r) => error(&r.0),
                    }
                }
            };
            match out {
                Ok(s) => json(StatusCode::OK, &s),
                Err(r) => error(&r.0),
            }
        }
        (_, p) => error(&ApiError {
            status: 404,
            code: "not_found".into(),
            message: format!("no such endpoint: {p}"),
        }),
    }
}

/// Builds the API's TLS config: a serving SVID for `spiffe://<td>/meshedge/ca` from the
/// active intermediate, and optional client certificates chained to the bundle.
fn tls_config(auth: &Authority, names: &[String]) -> Result<rustls::ServerConfig, ServeError> {
    let ks = auth.keyset();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let id = crate::SpiffeId::parse(&format!(
        "{}{}",
        ks.trust_domain.id_string(),
        api::CA_ID_PATH
    ))
    .map_err(|e| ServeError::Tls(e.to_string()))?;
    let now = OffsetDateTime::now_utc();
    let not_after = (now + time::Duration::hours(24)).min(ks.intermediate.not_after);
    let mut params = pki::svid_params(&id, &[], now - pki::BACKDATE, not_after)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    params.subject_alt_names.push(rcgen::SanType::DnsName(
        "localhost".try_into().expect("ia5"),
    ));
    for n in names {
        let san = match n.parse::<std::net::IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => rcgen::SanType::IpAddress(ip),
            Ok(_) => continue,
            Err(_) => {
                rcgen::SanType::DnsName(n.as_str().try_into().map_err(|e: rcgen::Error| {
                    ServeError::Tls(format!("server name {n:?}: {e}"))
                })?)
            }
        };
        params.subject_alt_names.push(san);
    }
    let cert = params
        .signed_by(&key, &ks.intermediate.issuer)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let chain = vec![cert.der().clone(), ks.intermediate.der.clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut roots = rustls::RootCertStore::empty();
    for r in &ks.roots {
        roots
            .add(r.der.clone())
            .map_err(|e| ServeError::Tls(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Every second: reload the key material when the store's version changed (root rotation
/// by the CLI, or another replica), rotate the intermediate when policy says so, and
/// refresh the serving certificate at half of its life.
async fn reload_loop(ctx: Arc<Ctx>) {
    let mut seen = ctx.keys.version().await.ok();
    let mut cert_refresh_at = tokio::time::Instant::now() + Duration::from_secs(12 * 3600);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let auth = ctx.authority();
        let ks = auth.keyset();
        let now = OffsetDateTime::now_utc();
        ::metrics::gauge!(m::INTERMEDIATE_EXPIRY_SECONDS)
            .set((ks.intermediate.not_after - now).as_seconds_f64());
        if ks.intermediate_is_due(now) {
            match ctx.keys.rotate_intermediate(now, false).await {
                Ok(true) => {
                    ::metrics::counter!(m::INTERMEDIATE_ROTATIONS_TOTAL).increment(1);
                    tracing::info!("rotated the intermediate");
                }
                Ok(false) => {}
                Err(err) => tracing::error!(%err, "intermediate rotation failed"),
            }
        }
        let version = match ctx.keys.version().await {
            Ok(v) => Some(v),
            Err(err) => {
                tracing::warn!(%err, "key store unreachable; keeping the loaded key material");
                continue;
            }
        };
        if version == seen && tokio::time::Instant::now() < cert_refresh_at {
            continue;
        }
        let loaded = match ctx.keys.load().await {
            Ok(k) => Arc::new(Authority::new(k)),
            Err(err) => {
                tracing::error!(%err, "reloading key material failed; keeping the loaded one");
                continue;
            }
        };
        match tls_config(&loaded, &ctx.extra_names) {
            Ok(cfg) => {
                tracing::info!(
                    roots = loaded.keyset().roots.len(),
                    intermediate = loaded.keyset().intermediate.generation,
                    "key material reloaded"
                );
                *ctx.authority.write().expect("authority lock") = loaded;
                *ctx.tls.write().expect("tls lock") = Arc::new(cfg);
                seen = version;
                cert_refresh_at = tokio::time::Instant::now() + Duration::from_secs(12 * 3600);
            }
            Err(err) => tracing::error!(%err, "tls config rebuild failed"),
        }
    }
}

/// The certificates of a PEM bundle.
pub fn bundle_certs(pem_text: &str) -> Vec<CertificateDer<'static>> {
    crate::tls::certs_from_pem(pem_text).unwrap_or_default()
}
