//! The pooled mTLS client of one cluster: TCP + TLS with the gateway's SVID, the upstream
//! verified by chain to the bundle and by SPIFFE ID ([`SpiffeServerVerifier`]), HTTP/1.1 or
//! HTTP/2 by ALPN, keep-alive connections pooled per endpoint. `protocol = "http1"`
//! clusters send requests with complete bodies through the in-task client of [`h1`], the
//! rest through hyper-util's pooled client.

mod h1;
mod outgoing;

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use meshedge_ca::tls::{AllowedIds, SpiffeServerVerifier, SvidBoundSessions, UnexpectedPeerId};
use meshedge_ca::SpiffeId;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::{ClusterConfig, UpstreamIdentity, UpstreamProtocol};
use crate::identity::ClientCertResolver;
use crate::metrics as m;
use crate::resilience::breaker::{CircuitOpen, Resource};
use crate::tcp::TcpIo;

pub use crate::raw_head::RawHead;
pub use outgoing::{Outgoing, RequestHead};

/// Error type of bodies sent upstream.
pub type BoxError = Box<dyn StdError + Send + Sync>;
/// Request body sent upstream.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// Why an upstream call failed, coarse enough for retry and outlier decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// TCP connect refused, unreachable or timed out.
    Connect,
    /// TLS handshake failed (not an identity mismatch).
    Tls,
    /// The upstream's SPIFFE ID is not allowed by the cluster.
    Identity,
    /// No response head in time.
    Timeout,
    /// The connection broke or the peer spoke bad HTTP.
    Protocol,
    /// Not sent: the gateway's own SVID has expired (the CA is unreachable and rotation
    /// failed). Not the endpoint's fault.
    OwnSvidExpired,
    /// Not sent: the cluster's circuit breaker refused a new connection (its
    /// `max_connections` or `max_pending_requests` is reached).
    CircuitOpen,
}

impl FailureKind {
    /// The `reason` label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Identity => "identity",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
            Self::OwnSvidExpired => "own_svid_expired",
            Self::CircuitOpen => "circuit_open",
        }
    }

    /// True when the request provably never reached the upstream application.
    pub fn is_never_sent(&self) -> bool {
        matches!(
            self,
            Self::Connect | Self::Tls | Self::Identity | Self::OwnSvidExpired | Self::CircuitOpen
        )
    }
}

/// Failure to open a connection to an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP failed.
    #[error("tcp connect to {addr}")]
    Tcp {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TCP + TLS took longer than the connect timeout.
    #[error("connect to {addr} timed out")]
    Timeout {
        /// The endpoint.
        addr: SocketAddr,
    },
    /// The TLS handshake failed.
    #[error("tls handshake with {addr}")]
    Tls {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The upstream presented a valid SVID with an ID the cluster does not allow.
    #[error("{addr} presented {presented}, cluster allows {allowed:?}")]
    IdentityMismatch {
        /// The endpoint.
        addr: SocketAddr,
        /// What it presented.
        presented: SpiffeId,
        /// What the cluster allows.
        allowed: AllowedIds,
    },
    /// The gateway's own SVID expired; no connection was attempted.
    #[error("own SVID expired at {not_after}; not connecting to {addr} with it")]
    OwnSvidExpired {
        /// The endpoint.
        addr: SocketAddr,
        /// When the SVID expired.
        not_after: time::OffsetDateTime,
    },
    /// The cluster's circuit breaker refused the connection.
    #[error("cluster circuit breaker: {open} (connecting to {addr})")]
    CircuitOpen {
        /// The endpoint.
        addr: SocketAddr,
        /// Which limit.
        open: CircuitOpen,
    },
    /// The URI handed to the connector has no `IP:PORT` authority (a bug).
    #[error("upstream uri {uri} has no IP:PORT authority")]
    BadUri {
        /// The URI.
        uri: String,
    },
}

impl ConnectError {
    /// The failure class.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Tcp { .. } | Self::Timeout { .. } | Self::BadUri { .. } => FailureKind::Connect,
            Self::Tls { .. } => FailureKind::Tls,
            Self::IdentityMismatch { .. } => FailureKind::Identity,
            Self::OwnSvidExpired { .. } => FailureKind::OwnSvidExpired,
            Self::CircuitOpen { .. } => FailureKind::CircuitOpen,
        }
    }
}

/// The first error of type `T` in `e`'s source chain.
pub fn find_cause<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

