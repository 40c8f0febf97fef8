//! The header fields of an HTTP/1.1 message as they arrived: the head's bytes and where each
//! field's name and value are in them, plus the few the gateway adds. Both directions of the
//! HTTP/1.1 fast path use it: a client's request fields go to an HTTP/1.1 upstream, and an
//! upstream's response fields to an HTTP/1.1 client, without an `http::HeaderMap` in between
//! (hashing every name and counting a reference per value cost about 1,500 instructions per
//! message each way). HTTP/2 and HTTP/3, which need a map, get one from
//! [`RawHead::append_to`].

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

mod names;

/// Fields kept inline before the list spills to the heap: most responses carry fewer.
const INLINE_FIELDS: usize = 16;
/// The gateway adds four fields to a request (`x-request-id`, `x-forwarded-for`,
/// `x-forwarded-proto`, `traceparent`), one or two to a response.
const INLINE_ADDED: usize = 4;

/// Where one field's name and value are in the head: start and end offsets of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    name: [u32; 2],
    value: [u32; 2],
}

impl Field {
    /// The field whose name spans `name` and whose value spans `value` (byte offsets).
    pub(crate) fn new(name: [u32; 2], value: [u32; 2]) -> Self {
        Self { name, value }
    }
}

/// A message's header fields, in the order and spelling the sender used, after the fields the
/// gateway adds ([`RawHead::add`]). Only the HTTP/1.1 parsers make one (the listener's for
/// requests, the upstream codec's for responses), from a head `httparse` accepted: every
/// name is a token and every value a valid field value. Boxed: the message it travels with
/// is moved through several futures, and inline it would make each of them larger.
#[derive(Debug)]
pub struct RawHead(Box<Fields>);

#[derive(Debug)]
struct Fields {
    head: Bytes,
    fields: SmallVec<[Field; INLINE_FIELDS]>,
    added: SmallVec<[(HeaderName, Added); INLINE_ADDED]>,
}

/// Field value text the gateway makes for one message, kept inline (no allocation up to
/// its size: a `traceparent` is 55 bytes, an `x-forwarded-for` of one or two addresses
/// less).
pub type FieldText = SmallVec<[u8; 64]>;

/// The value of a field the gateway adds.
#[derive(Debug)]
enum Added {
    /// A value also used elsewhere (the request id goes on the response and in the log).
    Shared(HeaderValue),
    /// Text only this message carries, a valid field value by construction.
    Text(FieldText),
}

impl Added {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Shared(v) => v.as_bytes(),
            Self::Text(t) => t,
        }
    }
}

/// A [`RawHead`] being parsed: the field list is filled in its box, where it stays (built
/// on the stack and moved into the box, it cost two moves of its few hundred bytes per
/// message).
pub(crate) struct RawHeadBuilder(Box<Fields>);

impl RawHeadBuilder {
    /// No fields yet.
    pub(crate) fn new() -> Self {
        Self(Box::new(Fields {
            head: Bytes::new(),
            fields: SmallVec::new(),
            added: SmallVec::new(),
        }))
    }

    /// Notes the field at `field` in the head to come.
    pub(crate) fn push(&mut self, field: Field) {
        self.0.fields.push(field);
    }

    /// The fields, in `head`, whose offsets they are.
    pub(crate) fn finish(mut self, head: Bytes) -> RawHead {
        self.0.head = head;
        RawHead(self.0)
    }
}

impl RawHead {
    fn span(&self, [start, end]: [u32; 2]) -> &[u8] {
        &self.0.head[start as usize..end as usize]
    }

    /// Adds a field of the gateway's own, written before the received ones. The caller takes
    /// a field of the same name out of those ([`RawHead::retain`]) when it replaces it.
    pub fn add(&mut self, name: HeaderName, value: HeaderValue) {
        self.0.added.push((name, Added::Shared(value)));
    }

    /// Adds a field like [`RawHead::add`] from text the gateway made, which must be a valid
    /// field value (visible ASCII, spaces and tabs inside; a value that is not stays out of
    /// any map made from these fields, with a log line).
    pub fn add_text(&mut self, name: HeaderName, text: FieldText) {
        debug_assert!(HeaderValue::from_bytes(&text).is_ok(), "{text:?}");
        self.0.added.push((name, Added::Text(text)));
    }

    /// Each field's name and value, the gateway's first, then the received ones in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let added = self
            .0
            .added
            .iter()
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()));
        added.chain(self.received())
    }

    /// The received fields, in order.
    fn received(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.0
            .fields
            .iter()
            .map(|f| (self.span(f.name), self.span(f.value)))
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.0.added.len() + self.0.fields.len()
    }

    /// True without fields.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when one of the received fields is called `name` (any case).
    pub fn contains(&self, name: &[u8]) -> bool {
        self.received().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The values of the fields called `name` (any case), added ones first, in order.
    pub fn values<'a, 'n>(
        &'a self,
        name: &'n [u8],
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The value of the first received field called `name`, sharing the head's bytes.
    pub fn received_value(&self, name: &[u8]) -> Option<Bytes> {
        let f = self
            .0
            .fields
            .iter()
            .find(|f| self.span(f.name).eq_ignore_ascii_case(name))?;
        Some(self.0.head.slice(f.value[0] as usize..f.value[1] as usize))
    }

    /// Keeps the received fields for which `keep(name, value)` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &[u8]) -> bool) {
        let Fields { head, fields, .. } = &mut *self.0;
        let span = |[start, end]: [u32; 2]| &head[start as usize..end as usize];
        fields.retain(|f| keep(span(f.name), span(f.value)));
    }

    /// Appends every field to `headers`, names lowercased, values sharing the head's bytes.
    /// A field `httparse` would not have accepted is left out with a log line (none can be
    /// there: [`RawHead`]'s invariant).
    pub fn append_to(&self, headers: &mut HeaderMap) {
        headers.reserve(self.len());
        for (name, value) in &self.0.added {
            let value = match value {
                Added::Shared(v) => Ok(v.clone()),
                Added::Text(t) => HeaderValue::from_bytes(t),
            };
            match value {
                Ok(value) => {
                    headers.append(name.clone(), value);
                }
                Err(_) => {
                    tracing::warn!(field = %name, "added header field is not valid: left out")
                }
            }
        }
        for f in &self.0.fields {
            let name = names::header_name(self.span(f.name));
            let value = self.0.head.slice(f.value[0] as usize..f.value[1] as usize);
            match (name, HeaderValue::from_maybe_shared(value)) {
                (Ok(name), Ok(value)) => {
                    headers.append(name, value);
                }
                _ => tracing::warn!(
                    field = %String::from_utf8_lossy(self.span(f.name)),
                    "received header field is not valid: left out"
                ),
            }
        }
    }
}

#[cfg(test)]
impl RawHead {
    /// A head with the fields of `pairs`, laid out as on the wire (`name: value\r\n`).
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let mut text = String::from("HTTP/1.1 200 OK\r\n");
        let mut fields = RawHeadBuilder::new();
        for (name, value) in pairs {
            let at = |s: usize, len: usize| [s as u32, (s + len) as u32];
            let name_at = at(text.len(), name.len());
            text.push_str(name);
            text.push_str(": ");
            let value_at = at(text.len(), value.len());
            text.push_str(value);
            text.push_str("\r\n");
            fields.push(Field::new(name_at, value_at));
        }
        text.push_str("\r\n");
        fields.finish(Bytes::from(text))
    }
}

#[cfg(test)]
mod tests;
