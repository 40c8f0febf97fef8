//! The in-task HTTP/1.1 client of `protocol = "http1"` clusters, for requests whose body is
//! complete (known length up to [`BUFFERED_BODY_MAX_BYTES`]; everything else goes through
//! hyper's client). The request's own task writes the request and reads the response on a
//! pooled mTLS connection: no connection task, no channels between tasks, and exactly as
//! many upstream connections as requests in flight (hyper-util's pool races a new connect
//! against every checkout and kept ~200 connections for 64 clients in the bench).
//!
//! A response whose body is already in the read buffer (the common small answer) hands its
//! connection back to the pool before the response is forwarded; a longer body streams from
//! the connection and hands it back when it ends. An idle connection is checked before it
//! is reused (closed by the upstream, or holding unexpected bytes: dropped) and closed after
//! the cluster's `pool_idle_timeout`.

mod codec;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Response};
use http_body::{Body, Frame, SizeHint};
use rustc_hash::FxHashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_rustls::client::TlsStream;

use super::{
    bounded, BoxError, BreakerSlot, FailureKind, MtlsConnector, RawHead, RequestHead, TryBudget,
    UpstreamError,
};
use crate::metrics as m;
use crate::tcp::TcpIo;
use codec::{BodyDecoder, Decoded, Framing, H1Error, ResponseHead};

/// Request bodies of known length up to this size go through this client.
pub(super) const BUFFERED_BODY_MAX_BYTES: u64 = 64 * 1024;

/// Read buffer of a connection, and what is added when it runs low.
const READ_CHUNK: usize = 4096;
/// Largest request buffer an idle connection keeps.
const KEPT_REQUEST_BUFFER_BYTES: usize = 4096;

/// An mTLS connection speaking HTTP/1.1, with its read buffer.
struct H1Conn {
    /// Boxed: the TLS state is about a kilobyte, and a connection moves in and out of the
    /// pool on every request.
    io: Box<TlsStream<TcpIo>>,
    buf: BytesMut,
    /// The request being sent, encoded (kept: a buffer per request cost an allocation).
    out: Vec<u8>,
    /// The exchange timer, kept with the connection and moved only when it fires before the
    /// exchange in progress is due (a tokio timer reset on every request cost ~1k
    /// instructions); allocated on the first bounded exchange.
    timer: Option<Pin<Box<Sleep>>>,
    _slot: BreakerSlot,
}

impl H1Conn {
    fn new(io: TlsStream<TcpIo>, slot: BreakerSlot) -> Self {
        Self {
            io: Box::new(io),
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: Vec::new(),
            timer: None,
            _slot: slot,
        }
    }

    /// An idle connection is usable while reading it would block: not closed by the
    /// upstream, no bytes nobody asked for. Costs no system call while the socket has not
    /// become readable.
    fn idle_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        self.buf.is_empty()
            && Pin::new(&mut self.io)
                .poll_read(&mut cx, &mut probe)
                .is_pending()
    }
}

/// Makes room for the next read into a connection's buffer.
fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

struct Idle {
    conn: H1Conn,
    since: Instant,
}

/// Idle connections of one SVID generation, by endpoint (most recently used first out).
pub(super) struct H1Pool {
    /// Keyed by endpoint address (from config or DNS, not from clients): FxHash, not SipHash.
    idle: Mutex<FxHashMap<SocketAddr, Vec<Idle>>>,
    max_idle_per_endpoint: usize,
    idle_timeout: Duration,
}

impl H1Pool {
    /// A pool keeping up to `max_idle_per_endpoint` connections per endpoint for
    /// `idle_timeout`; a task closes expired ones while the pool lives.
    pub fn new(max_idle_per_endpoint: usize, idle_timeout: Duration) -> Arc<Self> {
        let pool = Arc::new(Self {
            idle: Mutex::default(),
            max_idle_per_endpoint,
            idle_timeout,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let every = (idle_timeout / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
            let weak = Arc::downgrade(&pool);
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match weak.upgrade() {
                        Some(pool) => pool.sweep(),
                        None => break,
                    }
                }
            });
        }
        pool
    }

    fn checkout(&self, addr: SocketAddr) -> Option<H1Conn> {
        let now = crate::clock::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.get_mut(&addr)?;
        while let Some(mut c) = list.pop() {
            if now.duration_since(c.since) < self.idle_timeout && c.conn.idle_usable() {
                return Some(c.conn);
            }
        }
        None
    }

    fn checkin(&self, addr: SocketAddr, mut conn: H1Conn) {
        if !conn.buf.is_empty() {
            return;
        }
        // An idle connection keeps a request buffer of the usual size, not one a large
        // body grew.
        if conn.out.capacity() > KEPT_REQUEST_BUFFER_BYTES {
            conn.out = Vec::new();
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.entry(addr).or_default();
        if list.len() < self.max_idle_per_endpoint {
            list.push(Idle {
                conn,
                since: crate::clock::now(),
            });
        }
    }

    /// Closes connections idle for longer than the timeout or closed by the upstream.
    fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        for list in idle.values_mut() {
            list.retain_mut(|c| {
                now.duration_since(c.since) < self.idle_timeout && c.conn.idle_usable()
            });
        }
        idle.retain(|_, list| !list.is_empty());
    }
}

