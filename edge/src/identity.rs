//! Certificates from files: the serving certificates chosen by SNI and the gateway's own
//! SVID presented to upstreams. Both sit behind resolvers whose content is swapped when the
//! files change, so new handshakes use new certificates and nothing restarts.

pub mod workload;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use time::OffsetDateTime;

use crate::config::CertificateConfig;
use crate::route::HostMatch;

/// A certificate, key or bundle file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Unreadable or not PEM.
    #[error("{path}: cannot read PEM")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// No `CERTIFICATE` block.
    #[error("{path}: no certificate in the file")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key is not usable or does not match the certificate.
    #[error("{key}: key unusable with {cert}")]
    Key {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
}

/// Reads a PEM chain and its key into a rustls `CertifiedKey` (key checked against leaf).
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, IdentityError> {
    let chain = load_certs(cert)?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|source| IdentityError::Pem {
        path: key.to_owned(),
        source,
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, der, &provider).map_err(|source| IdentityError::Key {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    })
}

/// Reads every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let pem_err = |source| IdentityError::Pem {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(IdentityError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The `notAfter` of a DER certificate.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<OffsetDateTime> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(c.validity().not_after.to_datetime())
}

fn dns_names(cert: &CertificateDer<'_>) -> Vec<HostMatch> {
    let Ok((_, c)) = x509_parser::parse_x509_certificate(cert) else {
        return Vec::new();
    };
    let Ok(Some(san)) = c.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => HostMatch::parse(d).ok(),
            _ => None,
        })
        .collect()
}

/// Serving certificates with the names each serves.
#[derive(Clone)]
pub struct ServingCerts {
    entries: Vec<(Vec<HostMatch>, Arc<CertifiedKey>)>,
}

impl fmt::Debug for ServingCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(names, _)| names))
            .finish()
    }
}

impl ServingCerts {
    /// Loads every configured certificate (names from the config, else from the cert).
    pub fn load(certs: &[CertificateConfig]) -> Result<Self, IdentityError> {
        let entries = certs
            .iter()
            .map(|c| {
                let ck = load_certified_key(&c.cert, &c.key)?;
                let names = if c.server_names.is_empty() {
                    dns_names(&ck.cert[0])
                } else {
                    c.server_names.clone()
                };
                Ok((names, Arc::new(ck)))
            })
            .collect::<Result<Vec<_>, IdentityError>>()?;
        Ok(Self { entries })
    }

    /// The certificate for an SNI name: exact names first, then wildcards, else the first.
    pub fn select(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let pick = sni
            .map(|s| s.trim_end_matches('.').to_ascii_lowercase())
            .and_then(|s| {
                let exact = self.entries.iter().find(|(names, _)| {
                    names
                        .iter()
                        .any(|n| matches!(n, HostMatch::Exact(_)) && n.matches(&s))
                });
                exact.or_else(|| {
                    self.entries
                        .iter()
                        .find(|(names, _)| names.iter().any(|n| n.matches(&s)))
                })
            });
        pick.or(self.entries.first()).map(|(_, ck)| ck.clone())
    }

    /// Leaf certificates in config order.
    pub fn leaves(&self) -> impl Iterator<Item = &CertificateDer<'static>> {
        self.entries.iter().map(|(_, ck)| &ck.cert[0])
    }
}

/// `ResolvesServerCert` over swappable [`ServingCerts`].
#[derive(Debug)]
pub struct ServerCertResolver(ArcSwap<ServingCerts>);

impl ServerCertResolver {
    /// A resolver serving `certs`.
    pub fn new(certs: ServingCerts) -> Arc<Self> {
        Arc::new(Self(ArcSwap::from_pointee(certs)))
    }

    /// Replaces the certificates; new handshakes use them.
    pub fn swap(&self, certs: ServingCerts) {
        self.0.store(Arc::new(certs));
    }

    /// The certificates served now.
    pub fn current(&self) -> Arc<ServingCerts> {
        self.0.load_full()
    }
}

impl ResolvesServerCert for ServerCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load().select(hello.server_name())
    }
}

