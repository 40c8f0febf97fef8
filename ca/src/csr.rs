//! Certificate signing requests: parse a PKCS#10 CSR, check its signature, key and SPIFFE ID.
//!
//! Only the subject public key and the single SPIFFE URI SAN are taken from a CSR; every
//! other extension it asks for is ignored, because the CA alone decides what an SVID carries.

use rcgen::{PublicKeyData, SignatureAlgorithm};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::spiffe::{SpiffeId, TrustDomain};

/// Largest CSR accepted, in bytes of DER.
pub const MAX_CSR_DER_LEN: usize = 16 * 1024;
/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Why a CSR was refused. Every variant maps to HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// Not PEM `CERTIFICATE REQUEST`, or not DER PKCS#10.
    #[error("csr is not a PKCS#10 certificate request: {detail}")]
    Malformed {
        /// What the parser said.
        detail: String,
    },
    /// Larger than [`MAX_CSR_DER_LEN`].
    #[error("csr of {len} bytes exceeds the limit of {MAX_CSR_DER_LEN}")]
    TooLarge {
        /// Its size.
        len: usize,
    },
    /// The self-signature does not verify.
    #[error("csr signature does not verify")]
    BadSignature,
    /// A key type outside P-256, P-384, Ed25519 and RSA >= 2048.
    #[error("csr key type not allowed: {kind} (allowed: P-256, P-384, Ed25519, RSA >= 2048)")]
    KeyType {
        /// What the key was.
        kind: String,
    },
    /// Zero or several URI SANs.
    #[error("csr must carry exactly one URI SAN, found {count}")]
    UriSanCount {
        /// How many it had.
        count: usize,
    },
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("csr URI SAN is not a SPIFFE ID: {0}")]
    BadSpiffeId(#[from] crate::spiffe::SpiffeIdError),
    /// The SPIFFE ID belongs to another trust domain.
    #[error("csr SPIFFE ID {id} is outside trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// The requested ID.
        id: String,
        /// The CA's trust domain.
        trust_domain: String,
    },
}

/// The kind of subject key a CSR carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on NIST P-256.
    EcdsaP256,
    /// ECDSA on NIST P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA with the given modulus size.
    Rsa {
        /// Modulus size in bits.
        bits: usize,
    },
}

/// A CSR that passed every check: signature, key type, one SPIFFE ID in our trust domain.
#[derive(Debug, Clone)]
pub struct ValidatedCsr {
    /// The requested SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The subject key's type.
    pub key_kind: KeyKind,
    public_key: CsrPublicKey,
}

impl ValidatedCsr {
    /// Parses a PEM (`-----BEGIN CERTIFICATE REQUEST-----`) or DER CSR and checks it.
    pub fn parse(input: &[u8], td: &TrustDomain) -> Result<Self, CsrError> {
        let der = if input.starts_with(b"-----") {
            let p = pem::parse(input).map_err(|e| CsrError::Malformed {
                detail: e.to_string(),
            })?;
            if p.tag() != "CERTIFICATE REQUEST" && p.tag() != "NEW CERTIFICATE REQUEST" {
                return Err(CsrError::Malformed {
                    detail: format!("PEM label {:?}", p.tag()),
                });
            }
            p.into_contents()
        } else {
            input.to_vec()
        };
        Self::parse_der(&der, td)
    }

    /// Checks a DER CSR.
    pub fn parse_der(der: &[u8], td: &TrustDomain) -> Result<Self, CsrError> {
        if der.len() > MAX_CSR_DER_LEN {
            return Err(CsrError::TooLarge { len: der.len() });
        }
        let (rest, csr) =
            X509CertificationRequest::from_der(der).map_err(|e| CsrError::Malformed {
                detail: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(CsrError::Malformed {
                detail: format!("{} trailing bytes", rest.len()),
            });
        }
        let spki = &csr.certification_request_info.subject_pki;
        let (key_kind, alg) = classify_key(spki)?;
        csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
        let uris: Vec<&str> = csr
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|ext| match ext {
                ParsedExtension::SubjectAlternativeName(san) => Some(&san.general_names),
                _ => None,
            })
            .flatten()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect();
        if uris.len() != 1 {
            return Err(CsrError::UriSanCount { count: uris.len() });
        }
        let spiffe_id = SpiffeId::parse(uris[0])?;
        if !spiffe_id.is_member_of(td) {
            return Err(CsrError::ForeignTrustDomain {
                id: spiffe_id.to_string(),
                trust_domain: td.to_string(),
            });
        }
        Ok(Self {
            spiffe_id,
            key_kind,
            public_key: CsrPublicKey {
                raw: spki.subject_public_key.data.to_vec(),
                alg,
            },
        })
    }

    /// The subject public key, in the form rcgen signs.
    pub fn public_key(&self) -> &impl PublicKeyData {
        &self.public_key
    }
}

fn classify_key(
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
) -> Result<(KeyKind, &'static SignatureAlgorithm), CsrError> {
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_SIG_ED25519 {
        return Ok((KeyKind::Ed25519, &rcgen::PKCS_ED25519));
    }
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => Ok((KeyKind::EcdsaP256, &rcgen::PKCS_ECDSA_P256_SHA256)),
            Some(c) if c == OID_NIST_EC_P384 => {
                Ok((KeyKind::EcdsaP384, &rcgen::PKCS_ECDSA_P384_SHA384))
            }
            other => Err(CsrError::KeyType {
                kind: format!(
                    "EC curve {}",
                    other.map_or("?".into(), |c| c.to_id_string())
                ),
            }),
        };
    }
    if *oid == OID_PKCS1_RSAENCRYPTION {
        let bits = match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => rsa.key_size(),
            _ => 0,
        };
        if bits < MIN_RSA_BITS {
            return Err(CsrError::KeyType {
                kind: format!("RSA-{bits}"),
            });
        }
        return Ok((KeyKind::Rsa { bits }, &rcgen::PKCS_RSA_SHA256));
    }
    Err(CsrError::KeyType {
        kind: format!("algorithm {}", oid.to_id_string()),
    })
}

/// The subject key of a CSR, as rcgen needs it to build the certificate's SPKI.
#[derive(Debug, Clone)]
struct CsrPublicKey {
    raw: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for CsrPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests;