/// Why one request/response exchange failed.
enum ExchangeError {
    /// Nothing came back (the write failed, or the connection closed before any byte of a
    /// response): on a pooled connection, the upstream had closed it.
    NothingReceived(BoxError),
    /// Anything else.
    Failed(BoxError),
}

/// Sends `req` (complete body of known length) to `addr` on a pooled or new connection.
pub(super) async fn send(
    connector: &MtlsConnector,
    pool: &Arc<H1Pool>,
    addr: SocketAddr,
    head: &RequestHead,
    body: &Bytes,
    budget: Option<TryBudget>,
) -> Result<Response<H1Body>, UpstreamError> {
    let failed = |kind: FailureKind, source: BoxError| UpstreamError { addr, kind, source };
    let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
    let resend_allowed = crate::resilience::retry::is_idempotent(&head.method);
    let mut pooled_allowed = true;
    loop {
        let pooled = if pooled_allowed {
            pool.checkout(addr)
        } else {
            None
        };
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                // Bounded by the connect timeout (and the request's deadline), not by the
                // per-try timeout. Boxed: the TLS handshake's state is large and rare, and
                // inline it made every request's future (moved several times) that large.
                let connect = Box::pin(connector.connect_addr(addr));
                let conn = bounded(budget, TryBudget::request_ends, addr, connect)
                    .await?
                    .map_err(|e| failed(e.kind(), e.into()))?;
                let (io, slot) = conn.into_parts();
                H1Conn::new(io, slot)
            }
        };
        conn.out.clear();
        codec::encode_request(
            &mut conn.out,
            &head.method,
            target,
            &head.headers,
            head.fields.as_ref(),
            addr,
            body,
        );
        match exchange_within(&mut conn, &head.method, budget, addr).await? {
            Ok(head) => return Ok(respond(conn, head, pool, addr)),
            Err(ExchangeError::NothingReceived(e)) if reused && resend_allowed => {
                tracing::debug!(endpoint = %addr, error = %e, "pooled connection was closed by the upstream; resending on a new one");
                metrics::counter!(m::UPSTREAM_STALE_RETRIES_TOTAL, "cluster" => connector.cluster.to_string())
                    .increment(1);
                pooled_allowed = false;
            }
            Err(ExchangeError::NothingReceived(e) | ExchangeError::Failed(e)) => {
                return Err(failed(FailureKind::Protocol, e))
            }
        }
    }
}

/// [`exchange`] within the budget's per-try time (unbounded without a budget), on the
/// connection's own timer: it is moved earlier when this exchange is due earlier, and when it
/// fires before this exchange is due (it was set for an earlier one) it is moved to when this
/// one is due; otherwise it is left alone.
async fn exchange_within(
    conn: &mut H1Conn,
    method: &Method,
    budget: Option<TryBudget>,
    addr: SocketAddr,
) -> Result<Result<ResponseHead, ExchangeError>, UpstreamError> {
    let H1Conn {
        io,
        buf,
        out,
        timer,
        ..
    } = conn;
    let exchanged = exchange(io, buf, out, method);
    let Some(budget) = budget else {
        return Ok(exchanged.await);
    };
    let due = budget.exchange_ends();
    let timer = match timer {
        Some(timer) => {
            if timer.deadline() > due {
                timer.as_mut().reset(due);
            }
            timer
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(due))),
    };
    tokio::pin!(exchanged);
    loop {
        tokio::select! {
            biased;
            exchanged = &mut exchanged => return Ok(exchanged),
            () = timer.as_mut() => {
                if Instant::now() >= due {
                    return Err(budget.expired(addr));
                }
                timer.as_mut().reset(due);
            }
        }
    }
}

