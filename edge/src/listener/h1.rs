//! The HTTP/1.1 fast path for client connections: the common request (a head, and a body
//! already read with it, if any) is parsed, proxied and answered here in one pass over the
//! bytes, with no per-connection dispatcher or body channel. The first request it does not
//! serve (a body still to come, chunked coding, `expect`, upgrades, `CONNECT`, invalid
//! framing) hands the connection to hyper with the unparsed bytes, for the rest of its life.
//!
//! Listener protections are the same either way: a head not complete within
//! `header_read_timeout` gets `408` (an idle keep-alive connection is closed silently), a
//! head over `max_header_bytes` or with more than 100 lines gets `431`, a malformed one
//! `400`; each is counted in `meshedge_edge_requests_refused_total` and closes only its own
//! connection.

pub mod request;
pub mod response;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, StatusCode, Version};
use http_body::Body;
use http_body_util::Full;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics as m;
use crate::proxy::Reply;
use crate::raw_head::RawHead;
use request::Parsed;
use response::{DateCache, ResponseFor};

/// Read buffer size; heads and small bodies usually arrive in one read.
const READ_BUF_BYTES: usize = 8 * 1024;
/// Bounds the final write and TLS close of a refused or finished connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The listener limits the fast path applies.
#[derive(Debug, Clone, Copy)]
pub struct H1Limits {
    /// Time a client has to send a complete request head.
    pub header_read_timeout: Duration,
    /// Largest request head.
    pub max_head_bytes: usize,
}

/// How the fast path left a connection.
#[derive(Debug)]
pub enum Ended {
    /// Closed (by either side, or after a refusal).
    Closed,
    /// Hyper serves the rest of the connection, starting with these bytes.
    HandOff(BytesMut),
}

/// Serves requests on `io` through `handler` until the connection closes or a request
/// needs hyper. When `drain` turns true, the connection closes once idle, and the response
/// in progress says `connection: close`.
pub async fn serve<S, H, F>(
    io: &mut S,
    limits: H1Limits,
    mut handler: H,
    drain: &mut watch::Receiver<bool>,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: FnMut(Request<Full<Bytes>>, Option<RawHead>) -> F,
    F: Future<Output = Reply>,
{
    let mut buf = BytesMut::with_capacity(READ_BUF_BYTES);
    let mut out = Vec::with_capacity(READ_BUF_BYTES);
    let mut date = DateCache::default();
    // A head is due `header_read_timeout` after the connection starts waiting for it. The
    // timer is only moved when it fires before that: moving it for every request cost more
    // than the rest of the wait.
    let mut head_due = crate::clock::now() + limits.header_read_timeout;
    let timer = tokio::time::sleep_until(head_due);
    tokio::pin!(timer);
    // The drain: latched from a version check (an atomic load) per request, and woken by one
    // wait registered for the whole connection (a wait per request took two locks).
    let mut draining = *drain.borrow_and_update();
    let mut notice = drain.clone();
    let drained = async move {
        let _ = notice.wait_for(|d| *d).await;
    };
    tokio::pin!(drained);
    let mut waiting = true;
    loop {
        let parsed = if buf.is_empty() {
            Parsed::Partial
        } else {
            request::parse(&mut buf, limits.max_head_bytes)
        };
        let fast = match parsed {
            Parsed::Request(fast) => fast,
            Parsed::Partial => {
                if !waiting {
                    head_due = crate::clock::now() + limits.header_read_timeout;
                    waiting = true;
                }
                draining = draining || started_draining(drain);
                let idle_drained = (buf.is_empty() && !draining).then_some(drained.as_mut());
                match read_more(io, &mut buf, timer.as_mut(), draining, idle_drained).await {
                    Read::Data => continue,
                    Read::Expired if Instant::now() < head_due => {
                        timer.as_mut().reset(head_due);
                        continue;
                    }
                    Read::Closed => return Ended::Closed,
                    Read::Drained => return close(io).await,
                    Read::Expired if buf.is_empty() => return close(io).await,
                    Read::Expired => {
                        refuse(io, &mut out, StatusCode::REQUEST_TIMEOUT, "header_timeout").await;
                        return Ended::Closed;
                    }
                }
            }
            Parsed::HandOff(why) => {
                metrics::counter!(m::H1_HANDOFFS_TOTAL, "reason" => why).increment(1);
                return Ended::HandOff(buf);
            }
            Parsed::Refuse(status, reason) => {
                refuse(io, &mut out, status, reason).await;
                return Ended::Closed;
            }
        };
        waiting = false;
        let head = fast.request.method() == Method::HEAD;
        let http10 = fast.request.version() == Version::HTTP_10;
        let Reply {
            response,
            upstream_fields,
        } = handler(fast.request.map(Full::new), fast.fields).await;
        let asked = ResponseFor {
            head,
            http10,
            keep_alive: fast.keep_alive && !(draining || started_draining(drain)),
        };
        let (parts, body) = response.into_parts();
        let (framing, keep_alive) = response::encode_head(
            &mut out,
            &parts,
            upstream_fields.as_ref(),
            body.size_hint().exact(),
            asked,
            &mut date,
        );
        match response::send(io, &mut out, body, framing).await {
            Ok(true) if keep_alive => {}
            Ok(_) => return close(io).await,
            Err(e) => {
                tracing::debug!(error = %e, "writing the response failed");
                return Ended::Closed;
            }
        }
    }
}

enum Read {
    /// More bytes are in the buffer.
    Data,
    /// The client closed the connection, or it failed.
    Closed,
    /// The gateway drains and no request had started.
    Drained,
    /// The head deadline passed.
    Expired,
}

/// Ends the connection from our side (TLS `close_notify`, then FIN).
async fn close<S: AsyncWrite + Unpin>(io: &mut S) -> Ended {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, io.shutdown()).await;
    Ended::Closed
}

