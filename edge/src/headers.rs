//! Request and response header rules, pure: `x-request-id`, `x-forwarded-for`/`-proto`,
//! W3C `traceparent`, hop-by-hop removal. Randomness comes in as an argument.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng;
use smallvec::SmallVec;

use crate::raw_head::RawHead;

/// A request's header fields, wherever they are: in a map (HTTP/2, HTTP/3, hyper's
/// HTTP/1.1), or as received (the HTTP/1.1 fast path). Routing and rate limits read them
/// through this.
#[derive(Debug, Clone, Copy)]
pub enum RequestFields<'a> {
    /// In a map.
    Map(&'a HeaderMap),
    /// As received, with the gateway's additions.
    Raw(&'a RawHead),
}

impl<'a> RequestFields<'a> {
    /// The fields of a request: `raw` when it has them, else `map`.
    pub fn of(raw: Option<&'a RawHead>, map: &'a HeaderMap) -> Self {
        raw.map_or(Self::Map(map), Self::Raw)
    }

    /// True when a field called `name` has a value for which `pred` holds.
    pub fn any_value(&self, name: &HeaderName, mut pred: impl FnMut(&[u8]) -> bool) -> bool {
        match self {
            Self::Map(map) => map.get_all(name).iter().any(|v| pred(v.as_bytes())),
            Self::Raw(raw) => raw.values(name.as_str().as_bytes()).any(pred),
        }
    }

    /// The first value of the field called `name` (any case).
    pub fn first(&self, name: &str) -> Option<&'a [u8]> {
        match self {
            Self::Map(map) => map.get(name).map(HeaderValue::as_bytes),
            Self::Raw(raw) => raw.values(name.as_bytes()).next(),
        }
    }
}

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
pub fn is_valid_request_id(v: &[u8]) -> bool {
    (1..=128).contains(&v.len()) && v.iter().all(|c| (0x21..=0x7e).contains(c))
}

