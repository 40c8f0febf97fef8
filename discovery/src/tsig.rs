//! TSIG (RFC 8945) keys with HMAC-SHA256, shared by the registration client and the
//! embedded server.

use std::fmt;

use hickory_proto::dnssec::rdata::tsig::{make_tsig_record, message_tbs, TsigAlgorithm, TSIG};
use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{Message, MessageFinalizer, MessageVerifier};
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::ProtoError;

/// Allowed clock difference between signer and verifier, in seconds.
pub const FUDGE_SECS: u16 = 300;

/// Why a TSIG key could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key name is not a DNS name.
    #[error("tsig key name {name:?} is not a dns name")]
    Name {
        /// The rejected name.
        name: String,
    },
    /// The secret is not base64.
    #[error("tsig key {name:?}: secret is not base64")]
    Base64 {
        /// The key name.
        name: String,
    },
    /// The secret is shorter than 16 bytes.
    #[error("tsig key {name:?}: secret shorter than 16 bytes")]
    TooShort {
        /// The key name.
        name: String,
    },
}

/// A named HMAC-SHA256 TSIG secret. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    name: Name,
    secret: Vec<u8>,
}

/// Why a signed request was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigFailure {
    /// No TSIG record.
    Unsigned,
    /// The key name or algorithm is unknown.
    BadKey,
    /// The MAC does not verify.
    BadSig,
    /// The signing time is outside the fudge window.
    BadTime,
}

impl TsigFailure {
    /// Bounded label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TsigFailure::Unsigned => "unsigned",
            TsigFailure::BadKey => "badkey",
            TsigFailure::BadSig => "badsig",
            TsigFailure::BadTime => "badtime",
        }
    }
}

// === impl TsigKey ===

impl TsigKey {
    /// A key from its name and raw secret (at least 16 bytes).
    pub fn try_new(name: &str, secret: Vec<u8>) -> Result<Self, KeyError> {
        let mut parsed = Name::from_ascii(name).map_err(|_| KeyError::Name {
            name: name.to_owned(),
        })?;
        parsed.set_fqdn(true);
        if secret.len() < 16 {
            return Err(KeyError::TooShort {
                name: name.to_owned(),
            });
        }
        Ok(Self {
            name: parsed.to_lowercase(),
            secret,
        })
    }

    /// A key from its name and base64 secret, as in BIND's `key { secret "..."; }`.
    pub fn from_base64(name: &str, secret: &str) -> Result<Self, KeyError> {
        let raw = data_encoding::BASE64
            .decode(secret.trim().as_bytes())
            .map_err(|_| KeyError::Base64 {
                name: name.to_owned(),
            })?;
        Self::try_new(name, raw)
    }

    /// A key with a fresh random 32-byte secret.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        let secret: [u8; 32] = rand::random();
        Self::try_new(name, secret.to_vec())
    }

    /// The key name (fully qualified, lowercase).
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The secret in base64, for writing a BIND `key` clause.
    pub fn secret_base64(&self) -> String {
        data_encoding::BASE64.encode(&self.secret)
    }

    pub(crate) fn signer(&self) -> TSigner {
        TSigner::new(
            self.secret.clone(),
            TsigAlgorithm::HmacSha256,
            self.name.clone(),
            FUDGE_SECS,
        )
        .expect("hmac-sha256 is always supported with the ring backend")
    }
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A verified request: which key signed it and the request MAC (to sign the response).
pub(crate) struct Verified<'k> {
    pub key: &'k TsigKey,
    pub mac: Vec<u8>,
}

/// Verifies the TSIG on a raw request against `keys`, at unix time `now`.
pub(crate) fn verify_request<'k>(
    keys: &'k [TsigKey],
    message: &Message,
    raw: &[u8],
    now: u64,
) -> Result<Verified<'k>, TsigFailure> {
    let record = message.signature().last().ok_or(TsigFailure::Unsigned)?;
    let RData::DNSSEC(DNSSECRData::TSIG(tsig)) = record.data() else {
        return Err(TsigFailure::Unsigned);
    };
    if tsig.algorithm() != &TsigAlgorithm::HmacSha256 {
        return Err(TsigFailure::BadKey);
    }
    let key = keys
        .iter()
        .find(|k| &k.name == record.name())
        .ok_or(TsigFailure::BadKey)?;
    let (mac, window, _) = key
        .signer()
        .verify_message_byte(None, raw, true)
        .map_err(|_| TsigFailure::BadSig)?;
    if now < window.start || now > window.end {
        return Err(TsigFailure::BadTime);
    }
    Ok(Verified { key, mac })
}

/// Signs a response to a request whose MAC was `request_mac`.
pub(crate) struct ResponseSigner {
    pub signer: TSigner,
    pub request_mac: Vec<u8>,
}

impl MessageFinalizer for ResponseSigner {
    fn finalize_message(
        &self,
        message: &Message,
        current_time: u32,
    ) -> Result<(Vec<Record>, Option<MessageVerifier>), ProtoError> {
        let pre = TSIG::new(
            self.signer.algorithm().clone(),
            u64::from(current_time),
            self.signer.fudge(),
            Vec::new(),
            message.id(),
            0,
            Vec::new(),
        );
        let tbs = message_tbs(
            Some(&self.request_mac),
            message,
            &pre,
            self.signer.signer_name(),
        )?;
        let mac = self
            .signer
            .sign(&tbs)
            .map_err(|e| ProtoError::from(e.to_string()))?;
        let record = make_tsig_record(self.signer.signer_name().clone(), pre.set_mac(mac));
        Ok((vec![record], None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let k = TsigKey::from_base64("upd.key", "c2VjcmV0LXNlY3JldC1zZWNyZXQ=").expect("valid");
        assert_eq!(k.name().to_ascii(), "upd.key.");
        assert_eq!(k.secret_base64(), "c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
        assert!(!format!("{k:?}").contains("c2Vj"));
        assert!(matches!(
            TsigKey::from_base64("k", "!!!"),
            Err(KeyError::Base64 { .. })
        ));
        assert!(matches!(
            TsigKey::try_new("k", vec![1; 8]),
            Err(KeyError::TooShort { .. })
        ));
        assert_ne!(
            TsigKey::generate("a").expect("ok").secret,
            TsigKey::generate("a").expect("ok").secret
        );
    }
}
