//! Request and response header rules, pure: `x-request-id`, `x-forwarded-for`/`-proto`,
//! W3C `traceparent`, hop-by-hop removal. Randomness comes in as an argument.

use std::net::IpAddr;

use http::header::{Entry, CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

/// `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-for`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `traceparent` (W3C Trace Context).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Headers that concern one connection only and are never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TRAILER,
    HeaderName::from_static("http2-settings"),
];

/// A header that is hop-by-hop whatever its value (`te` too: kept only when `trailers`).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == CONNECTION
        || *name == TRANSFER_ENCODING
        || *name == UPGRADE
        || *name == TE
        || HOP_BY_HOP.contains(name)
}

/// [`strip_hop_by_hop`]'s rule for one field as bytes (an upstream's raw response fields):
/// true for the fixed hop-by-hop names, and for `te` unless its value is `trailers`. The
/// names a `connection` field lists are not known here: a head with one goes through the map.
pub fn is_hop_by_hop_field(name: &[u8], value: &[u8]) -> bool {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    match name.len() {
        2 => is("te") && !value.eq_ignore_ascii_case(b"trailers"),
        7 => is("upgrade") || is("trailer"),
        10 => is("connection") || is("keep-alive"),
        14 => is("http2-settings"),
        16 => is("proxy-connection"),
        17 => is("transfer-encoding"),
        18 => is("proxy-authenticate"),
        19 => is("proxy-authorization"),
        _ => false,
    }
}

/// True for an `x-request-id` worth keeping: 1-128 visible ASCII characters.
pub fn is_valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=128).contains(&b.len()) && b.iter().all(|c| (0x21..=0x7e).contains(c))
}

/// The trace id and flags of a valid version-00 `traceparent`.
pub fn parse_traceparent(v: &HeaderValue) -> Option<(&str, &str)> {
    let s = v.to_str().ok()?;
    let mut parts = s.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && hex(flags, 2);
    ok.then_some((trace, flags))
}

/// Appends `bytes` random bytes as lowercase hex, drawing 8 bytes from `rng` at a time.
fn push_random_hex(out: &mut Vec<u8>, rng: &mut impl Rng, bytes: usize) {
    let mut left = bytes;
    while left > 0 {
        let take = left.min(8);
        let hex = hex_word(rng.random::<u64>());
        out.extend_from_slice(&hex[..2 * take]);
        left -= take;
    }
}

/// `word` as 16 lowercase hex digits, most significant first, computed on all digits at
/// once (a table lookup per digit cost about four times as many instructions).
fn hex_word(word: u64) -> [u8; 16] {
    const BYTES_01: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
    // Spread the 16 nibbles into the 16 bytes, nibble k (from the least significant) into
    // byte k, by halving the field width at each step.
    let mut v = u128::from(word);
    v = (v | (v << 32)) & 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
    v = (v | (v << 16)) & 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
    v = (v | (v << 8)) & 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    v = (v | (v << 4)) & (BYTES_01 * 0x0f);
    // Per byte: 1 where the nibble is 10 or more (adding 6 carries into bit 4).
    let letters = ((v + BYTES_01 * 0x06) >> 4) & BYTES_01;
    // '0' + n below ten, 'a' + (n - 10) from ten on ('a' - '0' - 10 = 0x27).
    (v + BYTES_01 * u128::from(b'0') + letters * 0x27).to_be_bytes()
}

/// Appends `ip` as text (IPv4 without the formatting machinery: it runs for every request).
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// A header value that takes `text` (hex, an address) over without copying it.
fn owned_value(text: impl Into<bytes::Bytes>) -> HeaderValue {
    HeaderValue::from_maybe_shared(text.into()).expect("hex or an address is a valid value")
}

