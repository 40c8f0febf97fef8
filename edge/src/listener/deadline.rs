//! The IO of connections hyper serves: bytes the HTTP/1.1 fast path ([`super::h1`]) read
//! before handing the connection over are replayed first, and the HTTP/1.1 request-head
//! deadline (slowloris) applies: while no request is in progress on a
//! connection, the client has `header_read_timeout` to send a complete head. A client that
//! sent part of a head gets `408 Request Timeout` and the connection is closed; an idle
//! keep-alive connection is closed silently. hyper's own header timeout closes without a
//! response, so the deadline lives in this IO wrapper, which knows from [`InFlight`] when
//! a request is being served.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::metrics as m;

const RESPONSE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// Requests of one connection being served (head received, response body not finished).
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Marks a request as started; the guard ends it when dropped.
    pub fn start(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.0.clone())
    }

    fn is_idle(&self) -> bool {
        self.0.load(Ordering::SeqCst) == 0
    }
}

/// Ends a request of [`InFlight`] on drop (keep it in the response body).
#[derive(Debug)]
pub struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An IO stream with replayed bytes and the request-head deadline (disabled when `timeout`
/// is `None`).
pub struct HeadDeadline<S> {
    inner: S,
    /// Read before `inner`.
    replay: BytesMut,
    timeout: Option<Duration>,
    in_flight: InFlight,
    /// Allocated on the first wait, then re-armed (`reset`) for every request head.
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    partial: bool,
}

impl<S> HeadDeadline<S> {
    /// Wraps `inner`, whose reads start with `replay`.
    pub fn new(inner: S, replay: BytesMut, timeout: Option<Duration>, in_flight: InFlight) -> Self {
        Self {
            inner,
            replay,
            timeout,
            in_flight,
            sleep: None,
            armed: false,
            partial: false,
        }
    }
}

impl<S: AsyncRead + Unpin> HeadDeadline<S> {
    fn read_inner(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.replay.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.replay.len().min(buf.remaining());
        buf.put_slice(&self.replay[..n]);
        self.replay.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for HeadDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(timeout) = this.timeout else {
            return this.read_inner(cx, buf);
        };
        if !this.in_flight.is_idle() {
            this.armed = false;
            return this.read_inner(cx, buf);
        }
        if !this.armed {
            let at = tokio::time::Instant::now() + timeout;
            match this.sleep.as_mut() {
                Some(sleep) => sleep.as_mut().reset(at),
                None => this.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            this.armed = true;
            this.partial = false;
        }
        let before = buf.filled().len();
        match this.read_inner(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.partial = true;
                }
                return Poll::Ready(r);
            }
            Poll::Pending => {}
        }
        let expired = this
            .sleep
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready());
        if !expired {
            return Poll::Pending;
        }
        this.armed = false;
        if this.partial {
            metrics::counter!(m::REQUESTS_REFUSED_TOTAL, "reason" => "header_timeout").increment(1);
            tracing::debug!("request head not complete in time: 408");
            let _ = Pin::new(&mut this.inner).poll_write(cx, RESPONSE_408);
            let _ = Pin::new(&mut this.inner).poll_flush(cx);
            let _ = Pin::new(&mut this.inner).poll_shutdown(cx);
        }
        // End of stream: hyper closes the connection.
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn partial_head_gets_408_idle_closes_silently_busy_waits() {
        let timeout = Some(Duration::from_secs(10));
        // Partial head: 408.
        let (mut client, server) = tokio::io::duplex(1024);
        let mut s = HeadDeadline::new(server, BytesMut::new(), timeout, InFlight::default());
        client.write_all(b"GET / HT").await.unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET / HT");
        assert_eq!(s.read(&mut buf).await.unwrap(), 0, "EOF after the deadline");
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert!(
            got.starts_with(b"HTTP/1.1 408"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );

        // Idle: silent close.
        let (mut client, server) = tokio::io::duplex(1024);
        let mut s = HeadDeadline::new(server, BytesMut::new(), timeout, InFlight::default());
        assert_eq!(s.read(&mut buf).await.unwrap(), 0);
        drop(s);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());

        // A request in flight: no deadline.
        let (mut client, server) = tokio::io::duplex(1024);
        let flight = InFlight::default();
        let guard = flight.start();
        let mut s = HeadDeadline::new(server, BytesMut::new(), timeout, flight);
        let read = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            s.read(&mut buf).await.map(|n| buf[..n].to_vec())
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        client.write_all(b"late").await.unwrap();
        assert_eq!(read.await.unwrap().unwrap(), b"late");
        drop(guard);
    }

    #[tokio::test]
    async fn replayed_bytes_are_read_before_the_stream_and_writes_pass_through() {
        let (mut client, server) = tokio::io::duplex(64);
        let replay = BytesMut::from(&b"GET / HT"[..]);
        let mut s = HeadDeadline::new(server, replay, None, InFlight::default());
        client.write_all(b"TP/1.1\r\n").await.unwrap();
        let mut small = [0u8; 3];
        s.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"GET");
        let mut rest = [0u8; 13];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b" / HTTP/1.1\r\n");
        s.write_all(b"ok").await.unwrap();
        let mut got = [0u8; 2];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ok");
    }
}
