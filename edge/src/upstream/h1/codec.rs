//! HTTP/1.1 framing for the in-task upstream client (RFC 9112): the request written in one
//! buffer, the response head parsed with `httparse`, and the response body decoded from the
//! connection's read buffer (content-length, chunked, or until the connection closes).
//! Pure functions over byte buffers: no sockets, so the tests drive them directly.

use std::io::Write as _;
use std::mem::MaybeUninit;
use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use http::header::HOST;
use http::{HeaderMap, Method, StatusCode};

use crate::headers::ConnectionOptions;
use crate::raw_head::{Field, RawHead, RawHeadBuilder};

/// Most header lines accepted in a response head.
const MAX_RESPONSE_HEADERS: usize = 128;
/// Largest response head accepted (hyper's client default buffer limit is larger, but a
/// head beyond this is a broken or hostile upstream).
pub(super) const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE_BYTES: usize = 4096;
/// Body pieces up to this size are copied out of the read buffer, which then stays unshared
/// and is reused for the next response instead of being reallocated.
const COPY_OUT_MAX: usize = 4096;

/// A response the upstream sent that this client cannot accept.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// The response head did not parse.
    #[error("malformed response head: {0}")]
    Head(String),
    /// The response head is larger than [`MAX_RESPONSE_HEAD_BYTES`].
    #[error("response head larger than {MAX_RESPONSE_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// The body framing (content-length or chunked encoding) is broken.
    #[error("malformed response body: {0}")]
    Body(&'static str),
    /// The connection closed before the response ended.
    #[error("connection closed before the response {0} ended")]
    Closed(&'static str),
}

/// Writes the request head (origin-form target, `host` from `authority` when absent) and
/// its body into `out`, framed with `content-length` (the body is complete).
pub(super) fn encode_request(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    fields: Option<&RawHead>,
    authority: SocketAddr,
    body: &[u8],
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(if target.is_empty() { "/" } else { target }.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // The fields' host may be one the gateway added (from an absolute-form target).
    if !headers.contains_key(HOST) && fields.is_none_or(|f| f.values(b"host").next().is_none()) {
        let _ = write!(out, "host: {authority}\r\n");
    }
    let map = headers
        .iter()
        .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()));
    for (name, value) in map.chain(fields.into_iter().flat_map(RawHead::iter)) {
        // The framing is ours: the body is complete and sent with its length.
        if name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
        {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || method_implies_body(method) {
        let _ = write!(out, "content-length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

fn method_implies_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the upstream closes the connection (never reusable).
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub(super) struct ResponseHead {
    /// The final status.
    pub status: StatusCode,
    /// The header fields, without `connection: keep-alive|close` and `keep-alive`.
    pub fields: RawHead,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Parses one response head from the start of `buf` and removes it (and any interim `1xx`
/// responses before it). `Ok(None)`: more bytes are needed.
pub(super) fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, H1Error> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        // Uninitialised slots: initialising 128 of them cost more than parsing a short head.
        let mut slots =
            [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(len)) if len > MAX_RESPONSE_HEAD_BYTES => {
                return Err(H1Error::HeadTooLarge)
            }
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD_BYTES => {
                return Err(H1Error::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(H1Error::Head(e.to_string())),
        };
        let code = parsed.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| H1Error::Head(format!("status {code}")))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(H1Error::Head(
                    "101 Switching Protocols is not proxied".into(),
                ));
            }
            // 100 Continue, 103 Early Hints: the final response follows.
            buf.advance(len);
            continue;
        }
        let http10 = parsed.version == Some(0);
        let mut connection = ConnectionOptions::default();
        let mut lengths = Lengths::default();
        // Where the kept fields' names and values are: they stay in the head, which is
        // split off the buffer without a copy.
        let base = buf.as_ptr() as usize;
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            [start as u32, (start + s.len()) as u32]
        };
        let mut kept = RawHeadBuilder::new();
        for h in parsed.headers.iter() {
            // `connection: keep-alive|close` and `keep-alive` concern this connection only:
            // read here and left out (the proxy would strip them); a `connection` header
            // naming other headers stays for the proxy's hop-by-hop rules.
            if h.name.eq_ignore_ascii_case("connection") && connection.read(h.value) {
                continue;
            }
            if h.name.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
            lengths.note(h.name, h.value);
            kept.push(Field::new(at(h.name.as_bytes()), at(h.value)));
        }
        let framing = framing(method, status, lengths)?;
        let head = buf.split_to(len).freeze();
        let keep_alive = framing != Framing::UntilClose && connection.keeps_alive(http10);
        return Ok(Some(ResponseHead {
            status,
            fields: kept.finish(head),
            framing,
            keep_alive,
        }));
    }
}

/// The `transfer-encoding` and `content-length` headers of a response, noted while its
/// headers are read (no lookups in the map afterwards).
#[derive(Default)]
struct Lengths<'a> {
    /// The last `transfer-encoding` value.
    transfer_encoding: Option<&'a [u8]>,
    /// The `content-length` values: `Err` when one is invalid or they disagree.
    content_length: Option<Result<u64, &'static str>>,
}

impl<'a> Lengths<'a> {
    fn note(&mut self, name: &str, value: &'a [u8]) {
        if name.eq_ignore_ascii_case("transfer-encoding") {
            self.transfer_encoding = Some(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or("invalid content-length");
            self.content_length = match (self.content_length, n) {
                (None, n) => Some(n),
                (Some(Ok(seen)), Ok(n)) if seen != n => {
                    Some(Err("conflicting content-length values"))
                }
                (Some(Err(e)), _) | (_, Err(e)) => Some(Err(e)),
                (Some(Ok(seen)), Ok(_)) => Some(Ok(seen)),
            };
        }
    }
}

/// RFC 9112 section 6.3: how long the body of this response is.
fn framing(method: &Method, status: StatusCode, lengths: Lengths<'_>) -> Result<Framing, H1Error> {
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Length(0));
    }
    if let Some(last) = lengths.transfer_encoding {
        let chunked_last = last
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        return Ok(if chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    match lengths.content_length {
        None => Ok(Framing::UntilClose),
        Some(Ok(n)) => Ok(Framing::Length(n)),
        Some(Err(e)) => Err(H1Error::Body(e)),
    }
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// Decodes one response body out of a read buffer.
#[derive(Debug)]
pub(super) struct BodyDecoder {
    state: DecoderState,
}

#[derive(Debug)]
enum DecoderState {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// What the decoder made of the bytes it had.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded {
    /// A piece of the body.
    Data(Bytes),
    /// More bytes are needed from the connection.
    NeedMore,
    /// The body is complete.
    End,
}

impl BodyDecoder {
    /// A decoder for a body delimited by `framing`.
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Length(0) => DecoderState::Done,
            Framing::Length(n) => DecoderState::Length(n),
            Framing::Chunked => DecoderState::Chunked(Chunk::Size),
            Framing::UntilClose => DecoderState::UntilClose,
        };
        Self { state }
    }

    /// True when the body has ended.
    pub fn is_done(&self) -> bool {
        matches!(self.state, DecoderState::Done)
    }

    /// Body bytes still expected, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            DecoderState::Length(n) => Some(n),
            DecoderState::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next piece of the body from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
        loop {
            match &mut self.state {
                DecoderState::Done => return Ok(Decoded::End),
                DecoderState::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(take(buf, buf.len())));
                }
                DecoderState::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = DecoderState::Done;
                    }
                    return Ok(Decoded::Data(take(buf, n)));
                }
                DecoderState::Chunked(chunk) => match *chunk {
                    Chunk::Size => {
                        let Some(line) = line(buf)? else {
                            return Ok(Decoded::NeedMore);
                        };
                        let size = chunk_size(&line)?;
                        *chunk = if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        };
                    }
                    Chunk::Data(left) => {
                        if buf.is_empty() {
                            return Ok(Decoded::NeedMore);
                        }
                        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                        *chunk = if left == n as u64 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left - n as u64)
                        };
                        return Ok(Decoded::Data(take(buf, n)));
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            return Ok(Decoded::NeedMore);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err(H1Error::Body("chunk data not followed by CRLF"));
                        }
                        buf.advance(2);
                        *chunk = Chunk::Size;
                    }
                    Chunk::Trailers => {
                        // Trailer fields are not forwarded; an empty line ends the body.
                        let Some(line) = line(buf)? else {
                            return Ok(Decoded::NeedMore);
                        };
                        if line.is_empty() {
                            self.state = DecoderState::Done;
                        }
                    }
                },
            }
        }
    }

    /// The connection closed: the end of an until-close body, an error for any other.
    pub fn closed(&mut self) -> Result<(), H1Error> {
        match self.state {
            DecoderState::UntilClose | DecoderState::Done => {
                self.state = DecoderState::Done;
                Ok(())
            }
            DecoderState::Length(_) => Err(H1Error::Closed("body (content-length)")),
            DecoderState::Chunked(_) => Err(H1Error::Closed("body (chunked)")),
        }
    }
}

/// The first `n` bytes of `buf`: copied when small, so the buffer stays unshared.
fn take(buf: &mut BytesMut, n: usize) -> Bytes {
    if n <= COPY_OUT_MAX {
        let out = Bytes::copy_from_slice(&buf[..n]);
        buf.advance(n);
        out
    } else {
        buf.split_to(n).freeze()
    }
}

/// One CRLF-terminated line from the start of `buf` (without the CRLF), if complete.
fn line(buf: &mut BytesMut) -> Result<Option<BytesMut>, H1Error> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            let line = buf.split_to(end);
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE_BYTES => Err(H1Error::Body("chunk line too long")),
        None => Ok(None),
    }
}

/// The size on a chunk-size line (`1a;ext=v`), at most 16 hex digits.
fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let digits = line.split(|b| *b == b';').next().unwrap_or_default();
    let digits = digits.trim_ascii();
    if digits.is_empty() || digits.len() > 16 {
        return Err(H1Error::Body("invalid chunk size"));
    }
    let text = std::str::from_utf8(digits).map_err(|_| H1Error::Body("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| H1Error::Body("invalid chunk size"))
}

#[cfg(test)]
mod tests;
