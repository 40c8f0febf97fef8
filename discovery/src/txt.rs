//! DNS-SD TXT record parsing (RFC 6763 section 6).
//!
//! Each character-string is one `key=value` pair or a bare `key` (present, empty value).
//! Keys are compared case-insensitively and stored lowercased; the first occurrence of a
//! key wins. Malformed or oversized strings are skipped with a warning: TXT data comes
//! from the network and never causes a panic or an error for the whole record.

use std::collections::BTreeMap;

use crate::metrics as m;

/// Key that places an instance in a zone (`zone=<zone>`).
pub const ZONE_KEY: &str = "zone";
/// Longest accepted key, in bytes. RFC 6763 recommends at most 9; longer keys are accepted
/// up to this hard limit.
pub const MAX_KEY_LEN: usize = 63;
/// Longest character-string the DNS wire format can carry.
pub const MAX_STRING_LEN: usize = 255;
/// Largest TXT record accepted in total (RFC 6763 section 6.2's upper bound).
pub const MAX_RECORD_LEN: usize = 8900;
/// Most attributes kept from one record.
pub const MAX_ATTRIBUTES: usize = 64;

/// The meaning of one DNS-SD TXT record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Txt {
    /// Value of `zone=`, if present and non-empty.
    pub zone: Option<String>,
    /// Every other key (lowercased) with its value; a bare key maps to `""`.
    pub attributes: BTreeMap<String, String>,
}

/// Why one TXT character-string was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The string begins with `=` (no key); RFC 6763 says to ignore it silently.
    MissingKey,
    /// The key is longer than [`MAX_KEY_LEN`].
    KeyTooLong,
    /// The key has a byte outside printable US-ASCII.
    KeyNotPrintable,
    /// The value is not UTF-8.
    ValueNotUtf8,
    /// The string is longer than [`MAX_STRING_LEN`].
    StringTooLong,
    /// The record is past [`MAX_RECORD_LEN`] bytes or [`MAX_ATTRIBUTES`] keys.
    RecordTooLarge,
}

impl Skip {
    /// Bounded label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::MissingKey => "missing_key",
            Skip::KeyTooLong => "key_too_long",
            Skip::KeyNotPrintable => "key_not_printable",
            Skip::ValueNotUtf8 => "value_not_utf8",
            Skip::StringTooLong => "string_too_long",
            Skip::RecordTooLarge => "record_too_large",
        }
    }
}

/// One parsed character-string: `(lowercased key, value)`.
pub fn parse_pair(string: &[u8]) -> Result<Option<(String, String)>, Skip> {
    if string.is_empty() {
        // A lone empty string means "no attributes" (RFC 6763 section 6.1).
        return Ok(None);
    }
    if string.len() > MAX_STRING_LEN {
        return Err(Skip::StringTooLong);
    }
    let (key, value) = match string.iter().position(|&b| b == b'=') {
        Some(0) => return Err(Skip::MissingKey),
        Some(i) => (&string[..i], &string[i + 1..]),
        None => (string, &[][..]),
    };
    if key.len() > MAX_KEY_LEN {
        return Err(Skip::KeyTooLong);
    }
    if !key.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(Skip::KeyNotPrintable);
    }
    let key = String::from_utf8_lossy(key).to_ascii_lowercase();
    let value = std::str::from_utf8(value).map_err(|_| Skip::ValueNotUtf8)?;
    Ok(Some((key, value.to_owned())))
}

/// Parses the character-strings of one TXT record. `owner` names the record in warnings.
pub fn parse<'a, I>(owner: &str, strings: I) -> Txt
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut txt = Txt::default();
    let mut total = 0usize;
    let mut seen = 0usize;
    let mut zone_seen = false;
    for string in strings {
        total = total.saturating_add(string.len() + 1);
        let parsed = if total > MAX_RECORD_LEN || seen >= MAX_ATTRIBUTES {
            Err(Skip::RecordTooLarge)
        } else {
            parse_pair(string)
        };
        let (key, value) = match parsed {
            Ok(Some(pair)) => pair,
            Ok(None) => continue,
            Err(Skip::MissingKey) => {
                tracing::debug!(%owner, "txt string without key ignored");
                continue;
            }
            Err(why) => {
                tracing::warn!(%owner, reason = why.as_str(), "skipping malformed txt string");
                ::metrics::counter!(m::TXT_SKIPPED_TOTAL, "reason" => why.as_str()).increment(1);
                continue;
            }
        };
        seen += 1;
        if key == ZONE_KEY {
            if !std::mem::replace(&mut zone_seen, true) {
                if value.is_empty() {
                    tracing::warn!(%owner, "txt zone= without a value ignored");
                } else {
                    txt.zone = Some(value);
                }
            }
            continue;
        }
        txt.attributes.entry(key).or_insert(value);
    }
    txt
}

/// Encodes attributes (and a zone) as TXT character-strings, for registration.
pub fn encode(txt: &Txt) -> Vec<String> {
    let mut out = Vec::with_capacity(txt.attributes.len() + 1);
    if let Some(zone) = &txt.zone {
        out.push(format!("{ZONE_KEY}={zone}"));
    }
    for (key, value) in &txt.attributes {
        if value.is_empty() {
            out.push(key.clone());
        } else {
            out.push(format!("{key}={value}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