/// The gateway's SVID and trust bundle, as loaded from files.
#[derive(Clone)]
pub struct Identity {
    /// SVID chain and key.
    pub svid: Arc<CertifiedKey>,
    /// Trust bundle roots.
    pub roots: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads the SVID and bundle from PEM files.
    pub fn load_files(cert: &Path, key: &Path, bundle: &Path) -> Result<Self, IdentityError> {
        Ok(Self {
            svid: Arc::new(load_certified_key(cert, key)?),
            roots: load_certs(bundle)?,
        })
    }
}

/// `ResolvesClientCert` presenting the current SVID; swapped on rotation. It also knows
/// when that SVID expires, so that nothing is sent upstream with an expired one.
///
/// The two things every request reads, the generation and the expiry in Unix seconds, are
/// plain atomics next to the swapped SVID: an atomic load each instead of an arc-swap load
/// (a debt-slot write and a fence) each.
#[derive(Debug)]
pub struct ClientCertResolver {
    presented: ArcSwap<PresentedSvid>,
    /// Counts swaps; stored after the SVID is swapped in: whoever sees a new generation and
    /// connects presents that SVID or a newer one.
    generation: AtomicU64,
    /// The presented SVID's `notAfter` in Unix seconds (`i64::MAX` when unknown).
    not_after_unix: AtomicI64,
    /// Serialises swaps, so that the atomics follow the swapped SVID in order.
    swapping: Mutex<()>,
}

#[derive(Debug)]
struct PresentedSvid {
    key: Arc<CertifiedKey>,
    not_after: Option<OffsetDateTime>,
}

impl PresentedSvid {
    fn new(key: Arc<CertifiedKey>) -> Self {
        let not_after = key.cert.first().and_then(not_after);
        Self { key, not_after }
    }

    fn not_after_unix(&self) -> i64 {
        self.not_after
            .map_or(i64::MAX, OffsetDateTime::unix_timestamp)
    }
}

impl ClientCertResolver {
    /// A resolver presenting `svid`.
    pub fn new(svid: Arc<CertifiedKey>) -> Arc<Self> {
        let presented = PresentedSvid::new(svid);
        Arc::new(Self {
            not_after_unix: AtomicI64::new(presented.not_after_unix()),
            generation: AtomicU64::new(0),
            presented: ArcSwap::from_pointee(presented),
            swapping: Mutex::default(),
        })
    }

    /// Replaces the SVID; new upstream connections present it. The same certificate again
    /// (a config reload that did not touch the identity files) changes nothing, so pools
    /// and sessions survive it.
    pub fn swap(&self, svid: Arc<CertifiedKey>) {
        let _one_at_a_time = self.swapping.lock().unwrap_or_else(PoisonError::into_inner);
        if self.presented.load().key.cert == svid.cert {
            return;
        }
        let new = PresentedSvid::new(svid);
        let not_after_unix = new.not_after_unix();
        self.presented.store(Arc::new(new));
        self.not_after_unix.store(not_after_unix, Ordering::Release);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Counts swaps: connections made under an older generation present an older SVID.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The SVID presented now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.presented.load().key.clone()
    }

    /// The `notAfter` of the SVID presented now (`None` if its leaf cannot be parsed).
    pub fn not_after(&self) -> Option<OffsetDateTime> {
        self.presented.load().not_after
    }

    /// `Some(notAfter)` when the SVID presented now has expired at `now`.
    pub fn expired_at(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.not_after().filter(|t| *t <= now)
    }

    /// `Some(notAfter)` when the SVID presented now has expired (checked per request: the
    /// clock in Unix seconds against the `notAfter` converted once, no calendar date built;
    /// the clock of the request path, see [`crate::clock`]).
    pub fn expired_now(&self) -> Option<OffsetDateTime> {
        let now = crate::clock::unix_seconds();
        if self.not_after_unix.load(Ordering::Acquire) > now {
            return None;
        }
        self.not_after().filter(|t| t.unix_timestamp() <= now)
    }
}

