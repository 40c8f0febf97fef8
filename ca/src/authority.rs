//! The signing core: turns a validated CSR into an X509-SVID chained to the active intermediate.

use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::csr::ValidatedCsr;
use crate::keyset::{der_to_pem, Keyset};
use crate::pki;
use crate::policy::PolicyError;

/// A freshly issued SVID.
#[derive(Debug, Clone)]
pub struct IssuedSvid {
    /// Leaf certificate, DER.
    pub leaf: CertificateDer<'static>,
    /// Leaf then intermediate, PEM.
    pub chain_pem: String,
    /// Serial number, lowercase hex.
    pub serial_hex: String,
    /// Expiry.
    pub not_after: OffsetDateTime,
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The requested lifetime is outside policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The CA's own material cannot sign (e.g. intermediate expired).
    #[error("intermediate g{generation} expired at {not_after}")]
    IntermediateExpired {
        /// Its generation.
        generation: u64,
        /// Its expiry.
        not_after: OffsetDateTime,
    },
    /// rcgen could not build the certificate (e.g. a DNS name that is not IA5).
    #[error("building the certificate: {0}")]
    Build(#[from] rcgen::Error),
}

/// Signs SVIDs with one loaded keyset. Cheap to share behind an `Arc`.
pub struct Authority {
    keyset: Keyset,
    intermediate_pem: String,
    bundle_pem: String,
}

impl Authority {
    /// Wraps a loaded keyset.
    pub fn new(keyset: Keyset) -> Self {
        let intermediate_pem = der_to_pem(&keyset.intermediate.der);
        let bundle_pem = keyset.bundle_pem();
        Self {
            keyset,
            intermediate_pem,
            bundle_pem,
        }
    }

    /// The key material.
    pub fn keyset(&self) -> &Keyset {
        &self.keyset
    }

    /// The trust bundle, PEM.
    pub fn bundle_pem(&self) -> &str {
        &self.bundle_pem
    }

    /// The active intermediate, PEM.
    pub fn intermediate_pem(&self) -> &str {
        &self.intermediate_pem
    }

    /// Signs `csr` for `ttl_secs` (or the policy default) with the given DNS SANs.
    pub fn sign(
        &self,
        csr: &ValidatedCsr,
        dns_names: &[String],
        ttl_secs: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<IssuedSvid, SignError> {
        let inter = &self.keyset.intermediate;
        if now >= inter.not_after {
            return Err(SignError::IntermediateExpired {
                generation: inter.generation,
                not_after: inter.not_after,
            });
        }
        let (not_before, not_after) =
            self.keyset
                .manifest
                .policy
                .svid_validity(ttl_secs, now, inter.not_after)?;
        let params = pki::svid_params(&csr.spiffe_id, dns_names, not_before, not_after)?;
        let serial_hex = hex::encode(
            params
                .serial_number
                .as_ref()
                .expect("svid_params sets a serial")
                .to_bytes(),
        );
        let cert = params.signed_by(csr.public_key(), &inter.issuer)?;
        let mut chain_pem = der_to_pem(cert.der());
        chain_pem.push_str(&self.intermediate_pem);
        Ok(IssuedSvid {
            leaf: cert.der().clone(),
            chain_pem,
            serial_hex,
            not_after,
        })
    }
}

#[cfg(test)]
mod tests;
