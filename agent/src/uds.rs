//! Workload API connections on the unix socket.
//!
//! gRPC C-core clients (Python, Ruby, C++) send the socket path, percent-encoded, as the
//! HTTP/2 `:authority` (e.g. `run%2Fagent.sock`), which the `h2` crate rejects with
//! PROTOCOL_ERROR. Go's server accepts it, so SPIFFE clients expect it to work. Each
//! connection therefore passes through a small relay that decodes every client header block
//! (HPACK), replaces an `:authority` that is not a valid URI authority with `localhost`, and
//! re-encodes it; every other frame and the whole server-to-client direction pass unchanged.
//!
//! The peer credentials are taken from the socket before the relay and handed to the
//! gRPC service as [`PeerCred`] connect info.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::unix::UCred;
use tokio::net::UnixStream;

/// HTTP/2 client connection preface.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The h2 server's default SETTINGS_MAX_FRAME_SIZE; re-encoded blocks are split to it.
const MAX_FRAME: usize = 16_384;
/// Largest header block accepted from a client.
const MAX_BLOCK: usize = 64 * 1024;

/// The credentials of the process at the other end (None if the kernel gave none).
#[derive(Debug, Clone, Copy)]
pub struct PeerCred(pub Option<UCred>);

/// A Workload API connection: the relayed stream plus the peer's credentials.
pub struct WorkloadConn {
    io: DuplexStream,
    cred: Option<UCred>,
}

impl WorkloadConn {
    /// Takes the credentials of `stream` and starts relaying it.
    pub fn accept(stream: UnixStream) -> Self {
        let cred = stream.peer_cred().ok();
        let (near, far) = tokio::io::duplex(64 * 1024);
        tokio::spawn(relay(stream, far));
        Self { io: near, cred }
    }
}

impl tonic::transport::server::Connected for WorkloadConn {
    type ConnectInfo = PeerCred;
    fn connect_info(&self) -> PeerCred {
        PeerCred(self.cred)
    }
}

impl AsyncRead for WorkloadConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for WorkloadConn {
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

async fn relay(client: UnixStream, server: DuplexStream) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = tokio::io::split(server);
    let down = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    let up = async {
        if let Err(e) = rewrite_client_frames(&mut cr, &mut sw).await {
            tracing::debug!(error = %e, "workload api connection closed");
        }
        let _ = sw.shutdown().await;
    };
    tokio::join!(down, up);
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

/// Copies client frames from `r` to `w`, re-encoding header blocks with a valid `:authority`.
pub async fn rewrite_client_frames<R, W>(r: &mut R, w: &mut W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    r.read_exact(&mut preface).await?;
    if &preface != PREFACE {
        return Err(invalid("not an HTTP/2 connection preface"));
    }
    w.write_all(&preface).await?;
    let mut decoder = loona_hpack::Decoder::new();
    let mut encoder = loona_hpack::Encoder::new();
    // (stream id, flags of the HEADERS frame, priority bytes, block so far)
    let mut pending: Option<(u32, u8, Vec<u8>, Vec<u8>)> = None;
    loop {
        let mut head = [0u8; 9];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        if len > MAX_BLOCK {
            return Err(invalid("frame too large"));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        match (kind, pending.as_mut()) {
            (HEADERS, None) => {
                let (prio, fragment) = split_headers_payload(flags, &payload)?;
                pending = Some((stream, flags, prio.to_vec(), fragment.to_vec()));
            }
            (CONTINUATION, Some((id, _, _, block))) if *id == stream => {
                block.extend_from_slice(&payload);
                if block.len() > MAX_BLOCK {
                    return Err(invalid("header block too large"));
                }
            }
            (_, Some(_)) => return Err(invalid("frame interleaved with a header block")),
            _ => {
                w.write_all(&head).await?;
                w.write_all(&payload).await?;
                continue;
            }
        }
        if flags & END_HEADERS == 0 {
            continue;
        }
        let Some((id, first_flags, prio, block)) = pending.take() else {
            continue;
        };
        let mut headers = decoder
            .decode(&block)
            .map_err(|e| invalid(&format!("hpack: {e}")))?;
        for (name, value) in headers.iter_mut() {
            if name == b":authority" && !is_valid_authority(value) {
                *value = b"localhost".to_vec();
            }
        }
        let encoded = encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        write_block(w, id, first_flags, &prio, &encoded).await?;
    }
}

/// The priority bytes and the header block fragment of a HEADERS payload.
fn split_headers_payload(flags: u8, payload: &[u8]) -> std::io::Result<(&[u8], &[u8])> {
    let mut body = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (&p, rest) = body.split_first().ok_or_else(|| invalid("bad padding"))?;
        pad = p as usize;
        body = rest;
    }
    if pad > body.len() {
        return Err(invalid("bad padding"));
    }
    body = &body[..body.len() - pad];
    if flags & PRIORITY != 0 {
        if body.len() < 5 {
            return Err(invalid("bad priority"));
        }
        return Ok(body.split_at(5));
    }
    Ok((&[], body))
}

async fn write_block<W: AsyncWrite + Unpin>(
    w: &mut W,
    stream: u32,
    flags: u8,
    prio: &[u8],
    block: &[u8],
) -> std::io::Result<()> {
    let first_room = MAX_FRAME - prio.len();
    let (first, mut rest) = block.split_at(block.len().min(first_room));
    let mut f = flags & (END_STREAM | PRIORITY);
    if rest.is_empty() {
        f |= END_HEADERS;
    }
    write_frame(w, HEADERS, f, stream, &[prio, first].concat()).await?;
    while !rest.is_empty() {
        let (chunk, next) = rest.split_at(rest.len().min(MAX_FRAME));
        rest = next;
        let f = if rest.is_empty() { END_HEADERS } else { 0 };
        write_frame(w, CONTINUATION, f, stream, chunk).await?;
    }
    Ok(())
}

async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = (payload.len() as u32).to_be_bytes();
    let id = stream.to_be_bytes();
    let head = [
        len[1], len[2], len[3], kind, flags, id[0], id[1], id[2], id[3],
    ];
    w.write_all(&head).await?;
    w.write_all(payload).await
}

