//! SPIFFE identifiers: trust domains and SPIFFE IDs, validated per the SPIFFE-ID spec.

use std::fmt;
use std::str::FromStr;

/// Longest SPIFFE ID accepted, in bytes (SPIFFE-ID spec, section 2.4).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// Longest trust domain name accepted, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a trust domain or SPIFFE ID was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The input does not start with `spiffe://`.
    #[error("{input:?}: scheme must be spiffe://")]
    Scheme {
        /// The rejected input.
        input: String,
    },
    /// The trust domain is empty or has characters outside `[a-z0-9.-_]`.
    #[error(
        "{input:?}: trust domain must be non-empty lowercase [a-z0-9.-_] of at most 255 bytes"
    )]
    TrustDomain {
        /// The rejected input.
        input: String,
    },
    /// A path segment is empty, `.`/`..`, or has characters outside `[A-Za-z0-9.-_]`.
    #[error("{input:?}: path segments must be non-empty [A-Za-z0-9.-_], not '.' or '..'")]
    Path {
        /// The rejected input.
        input: String,
    },
    /// Longer than 2048 bytes.
    #[error("spiffe id of {len} bytes is longer than 2048")]
    TooLong {
        /// Its length.
        len: usize,
    },
}

/// A SPIFFE trust domain, e.g. `example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (no scheme).
    pub fn parse(name: &str) -> Result<Self, SpiffeIdError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_TRUST_DOMAIN_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(SpiffeIdError::TrustDomain {
                input: name.to_owned(),
            })
        }
    }

    /// The trust domain name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of a node agent in this trust domain: `spiffe://<td>/node/<name>`.
    pub fn node_id(&self, node: &str) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::parse(&format!("spiffe://{}/node/{}", self.0, node))
    }

    /// The ID of the trust domain itself, `spiffe://<td>`.
    pub fn id_string(&self) -> String {
        format!("spiffe://{}", self.0)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated SPIFFE ID such as `spiffe://example.org/svc/payments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: String,
    td_len: usize,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID (scheme, trust domain, path rules of the spec).
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        if input.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong { len: input.len() });
        }
        let rest = input
            .strip_prefix("spiffe://")
            .ok_or_else(|| SpiffeIdError::Scheme {
                input: input.to_owned(),
            })?;
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        TrustDomain::parse(td).map_err(|_| SpiffeIdError::TrustDomain {
            input: input.to_owned(),
        })?;
        if !path.is_empty() {
            let segments_ok = path[1..].split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            });
            if !segments_ok {
                return Err(SpiffeIdError::Path {
                    input: input.to_owned(),
                });
            }
        }
        Ok(Self {
            uri: input.to_owned(),
            td_len: td.len(),
        })
    }

    /// The trust domain part.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_str().to_owned())
    }

    fn trust_domain_str(&self) -> &str {
        &self.uri["spiffe://".len().."spiffe://".len() + self.td_len]
    }

    /// True when the ID belongs to `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain_str() == td.as_str()
    }

    /// The path, starting with `/` (empty for the trust domain ID itself).
    pub fn path(&self) -> &str {
        &self.uri["spiffe://".len() + self.td_len..]
    }

    /// The node name when this is a node agent ID (`/node/<name>`).
    pub fn node_name(&self) -> Option<&str> {
        let name = self.path().strip_prefix("/node/")?;
        (!name.contains('/')).then_some(name)
    }

    /// True when this ID equals `prefix` or lies below it (segment-wise).
    pub fn has_prefix(&self, prefix: &str) -> bool {
        let prefix = prefix.trim_end_matches('/');
        self.uri == prefix
            || (self.uri.starts_with(prefix)
                && self.uri.as_bytes().get(prefix.len()) == Some(&b'/'))
    }

    /// The full URI.
    pub fn as_str(&self) -> &str {
        &self.uri
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_ids() {
        for ok in [
            "spiffe://example.org",
            "spiffe://example.org/node/n1",
            "spiffe://a-b_c.d/svc/pay.ments/v1",
        ] {
            SpiffeId::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn rejects_invalid_ids() {
        for bad in [
            "http://example.org/x",
            "spiffe://",
            "spiffe://Example.org/x",
            "spiffe://example.org/",
            "spiffe://example.org//x",
            "spiffe://example.org/./x",
            "spiffe://example.org/../x",
            "spiffe://example.org/x?y",
            "spiffe://example.org/x#y",
            "spiffe://user@example.org/x",
            "spiffe://example.org:443/x",
            "spiffe://example.org/x%20y",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} accepted");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2048));
        assert!(matches!(
            SpiffeId::parse(&long),
            Err(SpiffeIdError::TooLong { .. })
        ));
    }

    #[test]
    fn parts_and_prefixes() {
        let id = SpiffeId::parse("spiffe://example.org/node/n1").unwrap();
        assert_eq!(id.trust_domain().as_str(), "example.org");
        assert_eq!(id.path(), "/node/n1");
        assert_eq!(id.node_name(), Some("n1"));
        assert!(id.has_prefix("spiffe://example.org/node"));
        assert!(id.has_prefix("spiffe://example.org/node/"));
        assert!(!id.has_prefix("spiffe://example.org/no"));
        let svc = SpiffeId::parse("spiffe://example.org/svc/a").unwrap();
        assert_eq!(svc.node_name(), None);
        assert!(!svc.is_member_of(&TrustDomain::parse("example.com").unwrap()));
    }
}
