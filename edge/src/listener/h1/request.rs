//! Request heads for the HTTP/1.1 fast path (RFC 9112): parsed with `httparse` from the
//! connection's read buffer into an `http::Request` without headers and the header fields
//! as received ([`RawHead`]), sharing that buffer.
//! Requests the fast path does not serve itself (bodies still to come, chunked or invalid
//! framing, `expect`, upgrades) are left to hyper untouched.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, StatusCode, Uri, Version};

use crate::headers::ConnectionOptions;
use crate::raw_head::{Field, RawHead, RawHeadBuilder};

/// Most header lines in a request head (hyper's default too).
pub const MAX_REQUEST_HEADERS: usize = 100;

/// What to do with the bytes at the start of the read buffer.
// Moved once, from `parse` to the connection loop: a box would be an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    /// No complete head yet.
    Partial,
    /// A request the fast path serves; its head and body were taken from the buffer.
    Request(FastRequest),
    /// A request for hyper (see the module doc); the buffer is untouched.
    HandOff(&'static str),
    /// A head refused with this status; `reason` goes to the refusal metric.
    Refuse(StatusCode, &'static str),
}

/// A request whose head and body were complete in the buffer.
#[derive(Debug)]
pub struct FastRequest {
    /// The request, its body complete; its header map is empty.
    pub request: Request<Bytes>,
    /// Its header fields as received, without `connection: keep-alive|close` and
    /// `keep-alive`; `None` when a `connection` field names other fields: they are then in
    /// the request's map, for the hop-by-hop rules that remove the fields it names.
    pub fields: Option<RawHead>,
    /// Whether the client keeps the connection open after the response.
    pub keep_alive: bool,
}

/// Parses the request at the start of `buf`; a served request (head and body) is removed
/// from it. Heads of `max_head_bytes` or more without an end are refused with 431.
pub fn parse(buf: &mut BytesMut, max_head_bytes: usize) -> Parsed {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match httparse::ParserConfig::default()
        .allow_multiple_spaces_in_request_line_delimiters(false)
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) if n > max_head_bytes => {
            return Parsed::Refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "head_too_large",
            )
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_head_bytes => {
            return Parsed::Refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "head_too_large",
            )
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too_many_headers",
            )
        }
        Err(_) => return Parsed::Refuse(StatusCode::BAD_REQUEST, "malformed_head"),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Parsed::Refuse(StatusCode::BAD_REQUEST, "malformed_head");
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Refuse(StatusCode::BAD_REQUEST, "malformed_head");
    };
    if method == Method::CONNECT {
        return Parsed::HandOff("connect");
    }
    let base = buf.as_ptr() as usize;
    // Offsets fit in u32: a head is refused long before 4 GiB.
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        [start as u32, (start + s.len()) as u32]
    };
    let [start, end] = at(target.as_bytes());
    let target = start as usize..end as usize;
    let mut body_len: Option<usize> = None;
    let mut connection = ConnectionOptions::default();
    let mut lists_fields = false;
    // Where the kept fields' names and values are in the head.
    let mut kept = RawHeadBuilder::new();
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = parse_length(h.value) else {
                return Parsed::HandOff("content_length");
            };
            if body_len.is_some_and(|seen| seen != n) {
                return Parsed::HandOff("content_length");
            }
            body_len = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Parsed::HandOff("transfer_encoding");
        } else if name.eq_ignore_ascii_case(b"expect") {
            return Parsed::HandOff("expect");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            return Parsed::HandOff("upgrade");
        } else if name.eq_ignore_ascii_case(b"connection") {
            // `keep-alive` / `close` concern this connection only: read here, not kept.
            if connection.read(h.value) {
                continue;
            }
            lists_fields = true;
        } else if name.eq_ignore_ascii_case(b"keep-alive") {
            continue;
        }
        kept.push(Field::new(at(name), at(h.value)));
    }
    let body_len = body_len.unwrap_or(0);
    if buf.len() - head_len < body_len {
        return Parsed::HandOff("body_to_come");
    }
    let http10 = minor == 0;
    let keep_alive = connection.keeps_alive(http10);
    let head = buf.split_to(head_len).freeze();
    let body = buf.split_to(body_len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(target)) else {
        return Parsed::Refuse(StatusCode::BAD_REQUEST, "bad_target");
    };
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = if http10 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let fields = kept.finish(head);
    let fields = if lists_fields {
        fields.append_to(request.headers_mut());
        None
    } else {
        Some(fields)
    };
    Parsed::Request(FastRequest {
        request,
        fields,
        keep_alive,
    })
}

/// A `content-length` value: digits only, no sign or spaces (RFC 9110 section 8.6).
fn parse_length(v: &[u8]) -> Option<usize> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, d| n * 10 + usize::from(d - b'0')))
}

#[cfg(test)]
mod tests;
