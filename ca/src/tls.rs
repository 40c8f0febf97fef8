//! SPIFFE-aware TLS verification for rustls: peers are authenticated by chain to the trust
//! bundle plus an allowed SPIFFE ID, never by host name (SPIFFE X509-SVID spec, section 5).

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::spiffe::SpiffeId;
use crate::svid::spiffe_id_of;

mod sessions;

pub use sessions::{SvidBoundSessions, SvidVersion};

/// Which SPIFFE IDs a peer may present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedIds {
    /// Any ID (the chain to the bundle is the only check).
    Any,
    /// One of these exact IDs.
    Exact(Vec<SpiffeId>),
    /// An ID equal to or below one of these prefixes (segment-wise).
    Prefixes(Vec<String>),
}

impl AllowedIds {
    /// True when `id` is allowed.
    pub fn allows(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(ids) => ids.contains(id),
            Self::Prefixes(ps) => ps.iter().any(|p| id.has_prefix(p)),
        }
    }
}

/// Verifies `leaf` (with `intermediates`) up to one of `roots`, for any TLS usage.
pub fn verify_chain(
    roots: &[CertificateDer<'static>],
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'static>],
) -> Result<(), webpki::Error> {
    let anchors = roots
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()?;
    let ee = webpki::EndEntityCert::try_from(leaf)?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map(|_| ())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// A rustls server-certificate verifier for SPIFFE peers: chain to the bundle, then the ID.
pub struct SpiffeServerVerifier {
    anchors: Vec<rustls::pki_types::TrustAnchor<'static>>,
    allowed: AllowedIds,
    algs: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("anchors", &self.anchors.len())
            .field("allowed", &self.allowed)
            .finish()
    }
}

impl SpiffeServerVerifier {
    /// A verifier trusting `roots` and accepting peers whose ID `allowed` allows.
    pub fn new(
        roots: &[CertificateDer<'static>],
        allowed: AllowedIds,
    ) -> Result<Arc<Self>, webpki::Error> {
        let anchors = roots
            .iter()
            .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Self {
            anchors,
            allowed,
            algs: algorithms(),
        }))
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ee = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::InvalidCertificate(pki_error(e)))?;
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| rustls::Error::InvalidCertificate(pki_error(e)))?;
        let id = spiffe_id_of(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })?;
        if !self.allowed.allows(&id) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(UnexpectedPeerId {
                    presented: id,
                    allowed: self.allowed.clone(),
                }))),
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A peer presented a valid SVID with an ID the configuration does not allow.
#[derive(Debug, Clone, thiserror::Error)]
#[error("peer presented {presented}, allowed: {allowed:?}")]
pub struct UnexpectedPeerId {
    /// What the peer presented.
    pub presented: SpiffeId,
    /// What was allowed.
    pub allowed: AllowedIds,
}

fn pki_error(e: webpki::Error) -> rustls::CertificateError {
    use webpki::Error as E;
    match e {
        E::CertExpired { .. } => rustls::CertificateError::Expired,
        E::CertNotValidYet { .. } => rustls::CertificateError::NotValidYet,
        E::UnknownIssuer => rustls::CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => rustls::CertificateError::BadSignature,
        other => rustls::CertificateError::Other(rustls::OtherError(Arc::new(other))),
    }
}

/// Reads every `CERTIFICATE` block of a PEM text.
pub fn certs_from_pem(pem_text: &str) -> Result<Vec<CertificateDer<'static>>, pem::PemError> {
    Ok(pem::parse_many(pem_text)?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect())
}