/// The trace id and flags of a valid version-00 `traceparent`.
pub fn parse_traceparent(v: &[u8]) -> Option<(&str, &str)> {
    let s = std::str::from_utf8(v).ok()?;
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
fn push_random_hex(out: &mut Text, rng: &mut impl Rng, bytes: usize) {
    let mut left = bytes;
    while left > 0 {
        let take = left.min(8);
        let hex = hex_word(rng.random::<u64>());
        out.extend_from_slice(&hex[..2 * take]);
        left -= take;
    }
}

/// 16 random bytes as 32 lowercase hex digits: a request or trace id.
fn random_id(rng: &mut impl Rng) -> [u8; 32] {
    let mut id = [0; 32];
    id[..16].copy_from_slice(&hex_word(rng.random::<u64>()));
    id[16..].copy_from_slice(&hex_word(rng.random::<u64>()));
    id
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

/// A header value being written: on the stack up to 64 bytes.
type Text = crate::raw_head::FieldText;

/// Appends `ip` as text (IPv4 without the formatting machinery: it runs for every request).
fn push_ip(out: &mut Text, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
}

/// A header value that takes `text` (hex, an address) over without copying it.
fn owned_value(text: impl Into<Bytes>) -> HeaderValue {
    HeaderValue::from_maybe_shared(text.into()).expect("hex or an address is a valid value")
}

/// A header value copied from text the gateway made (hex, addresses, visible ASCII).
fn text_value(text: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(text).expect("hex or addresses are a valid value")
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

/// The fields the gateway sets on every request it forwards (the request id is also the
/// response's and the access log's; the others only travel with the request).
struct Forwarding {
    request_id: HeaderValue,
    forwarded_for: Text,
    traceparent: Text,
}

impl Forwarding {
    /// From the request's own values: an `x-request-id` kept (if valid) or made, the client
    /// IP appended to the `x-forwarded-for` list (every field line of it, in order), a
    /// `traceparent` continued (same trace, new parent) or started.
    fn new<'a>(
        request_id: Option<HeaderValue>,
        forwarded_for: impl Iterator<Item = &'a [u8]>,
        traceparent: Option<&[u8]>,
        client: IpAddr,
        rng: &mut impl Rng,
    ) -> Self {
        // A trace started here takes a request id made here as its trace id: both are 128
        // random bits, and the access log's request id then finds the trace.
        let mut made_id = None;
        let request_id = match request_id.filter(|v| is_valid_request_id(v.as_bytes())) {
            Some(v) => v,
            None => {
                let id = random_id(rng);
                made_id = Some(id);
                owned_value(Bytes::copy_from_slice(&id))
            }
        };
        let mut xff = Text::new();
        // Previous values that are text (visible ASCII) keep the result a valid value.
        for prev in forwarded_for.map(<[u8]>::trim_ascii) {
            if !prev.is_empty() && prev.iter().all(|b| (0x20..0x7f).contains(b)) {
                xff.extend_from_slice(prev);
                xff.extend_from_slice(b", ");
            }
        }
        push_ip(&mut xff, client);
        let mut tp = Text::new();
        tp.extend_from_slice(b"00-");
        let flags = match traceparent.and_then(parse_traceparent) {
            Some((trace, flags)) => {
                tp.extend_from_slice(trace.as_bytes());
                flags
            }
            None => {
                tp.extend_from_slice(&made_id.unwrap_or_else(|| random_id(rng)));
                "00"
            }
        };
        tp.push(b'-');
        push_random_hex(&mut tp, rng, 8);
        tp.push(b'-');
        tp.extend_from_slice(flags.as_bytes());
        Self {
            request_id,
            forwarded_for: xff,
            traceparent: tp,
        }
    }
}

/// Prepares a request's headers for an upstream and returns its request id:
/// hop-by-hop headers removed, `x-request-id` kept (if valid) or set, client IP appended to
/// `x-forwarded-for`, `x-forwarded-proto: https`, `traceparent` continued or started.
pub fn prepare_request(headers: &mut HeaderMap, client: IpAddr, rng: &mut impl Rng) -> HeaderValue {
    strip_hop_by_hop(headers);
    let set = Forwarding::new(
        headers.get(X_REQUEST_ID).cloned(),
        headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .map(HeaderValue::as_bytes),
        headers.get(TRACEPARENT).map(HeaderValue::as_bytes),
        client,
        rng,
    );
    headers.insert(X_REQUEST_ID, set.request_id.clone());
    headers.insert(X_FORWARDED_FOR, text_value(&set.forwarded_for));
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    headers.insert(TRACEPARENT, text_value(&set.traceparent));
    set.request_id
}

/// The fields [`prepare_request`] sets, replacing what the request had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetField {
    RequestId,
    ForwardedFor,
    ForwardedProto,
    Traceparent,
}

/// Which of the fields [`prepare_request`] sets `name` (any case) is.
fn set_on_requests(name: &[u8]) -> Option<SetField> {
    let (field, known): (_, &[u8]) = match name.len() {
        11 => (SetField::Traceparent, b"traceparent"),
        12 => (SetField::RequestId, b"x-request-id"),
        15 => (SetField::ForwardedFor, b"x-forwarded-for"),
        17 => (SetField::ForwardedProto, b"x-forwarded-proto"),
        _ => return None,
    };
    name.eq_ignore_ascii_case(known).then_some(field)
}

/// [`prepare_request`] for a request's fields as received (the HTTP/1.1 fast path): the
/// same result without a map. The fields the gateway sets are added ahead of the others; a
/// `connection` field naming other fields must have gone through the map instead (its
/// names are not known here).
pub fn prepare_request_fields(
    fields: &mut RawHead,
    client: IpAddr,
    rng: &mut impl Rng,
) -> HeaderValue {
    // One pass for the previous values of the fields the gateway sets.
    let (mut request_id, mut traceparent) = (None, None);
    let mut forwarded_for = SmallVec::<[&[u8]; 2]>::new();
    for (name, value) in fields.iter() {
        match set_on_requests(name) {
            Some(SetField::RequestId) if request_id.is_none() => request_id = Some(value),
            Some(SetField::ForwardedFor) => forwarded_for.push(value),
            Some(SetField::Traceparent) if traceparent.is_none() => traceparent = Some(value),
            _ => {}
        }
    }
    let set = Forwarding::new(
        request_id.and_then(|v| HeaderValue::from_bytes(v).ok()),
        forwarded_for.into_iter(),
        traceparent,
        client,
        rng,
    );
    fields.retain(|name, value| {
        !(is_hop_by_hop_field(name, value) || set_on_requests(name).is_some())
    });
    fields.add(X_REQUEST_ID, set.request_id.clone());
    fields.add_text(X_FORWARDED_FOR, set.forwarded_for);
    fields.add(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    fields.add_text(TRACEPARENT, set.traceparent);
    set.request_id
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
