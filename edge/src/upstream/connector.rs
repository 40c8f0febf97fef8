//! Connections to an endpoint: the cluster's rustls client config ([`client_tls`]) and
//! the connector that opens TCP + mTLS under the cluster's circuit breaker, for both the
//! in-task HTTP/1.1 client and hyper-util's pool ([`MtlsConnector`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use meshedge_ca::tls::{SpiffeServerVerifier, SvidBoundSessions, UnexpectedPeerId};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::ConnectError;
use crate::config::{ClusterConfig, UpstreamIdentity, UpstreamProtocol};
use crate::identity::ClientCertResolver;
use crate::metrics as m;
use crate::resilience::breaker::{CircuitOpen, Resource};
use crate::tcp::TcpIo;

/// Builds the rustls client config of a cluster: the upstream checked by chain to the
/// bundle and by SPIFFE ID (or by DNS name for upstreams outside the mesh), the gateway's
/// SVID as client certificate, ALPN by protocol.
pub fn client_tls(
    roots: &[CertificateDer<'static>],
    cluster: &ClusterConfig,
    svid: Arc<ClientCertResolver>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> =
        match &cluster.upstream_identity {
            UpstreamIdentity::Spiffe(allowed) => SpiffeServerVerifier::new(roots, allowed.clone())
                .map_err(|e| rustls::Error::General(format!("trust bundle: {e}")))?,
            UpstreamIdentity::DnsName(_) => {
                let mut store = rustls::RootCertStore::empty();
                for root in roots {
                    store.add(root.clone())?;
                }
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(store),
                    provider.clone(),
                )
                .build()
                .map_err(|e| rustls::Error::General(format!("trust bundle: {e}")))?
            }
        };
    let generation = svid.clone();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(svid);
    // Resumed sessions carry the identity of their first handshake: after a rotation,
    // connections start over with a full handshake presenting the new SVID.
    cfg.resumption = rustls::client::Resumption::store(SvidBoundSessions::new(
        Arc::new(move || generation.generation()),
        256,
    ));
    cfg.alpn_protocols = match cluster.protocol {
        UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
    };
    Ok(Arc::new(cfg))
}

/// Opens mTLS connections for hyper-util's pool. Cloned on every request by the pool, so
/// it is one reference-counted pointer.
#[derive(Clone)]
pub struct MtlsConnector(pub(super) Arc<ConnectorSettings>);

impl std::ops::Deref for MtlsConnector {
    type Target = ConnectorSettings;

    fn deref(&self) -> &ConnectorSettings {
        &self.0
    }
}

/// What an [`MtlsConnector`] connects with.
#[derive(Clone)]
pub struct ConnectorSettings {
    pub(super) cluster: Arc<str>,
    pub(super) tls: TlsConnector,
    pub(super) svid: Arc<ClientCertResolver>,
    pub(super) breaker: Arc<OnceLock<Arc<dyn ConnectionBreaker>>>,
    pub(super) server_name: Option<ServerName<'static>>,
    pub(super) connect_timeout: std::time::Duration,
}

impl MtlsConnector {
    async fn connect(self, uri: Uri) -> Result<MtlsConn, ConnectError> {
        let addr = uri_addr(&uri)?;
        self.connect_addr(addr).await
    }

