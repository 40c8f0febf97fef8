//! The TCP stream under every TLS connection of the gateway (client side and upstream).
//!
//! rustls hands its queued records to the socket as a vectored write, and tokio's
//! `TcpStream` turns every vectored write into `writev(2)`, even for one buffer. A proxied
//! request is usually one TLS record each way, so that is one `writev` per record, and on
//! Linux `writev` costs more kernel time than `send(2)` does for the same bytes (the vfs
//! layer and the iovec import: `perf` put `vfs_writev` alone at about 0.9 µs of a request's
//! kernel time on the shared bench, where nginx's `write` path took 0.5). [`TcpIo`] sends a
//! single buffer with `send(2)` and keeps `writev` for several.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream whose vectored writes of one non-empty buffer go out as `send(2)`.
#[derive(Debug)]
pub struct TcpIo(TcpStream);

impl TcpIo {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Self {
        TcpIo(stream)
    }
}

impl AsyncRead for TcpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = Pin::new(&mut self.get_mut().0);
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        match (filled.next(), filled.next()) {
            (None, _) => Poll::Ready(Ok(0)),
            (Some(one), None) => stream.poll_write(cx, one),
            _ => stream.poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpIo, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (TcpIo::new(client.unwrap()), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn vectored_writes_of_one_or_several_buffers_arrive_whole_and_in_order() {
        let (mut io, mut peer) = pair().await;
        let one = [IoSlice::new(b""), IoSlice::new(b"alpha"), IoSlice::new(b"")];
        let n = io.write_vectored(&one).await.unwrap();
        assert_eq!(n, 5);
        let several = [
            IoSlice::new(b"beta"),
            IoSlice::new(b""),
            IoSlice::new(b"gamma"),
        ];
        // Several buffers may be taken in part; the rest follows as a plain write.
        let n = io.write_vectored(&several).await.unwrap();
        assert!(n > 0);
        io.write_all(&b"betagamma"[n..]).await.unwrap();
        assert_eq!(io.write_vectored(&[IoSlice::new(b"")]).await.unwrap(), 0);
        io.shutdown().await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"alphabetagamma");
    }

    #[tokio::test]
    async fn reads_pass_through() {
        let (mut io, mut peer) = pair().await;
        peer.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
    }
}
