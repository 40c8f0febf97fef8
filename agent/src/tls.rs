//! rustls configs that follow an [`X509Source`]: the own certificate is resolved on every
//! handshake (`ResolvesServerCert` / `ResolvesClientCert`) and peers are verified against
//! the current bundle and an allowed set of SPIFFE IDs. Rotation needs no restart and never
//! touches established connections.

use std::sync::{Arc, Mutex};

use meshedge_ca::svid::spiffe_id_of;
use meshedge_ca::tls::{AllowedIds, SpiffeServerVerifier, SvidBoundSessions, UnexpectedPeerId};
use meshedge_ca::{SpiffeId, TrustDomain};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::keys::private_key;
use crate::source::X509Source;

/// A TLS config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the settings.
    #[error("tls config: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Peers of the whole trust domain `td`.
pub fn trust_domain(td: &TrustDomain) -> AllowedIds {
    AllowedIds::Prefixes(vec![td.id_string()])
}

/// The SPIFFE ID of the peer of an established connection (its leaf's URI SAN).
pub fn peer_spiffe_id(conn: &rustls::CommonState) -> Option<SpiffeId> {
    spiffe_id_of(conn.peer_certificates()?.first()?).ok()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Resolves the default SVID of a source as the own certificate, re-parsing the key only
/// when the SVID changes.
#[derive(Debug)]
pub struct SvidResolver {
    source: X509Source,
    cached: Mutex<Option<(String, Arc<CertifiedKey>)>>,
}

impl SvidResolver {
    /// A resolver for `source`.
    pub fn new(source: X509Source) -> Arc<Self> {
        Arc::new(Self {
            source,
            cached: Mutex::new(None),
        })
    }

    fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        let ctx = self.source.current();
        let svid = ctx.default_svid()?;
        let mut cached = self.cached.lock().expect("lock not poisoned");
        if let Some((serial, key)) = cached.as_ref() {
            if *serial == svid.serial {
                return Some(key.clone());
            }
        }
        let signer = match provider()
            .key_provider
            .load_private_key(private_key(&svid.key_pkcs8))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(id = %svid.spiffe_id, error = %e, "SVID key unusable");
                return None;
            }
        };
        let key = Arc::new(CertifiedKey::new(svid.chain.clone(), signer));
        *cached = Some((svid.serial.clone(), key.clone()));
        Some(key)
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certified_key()
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.certified_key()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

type Verifiers = (
    Vec<CertificateDer<'static>>,
    Arc<SpiffeServerVerifier>,
    Arc<dyn ClientCertVerifier>,
);

/// Verifies peers (servers or clients) by chain to the source's current bundle, then by
/// SPIFFE ID. The underlying verifiers are rebuilt when the bundle changes.
#[derive(Debug)]
pub struct SpiffePeerVerifier {
    source: X509Source,
    allowed: AllowedIds,
    cached: Mutex<Option<Verifiers>>,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl SpiffePeerVerifier {
    /// A verifier of peers whose ID `allowed` allows, trusting `source`'s bundle.
    pub fn new(source: X509Source, allowed: AllowedIds) -> Arc<Self> {
        Arc::new(Self {
            source,
            allowed,
            cached: Mutex::new(None),
            algs: provider().signature_verification_algorithms,
        })
    }

    fn verifiers(
        &self,
    ) -> Result<(Arc<SpiffeServerVerifier>, Arc<dyn ClientCertVerifier>), rustls::Error> {
        let ctx = self.source.current();
        let mut cached = self.cached.lock().expect("lock not poisoned");
        if let Some((roots, s, c)) = cached.as_ref() {
            if *roots == ctx.bundle {
                return Ok((s.clone(), c.clone()));
            }
        }
        let general = |e: String| rustls::Error::General(format!("trust bundle: {e}"));
        let server = SpiffeServerVerifier::new(&ctx.bundle, AllowedIds::Any)
            .map_err(|e| general(e.to_string()))?;
        let mut store = rustls::RootCertStore::empty();
        for root in &ctx.bundle {
            store.add(root.clone())?;
        }
        let client = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
            .build()
            .map_err(|e| general(e.to_string()))?;
        *cached = Some((ctx.bundle.clone(), server.clone(), client.clone()));
        Ok((server, client))
    }

    fn check_id(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let other = |e: Arc<dyn std::error::Error + Send + Sync>| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                e,
            )))
        };
        let id = spiffe_id_of(end_entity).map_err(|e| other(Arc::new(e)))?;
        if self.allowed.allows(&id) {
            Ok(())
        } else {
            tracing::warn!(presented = %id, "peer identity not allowed");
            Err(other(Arc::new(UnexpectedPeerId {
                presented: id,
                allowed: self.allowed.clone(),
            })))
        }
    }
}

impl ServerCertVerifier for SpiffePeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (server, _) = self.verifiers()?;
        server.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        self.check_id(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for SpiffePeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let (_, client) = self.verifiers()?;
        client.verify_client_cert(end_entity, intermediates, now)?;
        self.check_id(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A server config presenting `source`'s SVID and requiring client SVIDs whose ID `allowed`
/// allows (mTLS). ALPN offers `h2` and `http/1.1`. Session resumption is off: every
/// connection presents and verifies the current SVIDs, so an expired or rotated-out
/// identity cannot ride on an old session.
pub fn server_config(
    source: &X509Source,
    allowed: AllowedIds,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(SpiffePeerVerifier::new(source.clone(), allowed))
        .with_cert_resolver(SvidResolver::new(source.clone()));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(cfg)
}

/// A client config presenting `source`'s SVID and accepting servers whose ID `allowed`
/// allows. The server name passed to `connect` is sent as SNI but not verified: identity is
/// the SPIFFE ID. Set ALPN on the result as needed.
pub fn client_config(
    source: &X509Source,
    allowed: AllowedIds,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(SpiffePeerVerifier::new(source.clone(), allowed))
        .with_client_cert_resolver(SvidResolver::new(source.clone()));
    // A resumed session would authenticate with the SVID of its first handshake, even after
    // a rotation (and after that SVID expired): sessions are kept per SVID.
    let rotating = source.clone();
    cfg.resumption = rustls::client::Resumption::store(SvidBoundSessions::new(
        Arc::new(move || svid_fingerprint(&rotating)),
        256,
    ));
    Ok(cfg)
}

/// A hash of the default SVID's leaf: changes on every rotation.
fn svid_fingerprint(source: &X509Source) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    source
        .current()
        .default_svid()
        .and_then(|s| s.chain.first())
        .map(|leaf| leaf.as_ref())
        .hash(&mut hasher);
    hasher.finish()
}
