//! The pooled mTLS client of one cluster: TCP + TLS with the gateway's SVID, the upstream
//! verified by chain to the bundle and by SPIFFE ID ([`SpiffeServerVerifier`]), HTTP/1.1 or
//! HTTP/2 by ALPN, keep-alive connections pooled per endpoint. `protocol = "http1"`
//! clusters send requests with complete bodies through the in-task client of `h1`, the
//! rest through hyper-util's pooled client; both connect through [`MtlsConnector`].
//!
//! [`SpiffeServerVerifier`]: meshedge_ca::tls::SpiffeServerVerifier

mod connector;
mod error;
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
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::config::{ClusterConfig, UpstreamIdentity, UpstreamProtocol};
use crate::identity::ClientCertResolver;
use connector::{BreakerSlot, ConnectorSettings};

pub use crate::raw_head::RawHead;
pub use connector::{client_tls, ConnectionBreaker, MtlsConn, MtlsConnector};
pub use error::{error_chain, find_cause, ConnectError, FailureKind, UpstreamError};
pub use outgoing::{Outgoing, RequestHead};

/// Error type of bodies sent upstream.
pub type BoxError = Box<dyn StdError + Send + Sync>;
/// Request body sent upstream.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

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

/// `addr` as a URI authority (`[v6]:port` for IPv6).
fn authority(addr: SocketAddr) -> http::uri::Authority {
    http::uri::Authority::from_maybe_shared(Bytes::from(addr.to_string()))
        .expect("a socket address is a valid authority")
}
