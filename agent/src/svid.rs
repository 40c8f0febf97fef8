//! An SVID held by the agent: chain, key and lifetime, read from a CA answer or from disk.

use meshedge_ca::api::SvidResponse;
use meshedge_ca::svid::check_x509_svid;
use meshedge_ca::tls::certs_from_pem;
use meshedge_ca::SpiffeId;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::schedule::Lifetime;

/// An SVID chain that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SvidError {
    /// The PEM text does not parse.
    #[error("svid for {what}: bad pem: {source}")]
    Pem {
        /// The SPIFFE ID or file it was for.
        what: String,
        /// The cause.
        #[source]
        source: pem::PemError,
    },
    /// No certificate, or no key, in the text.
    #[error("svid for {what}: {missing} missing")]
    Missing {
        /// The SPIFFE ID or file it was for.
        what: String,
        /// What is missing.
        missing: &'static str,
    },
    /// The leaf breaks the X509-SVID rules.
    #[error("svid for {what}: {source}")]
    Invalid {
        /// The SPIFFE ID or file it was for.
        what: String,
        /// The cause.
        #[source]
        source: meshedge_ca::svid::SvidError,
    },
}

/// An X509-SVID with its private key.
#[derive(Clone)]
pub struct Svid {
    /// Its SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// Leaf then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
    /// Issuance and expiry, for the renewal schedule.
    pub lifetime: Lifetime,
    /// Leaf serial, hex.
    pub serial: String,
}

impl std::fmt::Debug for Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field("not_after", &self.lifetime.not_after)
            .finish_non_exhaustive()
    }
}

impl Svid {
    /// An SVID from a chain PEM and its key; `received_at` is when it was issued (`None`:
    /// use the leaf's `notBefore`).
    pub fn from_pem(
        what: &str,
        chain_pem: &str,
        key_pkcs8: Vec<u8>,
        received_at: Option<OffsetDateTime>,
    ) -> Result<Self, SvidError> {
        let chain = certs_from_pem(chain_pem).map_err(|source| SvidError::Pem {
            what: what.to_owned(),
            source,
        })?;
        Self::from_chain(what, chain, key_pkcs8, received_at)
    }

    /// An SVID from DER certificates (leaf first) and its key.
    pub fn from_chain(
        what: &str,
        chain: Vec<CertificateDer<'static>>,
        key_pkcs8: Vec<u8>,
        received_at: Option<OffsetDateTime>,
    ) -> Result<Self, SvidError> {
        let leaf = chain.first().ok_or_else(|| SvidError::Missing {
            what: what.to_owned(),
            missing: "certificate",
        })?;
        let info = check_x509_svid(leaf).map_err(|source| SvidError::Invalid {
            what: what.to_owned(),
            source,
        })?;
        Ok(Self {
            spiffe_id: info.spiffe_id,
            lifetime: Lifetime {
                issued_at: received_at.unwrap_or(info.not_before),
                not_after: info.not_after,
            },
            serial: info.serial_hex,
            chain,
            key_pkcs8,
        })
    }

    /// An SVID from a CA answer to a CSR made with `key_pkcs8`, received at `now`.
    pub fn from_response(
        resp: &SvidResponse,
        key_pkcs8: Vec<u8>,
        now: OffsetDateTime,
    ) -> Result<Self, SvidError> {
        Self::from_pem(&resp.spiffe_id, &resp.chain_pem, key_pkcs8, Some(now))
    }

    /// The chain as PEM.
    pub fn chain_pem(&self) -> String {
        certs_to_pem(&self.chain)
    }

    /// The key as a PKCS#8 PEM `PRIVATE KEY` block.
    pub fn key_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.key_pkcs8.clone()))
    }

    /// The chain, concatenated DER (the Workload API's encoding).
    pub fn chain_der(&self) -> Vec<u8> {
        concat_der(&self.chain)
    }
}

/// Certificates as concatenated PEM blocks.
pub fn certs_to_pem(certs: &[CertificateDer<'_>]) -> String {
    certs
        .iter()
        .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())))
        .collect()
}

/// Certificates as concatenated DER.
pub fn concat_der(certs: &[CertificateDer<'_>]) -> Vec<u8> {
    certs.iter().flat_map(|c| c.iter().copied()).collect()
}

/// Splits concatenated DER certificates (as the Workload API sends them).
pub fn split_der(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (next, _) = x509_parser::parse_x509_certificate(rest)
            .map_err(|e| format!("certificate {}: {e}", out.len()))?;
        let used = rest.len() - next.len();
        out.push(CertificateDer::from(rest[..used].to_vec()));
        rest = next;
    }
    Ok(out)
}

/// The private key block of a PEM text, PKCS#8 DER.
pub fn key_from_pem(what: &str, text: &str) -> Result<Vec<u8>, SvidError> {
    pem::parse_many(text)
        .map_err(|source| SvidError::Pem {
            what: what.to_owned(),
            source,
        })?
        .into_iter()
        .find(|p| p.tag() == "PRIVATE KEY")
        .map(pem::Pem::into_contents)
        .ok_or_else(|| SvidError::Missing {
            what: what.to_owned(),
            missing: "PRIVATE KEY block",
        })
}