/// Whether the drain began since `drain` last looked (a closed channel counts: the gateway
/// is gone). Only ever turns on: the latch is the caller's.
fn started_draining(drain: &mut watch::Receiver<bool>) -> bool {
    match drain.has_changed() {
        Ok(false) => false,
        Ok(true) => *drain.borrow_and_update(),
        Err(_) => true,
    }
}

/// Reads more of a request head into `buf`, until `timer` fires; with no head started, a
/// drain that began (`draining`) or begins (`drained` resolves) closes the connection.
async fn read_more<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    timer: Pin<&mut tokio::time::Sleep>,
    draining: bool,
    drained: Option<Pin<&mut impl Future<Output = ()>>>,
) -> Read {
    if buf.is_empty() && draining {
        return Read::Drained;
    }
    if buf.capacity() - buf.len() < READ_BUF_BYTES / 2 {
        buf.reserve(READ_BUF_BYTES);
    }
    let idle = drained.is_some();
    let drained = async {
        match drained {
            Some(d) => d.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        // Bytes first: the timer is not even polled when they are there.
        biased;
        r = io.read_buf(buf) => match r {
            Ok(0) => Read::Closed,
            Ok(_) => Read::Data,
            Err(e) => {
                tracing::debug!(error = %e, "reading the request failed");
                Read::Closed
            }
        },
        () = timer => Read::Expired,
        () = drained, if idle => Read::Drained,
    }
}

/// Answers a bad request head with `status` (no body kept, connection closed).
async fn refuse<S: AsyncWrite + Unpin>(
    io: &mut S,
    out: &mut Vec<u8>,
    status: StatusCode,
    reason: &'static str,
) {
    metrics::counter!(m::REQUESTS_REFUSED_TOTAL, "reason" => reason).increment(1);
    tracing::debug!(status = status.as_u16(), reason, "request head refused");
    out.clear();
    response::push_status_line(out, status);
    out.extend_from_slice(b"connection: close\r\ncontent-length: 0\r\n\r\n");
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        io.write_all(out).await?;
        io.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests;