    /// TCP + TLS to `addr`, under the breaker's connection limits, counted by result.
    pub(super) async fn connect_addr(&self, addr: SocketAddr) -> Result<MtlsConn, ConnectError> {
        if let Some(not_after) = self.svid.expired_at(time::OffsetDateTime::now_utc()) {
            return Err(ConnectError::OwnSvidExpired { addr, not_after });
        }
        // A request that needs a new connection waits for it: that is Envoy's "pending
        // request". The connection itself counts until it is dropped.
        let pending = self.slot(Resource::PendingRequests, addr)?;
        let slot = self.slot(Resource::Connections, addr)?;
        let fut = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|source| ConnectError::Tcp { addr, source })?;
            let _ = tcp.set_nodelay(true);
            let name = self
                .server_name
                .clone()
                .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
            self.tls
                .connect(name, TcpIo::new(tcp))
                .await
                .map_err(|source| match unexpected_peer(&source) {
                    Some(p) => ConnectError::IdentityMismatch {
                        addr,
                        presented: p.presented,
                        allowed: p.allowed,
                    },
                    None => ConnectError::Tls { addr, source },
                })
        };
        let result = match tokio::time::timeout(self.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout { addr }),
        };
        let cluster = self.cluster.to_string();
        match &result {
            Ok(_) => metrics::counter!(m::UPSTREAM_CONNECTIONS_TOTAL, "cluster" => cluster, "result" => "ok").increment(1),
            Err(e) => {
                if let ConnectError::IdentityMismatch { presented, allowed, .. } = e {
                    metrics::counter!(m::IDENTITY_MISMATCH_TOTAL, "cluster" => cluster.clone()).increment(1);
                    tracing::warn!(
                        cluster = %cluster, endpoint = %addr, presented = %presented,
                        allowed = ?allowed,
                        "upstream identity mismatch: {addr} presented {presented}, cluster {cluster} allows {allowed:?}; request not sent"
                    );
                }
                metrics::counter!(m::UPSTREAM_CONNECTIONS_TOTAL, "cluster" => cluster, "result" => e.kind().as_str()).increment(1);
            }
        }
        drop(pending);
        let tls = result?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(MtlsConn {
            io: TokioIo::new(tls),
            h2,
            _slot: slot,
        })
    }

    /// One unit of `resource` from the cluster's breaker (none to take before the cluster
    /// attached it), given back when the slot drops.
    fn slot(&self, resource: Resource, addr: SocketAddr) -> Result<BreakerSlot, ConnectError> {
        let Some(breaker) = self.breaker.get() else {
            return Ok(BreakerSlot(None));
        };
        breaker
            .take(resource)
            .map_err(|open| ConnectError::CircuitOpen { addr, open })?;
        Ok(BreakerSlot(Some((breaker.clone(), resource))))
    }
}

/// The `IP:PORT` authority of an upstream URI.
fn uri_addr(uri: &Uri) -> Result<SocketAddr, ConnectError> {
    uri.authority()
        .and_then(|a| {
            a.as_str()
                .trim_start_matches('[')
                .replace("]:", ":")
                .parse()
                .ok()
        })
        .or_else(|| uri.authority().and_then(|a| a.as_str().parse().ok()))
        .ok_or_else(|| ConnectError::BadUri {
            uri: uri.to_string(),
        })
}

/// The cluster's circuit breaker as the connector sees it: connections and pending
/// requests are taken here, the other resources by the request path.
pub trait ConnectionBreaker: Send + Sync {
    /// Takes one unit of `resource`, or says which limit is reached.
    fn take(&self, resource: Resource) -> Result<(), CircuitOpen>;
    /// Gives back a unit taken with [`take`](Self::take).
    fn give_back(&self, resource: Resource);
}

/// A unit of a breaker resource, given back on drop.
pub(super) struct BreakerSlot(Option<(Arc<dyn ConnectionBreaker>, Resource)>);

impl Drop for BreakerSlot {
    fn drop(&mut self) {
        if let Some((breaker, resource)) = self.0.take() {
            breaker.give_back(resource);
        }
    }
}

impl tower_service::Service<Uri> for MtlsConnector {
    type Response = MtlsConn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<MtlsConn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// An established mTLS connection to an endpoint.
pub struct MtlsConn {
    pub(super) io: TokioIo<TlsStream<TcpIo>>,
    h2: bool,
    _slot: BreakerSlot,
}

impl MtlsConn {
    /// The TLS stream and the breaker slot it holds.
    pub(super) fn into_parts(self) -> (TlsStream<TcpIo>, BreakerSlot) {
        (self.io.into_inner(), self._slot)
    }
}

impl Connection for MtlsConn {
    fn connected(&self) -> Connected {
        if self.h2 {
            Connected::new().negotiated_h2()
        } else {
            Connected::new()
        }
    }
}

impl hyper::rt::Read for MtlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for MtlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The SPIFFE ID mismatch behind a failed handshake, when that is why it failed.
fn unexpected_peer(e: &std::io::Error) -> Option<UnexpectedPeerId> {
    let rustls_err = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    match rustls_err {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            other.0.downcast_ref::<UnexpectedPeerId>().cloned()
        }
        _ => None,
    }
}