/// True when `value` parses as a URI authority (what `h2` accepts).
fn is_valid_authority(value: &[u8]) -> bool {
    hyper::http::uri::Authority::try_from(value).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let id = stream.to_be_bytes();
        let mut v = vec![
            len[1], len[2], len[3], kind, flags, id[0], id[1], id[2], id[3],
        ];
        v.extend_from_slice(payload);
        v
    }

    #[tokio::test]
    async fn rewrites_bad_authority_and_passes_other_frames() {
        let mut enc = loona_hpack::Encoder::new();
        let block = enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
            (b":authority", b"run%2Fagent.sock"),
            (b":scheme", b"http"),
        ]);
        let (a, b) = block.split_at(10);
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        input.extend(frame(
            HEADERS,
            PADDED,
            1,
            &[[2u8].as_slice(), a, &[0, 0]].concat(),
        ));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        input.extend(frame(0x0, END_STREAM, 1, b"data"));
        let mut out = Vec::new();
        rewrite_client_frames(&mut input.as_slice(), &mut out)
            .await
            .unwrap();
        assert_eq!(&out[..24], PREFACE);
        assert_eq!(&out[24..33], &frame(0x4, 0, 0, &[])[..]);
        let headers = &out[33..];
        let len = u32::from_be_bytes([0, headers[0], headers[1], headers[2]]) as usize;
        assert_eq!((headers[3], headers[4]), (HEADERS, END_HEADERS));
        let decoded = loona_hpack::Decoder::new()
            .decode(&headers[9..9 + len])
            .unwrap();
        assert!(decoded.contains(&(b":authority".to_vec(), b"localhost".to_vec())));
        assert!(decoded.contains(&(
            b":path".to_vec(),
            b"/SpiffeWorkloadAPI/FetchX509SVID".to_vec()
        )));
        assert_eq!(&headers[9 + len..], &frame(0x0, END_STREAM, 1, b"data")[..]);
    }

    #[test]
    fn authority_validity() {
        assert!(is_valid_authority(b"localhost"));
        assert!(is_valid_authority(b"workload.api.localhost"));
        assert!(!is_valid_authority(b"run%2Fagent.sock"));
        assert!(!is_valid_authority(b"/run/agent.sock"));
    }
}
