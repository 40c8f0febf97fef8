//! Readiness probe: `GET /healthz/ready` over HTTP/1.0 on a plain TCP connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Connecting, writing or reading failed.
    #[error("probing {addr}{path}")]
    Io {
        /// The address probed.
        addr: SocketAddr,
        /// The path probed.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No answer within the timeout.
    #[error("probing {addr}{path}: no answer within {timeout:?}")]
    Timeout {
        /// The address probed.
        addr: SocketAddr,
        /// The path probed.
        path: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The answer was not `200`.
    #[error("probing {addr}{path}: status line {status:?}")]
    NotReady {
        /// The address probed.
        addr: SocketAddr,
        /// The path probed.
        path: String,
        /// The status line received.
        status: String,
    },
}

/// GETs `path` on `addr` and succeeds on a `200` status.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), ProbeError> {
    let io = |source| ProbeError::Io {
        addr,
        path: path.to_owned(),
        source,
    };
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.map_err(io)?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut head = Vec::with_capacity(64);
        let mut buf = [0u8; 64];
        while !head.contains(&b'\n') && head.len() < 512 {
            let n = stream.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let status = line.lines().next().unwrap_or("").to_owned();
        let mut words = status.split_whitespace();
        let is_http = words.next().is_some_and(|v| v.starts_with("HTTP/"));
        if is_http && words.next() == Some("200") {
            Ok(())
        } else {
            Err(ProbeError::NotReady {
                addr,
                path: path.to_owned(),
                status,
            })
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::Timeout {
            addr,
            path: path.to_owned(),
            timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(answer: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(answer.as_bytes()).await;
        });
        addr
    }

    #[tokio::test]
    async fn ok_on_200_only() {
        let t = Duration::from_secs(2);
        let ok = serve_once("HTTP/1.1 200 OK\r\n\r\nready").await;
        probe(ok, "/healthz/ready", t).await.unwrap();
        let bad = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let err = probe(bad, "/healthz/ready", t).await.unwrap_err();
        assert!(matches!(err, ProbeError::NotReady { .. }), "{err}");
        let junk = serve_once("200 200 200").await;
        assert!(probe(junk, "/", t).await.is_err());
    }
}
