//! Key pairs and CSRs: every key is made here, on the node, and never leaves it (the CA
//! signs CSRs only).

use meshedge_ca::SpiffeId;
use rcgen::{CertificateParams, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A key or CSR could not be made.
#[derive(Debug, thiserror::Error)]
#[error("key or csr for {id}: {source}")]
pub struct KeyError {
    /// The SPIFFE ID the CSR was for.
    pub id: String,
    /// The cause.
    #[source]
    pub source: rcgen::Error,
}

/// A fresh P-256 key and a PEM CSR naming `id` as its only URI SAN.
pub struct KeyAndCsr {
    /// The private key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
    /// The PEM CSR.
    pub csr_pem: String,
}

impl std::fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndCsr").finish_non_exhaustive()
    }
}

impl KeyAndCsr {
    /// Generates a P-256 key and a CSR for `id`.
    pub fn generate(id: &SpiffeId) -> Result<Self, KeyError> {
        let err = |source| KeyError {
            id: id.to_string(),
            source,
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(id.as_str().try_into().map_err(err)?)];
        let csr_pem = params
            .serialize_request(&key)
            .and_then(|c| c.pem())
            .map_err(err)?;
        Ok(Self {
            key_pkcs8: key.serialize_der(),
            csr_pem,
        })
    }
}

/// A PKCS#8 DER key as rustls wants it.
pub fn private_key(pkcs8: &[u8]) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_names_the_id() {
        let id = SpiffeId::parse("spiffe://example.org/svc/a").unwrap();
        let k = KeyAndCsr::generate(&id).unwrap();
        assert!(k.csr_pem.contains("BEGIN CERTIFICATE REQUEST"));
        let csr = rcgen::CertificateSigningRequestParams::from_pem(&k.csr_pem).unwrap();
        assert!(matches!(
            &csr.params.subject_alt_names[..],
            [SanType::URI(u)] if u.as_str() == id.as_str()
        ));
        KeyPair::try_from(k.key_pkcs8.as_slice()).unwrap();
    }
}