/// Removes hop-by-hop headers: `connection` and the names it lists, `transfer-encoding`,
/// `upgrade`, `te` unless it is exactly `trailers`, and the fixed list above.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests carry none: one pass over the names (no hashing) says so.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(CONNECTION) {
        let mut listed = Vec::new();
        let tokens = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim);
        for token in tokens {
            // `close` names no header; `keep-alive` is on the fixed list below.
            if token.eq_ignore_ascii_case("close") || token.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                listed.push(name);
            }
        }
        for name in listed {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
        // `connection: keep-alive` (every HTTP/1.1 upstream's answer) was often the only one.
        if !headers.keys().any(is_hop_by_hop) {
            return;
        }
    }
    headers.remove(TRANSFER_ENCODING);
    headers.remove(UPGRADE);
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    let te_trailers = headers
        .get_all(TE)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers {
        headers.remove(TE);
    }
}

/// Prepares a request's headers for an upstream and returns its request id:
/// hop-by-hop headers removed, `x-request-id` kept (if valid) or set, client IP appended to
/// `x-forwarded-for`, `x-forwarded-proto: https`, `traceparent` continued or started.
pub fn prepare_request(headers: &mut HeaderMap, client: IpAddr, rng: &mut impl Rng) -> HeaderValue {
    strip_hop_by_hop(headers);
    let new_id = |rng: &mut _| {
        let mut id = Vec::with_capacity(32);
        push_random_hex(&mut id, rng, 16);
        owned_value(id)
    };
    // One lookup per header (`entry`); `insert` on an entry replaces every value.
    let request_id = match headers.entry(X_REQUEST_ID) {
        Entry::Occupied(mut e) => {
            let id = if is_valid_request_id(e.get()) {
                e.get().clone()
            } else {
                new_id(rng)
            };
            e.insert(id.clone());
            id
        }
        Entry::Vacant(e) => e.insert(new_id(rng)).clone(),
    };

    // A previous value that is text (visible ASCII) keeps the result a valid value.
    let mut xff = String::with_capacity(48);
    let mut forwarded = match headers.entry(X_FORWARDED_FOR) {
        Entry::Occupied(e) => e,
        Entry::Vacant(e) => e.insert_entry(HeaderValue::from_static("")),
    };
    if let Some(prev) = forwarded
        .get()
        .to_str()
        .ok()
        .filter(|p| !p.trim().is_empty())
    {
        xff.push_str(prev);
        xff.push_str(", ");
    }
    push_ip(&mut xff, client);
    forwarded.insert(owned_value(xff));
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));

    let mut tp = Vec::with_capacity(55);
    tp.extend_from_slice(b"00-");
    // An empty placeholder when absent (it parses as no parent), replaced below.
    let mut traceparent = match headers.entry(TRACEPARENT) {
        Entry::Occupied(e) => e,
        Entry::Vacant(e) => e.insert_entry(HeaderValue::from_static("")),
    };
    let flags = match parse_traceparent(traceparent.get()) {
        Some((trace, flags)) => {
            tp.extend_from_slice(trace.as_bytes());
            flags
        }
        None => {
            push_random_hex(&mut tp, rng, 16);
            "00"
        }
    };
    tp.push(b'-');
    push_random_hex(&mut tp, rng, 8);
    tp.push(b'-');
    tp.extend_from_slice(flags.as_bytes());
    traceparent.insert(owned_value(tp));
    request_id
}

/// The `keep-alive` and `close` options of a message's `connection` headers (RFC 9112
/// section 9.3): whether the connection it came on stays open.
#[derive(Debug, Default)]
pub(crate) struct ConnectionOptions {
    close: bool,
    keep_alive: bool,
}

impl ConnectionOptions {
    /// Notes the options of one `connection` value; false when it names anything else
    /// (other headers to drop), so the header must be kept for the hop-by-hop rules.
    pub(crate) fn read(&mut self, value: &[u8]) -> bool {
        let mut only_options = true;
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if !token.is_empty() {
                only_options = false;
            }
        }
        only_options
    }

    /// Whether the connection stays open after this message (HTTP/1.0: only when asked).
    pub(crate) fn keeps_alive(&self, http10: bool) -> bool {
        if http10 {
            self.keep_alive && !self.close
        } else {
            !self.close
        }
    }
}

#[cfg(test)]
mod tests;
