//! Responses of the HTTP/1.1 fast path (RFC 9112): the head written into the connection's
//! write buffer, the body framed by `content-length`, chunked, or the end of the
//! connection, and head and a small body sent in one TLS write.

use std::io::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use http::response::Parts;
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::proxy::ProxyBody;
use crate::upstream::RawHead;

/// Buffered response bytes are written out when they reach this size.
const WRITE_AT_BYTES: usize = 64 * 1024;
/// Body pieces from this size on are written as they are, not copied into the buffer.
const DIRECT_WRITE_BYTES: usize = 16 * 1024;

/// How a response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (HTTP/1.0 client, length unknown).
    UntilClose,
}

/// What the request said about the response it gets.
#[derive(Debug, Clone, Copy)]
pub struct ResponseFor {
    /// The request was `HEAD`: no body, whatever the headers say.
    pub head: bool,
    /// The request was HTTP/1.0: no chunked coding.
    pub http10: bool,
    /// The connection stays open after this response, as far as the request goes.
    pub keep_alive: bool,
}

/// The `date` header value, formatted once per second.
#[derive(Debug, Default)]
pub struct DateCache {
    second: u64,
    text: String,
}

impl DateCache {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        self.text.as_bytes()
    }
}

/// Writes the status line and headers of `parts` into `out`, then the upstream's `fields`
/// as they arrived, with the framing and connection headers this connection needs, and
/// `date` when absent. Returns the body's framing and whether the connection stays open
/// after the response.
pub fn encode_head(
    out: &mut Vec<u8>,
    parts: &Parts,
    fields: Option<&RawHead>,
    body_size: Option<u64>,
    request: ResponseFor,
    date: &mut DateCache,
) -> (Framing, bool) {
    let status = parts.status;
    let mut keep_alive = request.keep_alive;
    push_status_line(out, status);
    let mut declared: Option<u64> = None;
    let mut has_date = false;
    let gateway = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()));
    for (name, value) in gateway.chain(fields.into_iter().flat_map(RawHead::iter)) {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        match name.len() {
            4 if is("date") => has_date = true,
            // The framing and connection headers are this hop's, written below.
            10 if is("connection") => continue,
            17 if is("transfer-encoding") => continue,
            14 if is("content-length") => {
                if status == StatusCode::NO_CONTENT {
                    continue;
                }
                declared = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            _ => {}
        }
        push_field(out, name, value);
    }
    let bodiless = request.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::Empty
    } else if let Some(n) = declared {
        Framing::Length(n)
    } else if let Some(n) = body_size {
        let _ = write!(out, "content-length: {n}\r\n");
        Framing::Length(n)
    } else if !request.http10 {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if request.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date.now());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, keep_alive)
}

/// Writes `name: value\r\n` into `out`.
fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes `HTTP/1.1 <code> <reason>\r\n` into `out`.
pub fn push_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Sends the head already in `out` and then `body` with `framing`; `out` is empty after.
/// `Ok(true)`: the response ended as framed and the connection may carry another one.
pub async fn send<S: AsyncWrite + Unpin>(
    io: &mut S,
    out: &mut Vec<u8>,
    mut body: ProxyBody,
    framing: Framing,
) -> io::Result<bool> {
    if framing == Framing::Empty {
        drop(body);
        return write_out(io, out).await.map(|()| true);
    }
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    let complete = loop {
        // A frame that is ready joins the buffer; before waiting for one, what is buffered
        // goes out, so a slow body never holds back the head.
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                write_out(io, out).await?;
                body.frame().await
            }
        };
        let data = match frame {
            None => break true,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed: connection closed");
                break false;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_trailers) => continue,
            },
        };
        if data.is_empty() {
            continue;
        }
        let mut piece = &data[..];
        if let Framing::Length(_) = framing {
            let room = usize::try_from(left).unwrap_or(usize::MAX);
            piece = &piece[..piece.len().min(room)];
            left -= piece.len() as u64;
        }
        if framing == Framing::Chunked {
            let _ = write!(out, "{:x}\r\n", piece.len());
        }
        if piece.len() >= DIRECT_WRITE_BYTES {
            write_out(io, out).await?;
            io.write_all(piece).await?;
        } else {
            out.extend_from_slice(piece);
        }
        if framing == Framing::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        if piece.len() < data.len() {
            tracing::debug!("response body longer than its content-length: connection closed");
            break false;
        }
        if out.len() >= WRITE_AT_BYTES {
            write_out(io, out).await?;
        }
    };
    let complete = complete
        && match framing {
            Framing::Length(_) => left == 0,
            Framing::Chunked => {
                out.extend_from_slice(b"0\r\n\r\n");
                true
            }
            Framing::UntilClose | Framing::Empty => false,
        };
    write_out(io, out).await?;
    Ok(complete)
}

async fn write_out<S: AsyncWrite + Unpin>(io: &mut S, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        io.write_all(out).await?;
        out.clear();
    }
    io.flush().await
}

#[cfg(test)]
mod tests;