fn unexpected_peer(e: &std::io::Error) -> Option<UnexpectedPeerId> {
    let rustls_err = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    match rustls_err {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            other.0.downcast_ref::<UnexpectedPeerId>().cloned()
        }
        _ => None,
    }
}

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
pub struct MtlsConnector(Arc<ConnectorSettings>);

impl std::ops::Deref for MtlsConnector {
    type Target = ConnectorSettings;

    fn deref(&self) -> &ConnectorSettings {
        &self.0
    }
}

/// What an [`MtlsConnector`] connects with.
#[derive(Clone)]
pub struct ConnectorSettings {
    cluster: Arc<str>,
    tls: TlsConnector,
    svid: Arc<ClientCertResolver>,
    breaker: Arc<OnceLock<Arc<dyn ConnectionBreaker>>>,
    server_name: Option<ServerName<'static>>,
    connect_timeout: std::time::Duration,
}

impl MtlsConnector {
    async fn connect(self, uri: Uri) -> Result<MtlsConn, ConnectError> {
        let addr = uri_addr(&uri)?;
        self.connect_addr(addr).await
    }

    /// TCP + TLS to `addr`, under the breaker's connection limits, counted by result.
    async fn connect_addr(&self, addr: SocketAddr) -> Result<MtlsConn, ConnectError> {
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
}

impl MtlsConnector {
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
struct BreakerSlot(Option<(Arc<dyn ConnectionBreaker>, Resource)>);

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
    io: TokioIo<TlsStream<TcpIo>>,
    h2: bool,
    _slot: BreakerSlot,
}

impl MtlsConn {
    /// The TLS stream and the breaker slot it holds.
    fn into_parts(self) -> (TlsStream<TcpIo>, BreakerSlot) {
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

/// The body of an upstream response, from whichever client carried the request.
pub enum ResponseBody {
    /// From hyper's client (HTTP/2, streamed request bodies, `auto` clusters).
    Hyper(Incoming),
    /// From the in-task HTTP/1.1 client.
    H1(h1::H1Body),
}

impl ResponseBody {
    /// The header fields of a response from the in-task HTTP/1.1 client, whose header map
    /// is empty (once; `None` for hyper's responses, whose map has them).
    pub fn take_fields(&mut self) -> Option<RawHead> {
        match self {
            Self::Hyper(_) => None,
            Self::H1(b) => b.take_fields(),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
            Self::H1(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Hyper(b) => b.is_end_stream(),
            Self::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Hyper(b) => b.size_hint(),
            Self::H1(b) => b.size_hint(),
        }
    }
}

/// How long one try may take: `per_try` once a connection is ready to carry it (like
/// Envoy since envoyproxy/envoy#4903, setting up a new connection is bounded by the connect
/// timeout, not by the per-try timeout: a burst of new connections does not time tries
/// out), and never past the request's `deadline`.
#[derive(Debug, Clone, Copy)]
pub struct TryBudget {
    /// Time for the exchange on a ready connection.
    pub per_try: Duration,
    /// The request's deadline.
    pub deadline: Instant,
}

impl TryBudget {
    /// When an exchange starting now must have its response head.
    fn exchange_ends(&self) -> Instant {
        (crate::clock::now() + self.per_try).min(self.deadline)
    }

    /// The request's deadline (what bounds a new connection besides the connect timeout).
    fn request_ends(&self) -> Instant {
        self.deadline
    }

    /// The error of a try whose budget ran out.
    fn expired(&self, addr: SocketAddr) -> UpstreamError {
        UpstreamError {
            addr,
            kind: FailureKind::Timeout,
            source: format!(
                "no response head within the per-try timeout of {:?}",
                self.per_try
            )
            .into(),
        }
    }
}

/// Runs `fut` until the instant `end` takes from `budget` (unbounded without a budget);
/// past it, a [`FailureKind::Timeout`] naming `addr`.
async fn bounded<F: Future>(
    budget: Option<TryBudget>,
    end: fn(&TryBudget) -> Instant,
    addr: SocketAddr,
    fut: F,
) -> Result<F::Output, UpstreamError> {
    match budget {
        Some(b) => tokio::time::timeout_at(end(&b), fut)
            .await
            .map_err(|_| b.expired(addr)),
        None => Ok(fut.await),
    }
}

/// Why a call to an endpoint failed.
#[derive(Debug, thiserror::Error)]
#[error("upstream call to {addr} failed ({})", kind.as_str())]
pub struct UpstreamError {
    /// The endpoint.
    pub addr: SocketAddr,
    /// The failure class.
    pub kind: FailureKind,
    /// The underlying error.
    #[source]
    pub source: BoxError,
}

impl UpstreamError {
    /// True when a retry to another endpoint is safe for any request (never sent).
    pub fn is_never_sent(&self) -> bool {
        self.kind.is_never_sent()
    }
}

/// The HTTP client of one cluster. Its connection pool belongs to one SVID: after a
/// rotation the next request starts a fresh pool, so a pooled connection never carries a
/// request under an SVID older than the current one (requests in flight on the old pool
/// finish on it; its connections close once idle).
#[derive(Clone)]
pub struct UpstreamClient {
    connector: MtlsConnector,
    verifies_dns_name: bool,
    pool: PoolSettings,
    current: Arc<ArcSwap<SvidPool>>,
    svid: Arc<ClientCertResolver>,
}

#[derive(Clone, Copy)]
struct PoolSettings {
    idle_timeout: std::time::Duration,
    max_idle_per_endpoint: usize,
    http2_only: bool,
    /// `protocol = "http1"`: complete bodies go through the in-task client.
    http1_in_task: bool,
}

struct SvidPool {
    generation: u64,
    client: Client<MtlsConnector, UpstreamBody>,
    h1: Option<Arc<h1::H1Pool>>,
}

impl SvidPool {
    fn new(generation: u64, connector: &MtlsConnector, pool: PoolSettings) -> Self {
        Self {
            generation,
            client: build_client(connector, pool),
            h1: pool
                .http1_in_task
                .then(|| h1::H1Pool::new(pool.max_idle_per_endpoint, pool.idle_timeout)),
        }
    }
}

impl UpstreamClient {
    /// A client for `cluster` using `tls`, whose client certificate `svid` resolves.
    pub fn new(
        cluster: &ClusterConfig,
        tls: Arc<rustls::ClientConfig>,
        svid: Arc<ClientCertResolver>,
    ) -> Self {
        let connector = MtlsConnector(Arc::new(ConnectorSettings {
            cluster: cluster.name.as_str().into(),
            tls: TlsConnector::from(tls),
            svid: svid.clone(),
            breaker: Arc::new(OnceLock::new()),
            server_name: cluster
                .server_name
                .as_deref()
                .or(match &cluster.upstream_identity {
                    UpstreamIdentity::DnsName(name) => Some(name.as_str()),
                    UpstreamIdentity::Spiffe(_) => None,
                })
                .and_then(|s| ServerName::try_from(s.to_owned()).ok()),
            connect_timeout: cluster.connect_timeout,
        }));
        let pool = PoolSettings {
            idle_timeout: cluster.pool_idle_timeout,
            max_idle_per_endpoint: cluster.pool_max_idle_per_endpoint,
            http2_only: cluster.protocol == UpstreamProtocol::Http2,
            http1_in_task: cluster.protocol == UpstreamProtocol::Http1,
        };
        let first = SvidPool::new(svid.generation(), &connector, pool);
        Self {
            connector,
            verifies_dns_name: matches!(cluster.upstream_identity, UpstreamIdentity::DnsName(_)),
            pool,
            current: Arc::new(ArcSwap::from_pointee(first)),
            svid,
        }
    }

    /// The client whose pool belongs to the current SVID, started on first use after a
    /// rotation.
    fn client(&self) -> Arc<SvidPool> {
        let generation = self.svid.generation();
        let current = self.current.load_full();
        if current.generation >= generation {
            return current;
        }
        tracing::debug!(cluster = %self.connector.cluster, generation, "SVID rotated: new upstream pool");
        let fresh = Arc::new(SvidPool::new(generation, &self.connector, self.pool));
        self.current.rcu(|p| {
            if p.generation >= generation {
                p.clone()
            } else {
                fresh.clone()
            }
        });
        self.current.load_full()
    }

    /// `Some(notAfter)` when the gateway's own SVID has expired: nothing may be sent.
    pub fn own_svid_expired(&self) -> Option<time::OffsetDateTime> {
        self.svid.expired_now()
    }

    /// Puts new connections under the cluster's breaker (`max_connections`,
    /// `max_pending_requests`); the first call wins.
    pub fn attach_breaker(&self, breaker: Arc<dyn ConnectionBreaker>) {
        let _ = self.connector.breaker.set(breaker);
    }

    /// One TCP + mTLS handshake to `addr` on a connection of its own (never pooled, nothing
    /// sent, not counted by the circuit breaker): `Ok(what the endpoint presented)`, or `Err((what it presented, if known, why
    /// it failed))`.
    pub async fn probe(&self, addr: SocketAddr) -> Result<String, (Option<String>, String)> {
        // A diagnostic connection: outside the breaker's connection limits.
        let unlimited = MtlsConnector(Arc::new(ConnectorSettings {
            breaker: Arc::new(OnceLock::new()),
            ..(*self.connector.0).clone()
        }));
        match unlimited.connect_addr(addr).await {
            Ok(conn) => {
                let session = conn.io.inner().get_ref().1;
                let presented = match &self.connector.server_name {
                    Some(name) if self.verifies_dns_name => {
                        format!("certificate valid for {}", name.to_str())
                    }
                    _ => session
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|leaf| meshedge_ca::svid::spiffe_id_of(leaf).ok())
                        .map_or_else(|| "no SPIFFE ID".to_owned(), |id| id.to_string()),
                };
                Ok(presented)
            }
            Err(ConnectError::IdentityMismatch {
                presented, allowed, ..
            }) => Err((
                Some(presented.to_string()),
                format!("presented {presented}, the cluster allows {allowed:?}"),
            )),
            Err(e) => Err((None, error_chain(&e))),
        }
    }

    /// Sends `req` (path and query only in its URI) to `addr`, within `budget` when given
    /// (an expired budget is a [`FailureKind::Timeout`]). Callers check the gateway's own
    /// SVID first ([`UpstreamClient::own_svid_expired`]: the request path once per request,
    /// health checks once per check); a new connection is refused with an expired one.
    pub async fn send(
        &self,
        addr: SocketAddr,
        out: Outgoing,
        budget: Option<TryBudget>,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let pool = self.client();
        let small = |n: u64| n <= h1::BUFFERED_BODY_MAX_BYTES;
        let out = match (&pool.h1, out) {
            (Some(h1), Outgoing::Buffered(head, body)) if small(body.len() as u64) => {
                let resp = h1::send(&self.connector, h1, addr, &head, &body, budget).await?;
                return Ok(resp.map(ResponseBody::H1));
            }
            (Some(h1), Outgoing::Request(req))
                if req.body().size_hint().exact().is_some_and(small) =>
            {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map_err(|e| UpstreamError {
                        addr,
                        kind: FailureKind::Protocol,
                        source: e,
                    })?
                    .to_bytes();
                let head = RequestHead::from(parts);
                let resp = h1::send(&self.connector, h1, addr, &head, &body, budget).await?;
                return Ok(resp.map(ResponseBody::H1));
            }
            (_, out) => out,
        };
        let mut req = out.into_request();
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTPS);
        parts.authority = Some(authority(addr));
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        *req.uri_mut() = Uri::from_parts(parts).map_err(|e| UpstreamError {
            addr,
            kind: FailureKind::Protocol,
            source: e.into(),
        })?;
        *req.version_mut() = http::Version::HTTP_11;
        // hyper's pool hides when a connection is ready: the budget covers the whole call.
        let call = pool.client.request(req);
        let resp = bounded(budget, TryBudget::exchange_ends, addr, call).await?;
        let resp = resp.map_err(|e| {
            let kind =
                find_cause::<ConnectError>(&e).map_or(FailureKind::Protocol, ConnectError::kind);
            UpstreamError {
                addr,
                kind,
                source: e.into(),
            }
        })?;
        Ok(resp.map(ResponseBody::Hyper))
    }
}

fn build_client(
    connector: &MtlsConnector,
    pool: PoolSettings,
) -> Client<MtlsConnector, UpstreamBody> {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(pool.idle_timeout)
        .pool_max_idle_per_host(pool.max_idle_per_endpoint)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(pool.http2_only)
        .build(connector.clone())
}

/// An error and its causes, one line (`a: b: c`).
fn error_chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// `addr` as a URI authority (`[v6]:port` for IPv6).
fn authority(addr: SocketAddr) -> http::uri::Authority {
    http::uri::Authority::from_maybe_shared(Bytes::from(addr.to_string()))
        .expect("a socket address is a valid authority")
}