impl ResolvesClientCert for ClientCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a self-signed cert for `names` and returns its config and leaf.
    fn cert(
        dir: &Path,
        tag: &str,
        names: &[&str],
        configured: &[&str],
    ) -> (CertificateConfig, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let c = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cp, kp) = (
            dir.join(format!("{tag}.crt")),
            dir.join(format!("{tag}.key")),
        );
        std::fs::write(&cp, c.pem()).unwrap();
        std::fs::write(&kp, key.serialize_pem()).unwrap();
        let server_names = configured
            .iter()
            .map(|n| HostMatch::parse(n).unwrap())
            .collect();
        (
            CertificateConfig {
                cert: cp,
                key: kp,
                server_names,
            },
            c.der().to_vec(),
        )
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_first() {
        let dir = std::env::temp_dir().join(format!("meshedge-sni-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let (default, d) = cert(&dir, "default", &["default.test"], &[]);
        let (wild, w) = cert(&dir, "wild", &["*.example.org"], &[]);
        let (api, a) = cert(&dir, "api", &["whatever.test"], &["api.example.org"]);
        let certs = ServingCerts::load(&[default, wild, api]).unwrap();
        let pick = |sni: Option<&str>| certs.select(sni).unwrap().cert[0].to_vec();
        for (sni, want) in [
            (Some("api.example.org"), &a),
            (Some("API.example.org."), &a),
            (Some("www.example.org"), &w),
            (Some("default.test"), &d),
            (Some("unknown.test"), &d),
            (None, &d),
        ] {
            assert_eq!(&pick(sni), want, "{sni:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mismatched_key_is_refused_naming_files() {
        let dir = std::env::temp_dir().join(format!("meshedge-key-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, _) = cert(&dir, "a", &["a.test"], &[]);
        let (b, _) = cert(&dir, "b", &["b.test"], &[]);
        let err = load_certified_key(&a.cert, &b.key).unwrap_err();
        assert!(err.to_string().contains("b.key"), "{err}");
        std::fs::write(dir.join("empty.crt"), "").unwrap();
        let err = load_certs(&dir.join("empty.crt")).unwrap_err();
        assert!(matches!(err, IdentityError::NoCertificate { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_a_different_svid_starts_a_new_generation() {
        let dir = std::env::temp_dir().join(format!("meshedge-gen-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, _) = cert(&dir, "a", &["a.test"], &[]);
        let (b, _) = cert(&dir, "b", &["b.test"], &[]);
        let ka = Arc::new(load_certified_key(&a.cert, &a.key).unwrap());
        let kb = Arc::new(load_certified_key(&b.cert, &b.key).unwrap());
        let resolver = ClientCertResolver::new(ka.clone());
        assert_eq!(resolver.generation(), 0);
        // The same certificate loaded again (a config reload): nothing changes.
        resolver.swap(Arc::new(load_certified_key(&a.cert, &a.key).unwrap()));
        assert_eq!(resolver.generation(), 0);
        resolver.swap(kb);
        assert_eq!(resolver.generation(), 1);
        assert!(resolver.not_after().is_some());
        assert!(resolver.expired_at(OffsetDateTime::now_utc()).is_none());
        assert!(resolver.expired_now().is_none());
        let after = resolver.not_after().unwrap() + time::Duration::seconds(1);
        assert_eq!(resolver.expired_at(after), resolver.not_after());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A certificate valid until `not_after`.
    fn key_valid_until(not_after: OffsetDateTime) -> Arc<CertifiedKey> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["svid.test".to_owned()]).unwrap();
        params.not_before = OffsetDateTime::UNIX_EPOCH;
        params.not_after = not_after;
        let cert = params.self_signed(&key).unwrap();
        let der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let signer = rustls::crypto::ring::sign::any_supported_type(&der).unwrap();
        Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer))
    }

    #[test]
    fn the_expiry_checked_per_request_follows_the_swapped_svid() {
        let past = OffsetDateTime::from_unix_timestamp(1_600_000_000).unwrap();
        let future = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let resolver = ClientCertResolver::new(key_valid_until(past));
        assert_eq!(resolver.expired_now(), Some(past));
        resolver.swap(key_valid_until(future));
        assert_eq!((resolver.generation(), resolver.expired_now()), (1, None));
        resolver.swap(key_valid_until(past));
        assert_eq!(
            (resolver.generation(), resolver.expired_now()),
            (2, Some(past))
        );
    }
}
