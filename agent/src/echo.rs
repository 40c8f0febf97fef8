//! The sample workload behind `meshedge echo`: HTTPS with mTLS (HTTP/1.1 and HTTP/2) from an
//! [`X509Source`], answering every path with JSON `{service, instance, zone, peer_spiffe_id,
//! peer_not_after, peer_cert_expired, path}`, `/healthz` with `{"status":"ok"}`, and failing or slowing down on request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshedge_ca::tls::AllowedIds;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::source::X509Source;
use crate::tls::{peer_spiffe_id, server_config, TlsError};

/// The health path.
pub const HEALTH_PATH: &str = "/healthz";

/// What the echo server says about itself and how it misbehaves.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Service name.
    pub service: String,
    /// Instance name.
    pub instance: String,
    /// Zone.
    pub zone: String,
    /// Fraction of requests (0..=1) answered 503.
    pub fail_rate: f64,
    /// Added to every answer but health checks.
    pub latency: Duration,
    /// Which callers may connect.
    pub allowed: AllowedIds,
}

/// The echo server could not start.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// The listen address could not be bound.
    #[error("echo listen {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS config could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A bound echo server.
pub struct EchoServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    cfg: Arc<EchoConfig>,
}

impl EchoServer {
    /// Binds `addr` with TLS from `source`.
    pub async fn bind(
        addr: SocketAddr,
        source: &X509Source,
        cfg: EchoConfig,
    ) -> Result<Self, EchoError> {
        let tls = server_config(source, cfg.allowed.clone())?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EchoError::Bind { addr, source })?;
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            cfg: Arc::new(cfg),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the process ends.
    pub async fn run(self) {
        loop {
            let (tcp, remote) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = self.acceptor.clone();
            let cfg = self.cfg.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::info!(%remote, error = %e, "tls handshake failed");
                        return;
                    }
                };
                let session = tls.get_ref().1;
                let peer = Peer {
                    id: peer_spiffe_id(session).map(|id| id.to_string()),
                    not_after: session
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|leaf| meshedge_ca::svid::not_after_of(leaf).ok()),
                };
                let service =
                    hyper::service::service_fn(move |req| answer(cfg.clone(), peer.clone(), req));
                if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
            });
        }
    }
}

/// The client of one connection, as its certificate said at the handshake.
#[derive(Clone)]
struct Peer {
    id: Option<String>,
    not_after: Option<time::OffsetDateTime>,
}

async fn answer(
    cfg: Arc<EchoConfig>,
    peer: Peer,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == HEALTH_PATH {
        return Ok(json(StatusCode::OK, serde_json::json!({"status": "ok"})));
    }
    if !cfg.latency.is_zero() {
        tokio::time::sleep(cfg.latency).await;
    }
    if cfg.fail_rate > 0.0 && rand::random::<f64>() < cfg.fail_rate {
        return Ok(json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "injected failure", "instance": cfg.instance, "zone": cfg.zone}),
        ));
    }
    Ok(json(
        StatusCode::OK,
        serde_json::json!({
            "service": cfg.service,
            "instance": cfg.instance,
            "zone": cfg.zone,
            "peer_spiffe_id": peer.id,
            "peer_not_after": peer.not_after.map(|t| t.unix_timestamp()),
            // Whether the certificate this request came with has expired by now (a client
            // that reuses a connection made with an SVID since expired shows up here).
            "peer_cert_expired": peer.not_after.is_some_and(|t| t <= time::OffsetDateTime::now_utc()),
            "path": path,
        }),
    ))
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}