/// Writes the request and reads the response head into `buf`.
async fn exchange(
    io: &mut TlsStream<TcpIo>,
    buf: &mut BytesMut,
    wire: &[u8],
    method: &Method,
) -> Result<ResponseHead, ExchangeError> {
    let written = async {
        io.write_all(wire).await?;
        io.flush().await
    };
    if let Err(e) = written.await {
        return Err(ExchangeError::NothingReceived(e.into()));
    }
    let mut received = false;
    loop {
        match codec::parse_head(buf, method) {
            Ok(Some(head)) => return Ok(head),
            Ok(None) => {}
            Err(e) => return Err(ExchangeError::Failed(e.into())),
        }
        reserve(buf);
        let error: BoxError = match io.read_buf(buf).await {
            Ok(0) => H1Error::Closed("head").into(),
            Ok(_) => {
                received = true;
                continue;
            }
            Err(e) => e.into(),
        };
        return Err(if received {
            ExchangeError::Failed(error)
        } else {
            ExchangeError::NothingReceived(error)
        });
    }
}

/// The response with its body; the connection goes back to the pool as soon as the body
/// has been read off it.
fn respond(
    mut conn: H1Conn,
    head: ResponseHead,
    pool: &Arc<H1Pool>,
    addr: SocketAddr,
) -> Response<H1Body> {
    let mut decoder = BodyDecoder::new(head.framing);
    let in_buffer = match head.framing {
        Framing::Length(n) => usize::try_from(n).is_ok_and(|n| n <= conn.buf.len()),
        _ => false,
    };
    let state = if in_buffer {
        let data = match decoder.decode(&mut conn.buf) {
            Ok(Decoded::Data(d)) => Some(d),
            _ => None,
        };
        if head.keep_alive {
            pool.checkin(addr, conn);
        }
        BodyState::Complete(data)
    } else {
        BodyState::Streaming(Box::new(Streaming {
            conn,
            decoder,
            keep_alive: head.keep_alive,
            pool: Arc::downgrade(pool),
            addr,
        }))
    };
    let mut response = Response::new(H1Body {
        state,
        fields: Some(head.fields),
    });
    *response.status_mut() = head.status;
    response
}

/// A response body read by the in-task client. It also carries the response's header
/// fields as received: the response's own header map stays empty (see [`RawHead`]).
pub struct H1Body {
    state: BodyState,
    fields: Option<RawHead>,
}

enum BodyState {
    /// The whole body (already off the connection).
    Complete(Option<Bytes>),
    /// Being read off the connection.
    Streaming(Box<Streaming>),
    Done,
}

struct Streaming {
    conn: H1Conn,
    decoder: BodyDecoder,
    keep_alive: bool,
    pool: Weak<H1Pool>,
    addr: SocketAddr,
}

impl H1Body {
    /// The response's header fields (once: `None` after the first call).
    pub fn take_fields(&mut self) -> Option<RawHead> {
        self.fields.take()
    }

    /// Ends the body; a connection whose response ended cleanly goes back to the pool.
    fn finish(&mut self) {
        if let BodyState::Streaming(s) = std::mem::replace(&mut self.state, BodyState::Done) {
            if s.keep_alive && s.decoder.is_done() {
                if let Some(pool) = s.pool.upgrade() {
                    pool.checkin(s.addr, s.conn);
                }
            }
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let s = match &mut this.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Complete(data) => {
                    let data = data.take();
                    this.state = BodyState::Done;
                    return Poll::Ready(data.map(|d| Ok(Frame::data(d))));
                }
                BodyState::Streaming(s) => s,
            };
            match s.decoder.decode(&mut s.conn.buf) {
                Ok(Decoded::Data(d)) => {
                    if s.decoder.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Ok(Decoded::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(e) => {
                    this.state = BodyState::Done;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            reserve(&mut s.conn.buf);
            match tokio_util::io::poll_read_buf(Pin::new(&mut s.conn.io), cx, &mut s.conn.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    // The upstream closed: the end of an until-close body, else an error.
                    s.keep_alive = false;
                    if let Err(e) = s.decoder.closed() {
                        this.state = BodyState::Done;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.state = BodyState::Done;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done | BodyState::Complete(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            BodyState::Done | BodyState::Complete(None) => SizeHint::with_exact(0),
            BodyState::Complete(Some(d)) => SizeHint::with_exact(d.len() as u64),
            BodyState::Streaming(s) => s
                .decoder
                .remaining()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
        }
    }
}
