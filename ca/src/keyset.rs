//! The CA's key material on disk: roots, the active intermediate, and the manifest naming them.
//!
//! Layout of the state dir:
//! ```text
//! ca.json                      manifest (trust domain, policy, roots, active intermediate)
//! keys/root-<g>.crt|.key       roots (keys 0600)
//! keys/intermediate-<g>.crt|.key
//! ```
//! New key and certificate files are written (atomically) before the manifest that names
//! them, so a crash at any moment leaves a manifest whose files all exist.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rcgen::{Issuer, KeyPair};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::fsutil::{create_private_dir, write_atomic};
use crate::pki;
use crate::policy::IssuancePolicy;
use crate::spiffe::TrustDomain;

/// Name of the manifest file in the state dir.
pub const MANIFEST: &str = "ca.json";

/// Failure to read, write or change the key material. Each names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum KeysetError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its content is not what the CA wrote.
    #[error("{path}: corrupt: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// `ca init` on a dir that already holds a CA.
    #[error("{path}: a CA already exists here")]
    AlreadyInitialized {
        /// The manifest found.
        path: PathBuf,
    },
    /// A root generation that the manifest does not list.
    #[error("root g{generation} is not in {path}")]
    UnknownRoot {
        /// The generation asked for.
        generation: u64,
        /// The manifest.
        path: PathBuf,
    },
    /// The active root cannot be retired.
    #[error("root g{generation} is the active root; activate another one first")]
    RetireActive {
        /// The generation.
        generation: u64,
    },
    /// The shared key store is unreachable or refused a query.
    #[error("{target}: {detail}")]
    Unavailable {
        /// Which store.
        target: String,
        /// What happened.
        detail: String,
    },
    /// A sealed key could not be opened.
    #[error(transparent)]
    Seal(#[from] crate::seal::SealError),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The manifest, `ca.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The trust domain this CA serves.
    pub trust_domain: String,
    /// Issuance policy.
    pub policy: IssuancePolicy,
    /// Root generations in the trust bundle, oldest first.
    pub roots: Vec<u64>,
    /// The root that signs new intermediates.
    pub active_root: u64,
    /// The generation of the intermediate that signs SVIDs.
    pub intermediate: u64,
    /// The next unused generation number.
    pub next_generation: u64,
}

impl Manifest {
    /// Parses and checks a manifest; `origin` names its file or row in errors.
    pub fn parse(raw: &[u8], origin: &Path) -> Result<Self, KeysetError> {
        let corrupt = |detail: String| KeysetError::Corrupt {
            path: origin.to_owned(),
            detail,
        };
        let m: Manifest = serde_json::from_slice(raw).map_err(|e| corrupt(e.to_string()))?;
        TrustDomain::parse(&m.trust_domain).map_err(|e| corrupt(e.to_string()))?;
        if !m.roots.contains(&m.active_root) {
            return Err(corrupt(format!(
                "active root g{} is not in roots",
                m.active_root
            )));
        }
        Ok(m)
    }

    /// Lists a new root `g` in the bundle and consumes its generation number.
    pub fn push_root(&mut self, g: u64) {
        self.roots.push(g);
        self.next_generation = self.next_generation.max(g + 1);
    }

    /// Makes `g` the active root (the caller then issues an intermediate under it).
    pub fn activate_root(&mut self, g: u64, origin: &Path) -> Result<(), KeysetError> {
        if !self.roots.contains(&g) {
            return Err(KeysetError::UnknownRoot {
                generation: g,
                path: origin.to_owned(),
            });
        }
        self.active_root = g;
        Ok(())
    }

    /// Removes root `g` from the bundle; the active root cannot be retired.
    pub fn retire_root(&mut self, g: u64, origin: &Path) -> Result<(), KeysetError> {
        if self.active_root == g {
            return Err(KeysetError::RetireActive { generation: g });
        }
        let before = self.roots.len();
        self.roots.retain(|&r| r != g);
        if self.roots.len() == before {
            return Err(KeysetError::UnknownRoot {
                generation: g,
                path: origin.to_owned(),
            });
        }
        Ok(())
    }

    /// Records intermediate `g` as the signing one and consumes its generation number.
    pub fn set_intermediate(&mut self, g: u64) {
        self.intermediate = g;
        self.next_generation = self.next_generation.max(g + 1);
    }

    /// The manifest as stored.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("manifest serializes")
    }
}

/// A CA certificate with its key.
pub struct CaCert {
    /// Generation number (unique across roots and intermediates).
    pub generation: u64,
    /// DER certificate.
    pub der: CertificateDer<'static>,
    /// Expiry.
    pub not_after: OffsetDateTime,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// Signer built from certificate and key.
    pub issuer: Issuer<'static, KeyPair>,
}

/// All key material loaded from a state dir.
pub struct Keyset {
    /// The manifest as loaded.
    pub manifest: Manifest,
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Roots in the bundle, oldest first.
    pub roots: Vec<CaCert>,
    /// The signing intermediate.
    pub intermediate: CaCert,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeysetError + '_ {
    move |source| KeysetError::Io {
        path: path.to_owned(),
        source,
    }
}

fn cert_path(dir: &Path, kind: &str, g: u64) -> PathBuf {
    dir.join("keys").join(format!("{kind}-{g}.crt"))
}

fn key_path(dir: &Path, kind: &str, g: u64) -> PathBuf {
    dir.join("keys").join(format!("{kind}-{g}.key"))
}

/// An exclusive lock on the state dir's key material, held while the manifest changes.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Blocks until this process holds the lock on `dir/ca.lock`.
    pub fn acquire(dir: &Path) -> Result<Self, KeysetError> {
        let path = dir.join("ca.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.lock().map_err(io_err(&path))?;
        Ok(Self { _file: f })
    }
}

impl Keyset {
    /// `ca init`: creates a root and an intermediate in a new state dir.
    pub fn init(
        dir: &Path,
        td: &TrustDomain,
        policy: IssuancePolicy,
        now: OffsetDateTime,
    ) -> Result<Self, KeysetError> {
        create_private_dir(&dir.join("keys")).map_err(io_err(dir))?;
        let _lock = StateLock::acquire(dir)?;
        let manifest_path = dir.join(MANIFEST);
        if manifest_path.exists() {
            return Err(KeysetError::AlreadyInitialized {
                path: manifest_path,
            });
        }
        let root = generate_root(td, 1, &policy, now)?;
        write_pair(dir, "root", &root)?;
        let manifest = Manifest {
            trust_domain: td.to_string(),
            policy,
            roots: vec![1],
            active_root: 1,
            intermediate: 0,
            next_generation: 2,
        };
        new_intermediate(dir, manifest, now)?;
        Self::load(dir)
    }

    /// Loads and cross-checks the key material of a state dir; any problem names the file.
    pub fn load(dir: &Path) -> Result<Self, KeysetError> {
        let manifest_path = dir.join(MANIFEST);
        let raw = std::fs::read(&manifest_path).map_err(io_err(&manifest_path))?;
        let manifest = Manifest::parse(&raw, &manifest_path)?;
        let roots = manifest
            .roots
            .iter()
            .map(|&g| read_pair(dir, "root", g))
            .collect::<Result<Vec<_>, _>>()?;
        let intermediate = read_pair(dir, "intermediate", manifest.intermediate)?;
        Self::assemble(manifest, roots, intermediate, &manifest_path)
    }

    /// Builds a keyset from a checked manifest and the CA certificates it names.
    pub fn assemble(
        manifest: Manifest,
        roots: Vec<CaCert>,
        intermediate: CaCert,
        origin: &Path,
    ) -> Result<Self, KeysetError> {
        let trust_domain =
            TrustDomain::parse(&manifest.trust_domain).map_err(|e| KeysetError::Corrupt {
                path: origin.to_owned(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            manifest,
            trust_domain,
            roots,
            intermediate,
        })
    }

    /// The trust bundle: every root, PEM, oldest first.
    pub fn bundle_pem(&self) -> String {
        self.roots.iter().map(|r| der_to_pem(&r.der)).collect()
    }

    /// True when policy says the intermediate must be replaced at `now`.
    pub fn intermediate_is_due(&self, now: OffsetDateTime) -> bool {
        self.manifest.policy.intermediate_needs_rotation(
            self.intermediate.not_before,
            self.intermediate.not_after,
            now,
        )
    }

    /// The active root.
    pub fn active_root(&self) -> &CaCert {
        self.roots
            .iter()
            .find(|r| r.generation == self.manifest.active_root)
            .expect("load() checked that the active root is listed")
    }
}

/// Replaces the intermediate with a new one under the active root.
pub fn rotate_intermediate(dir: &Path, now: OffsetDateTime) -> Result<Keyset, KeysetError> {
    let _lock = StateLock::acquire(dir)?;
    let current = Keyset::load(dir)?;
    new_intermediate(dir, current.manifest, now)?;
    Keyset::load(dir)
}

/// Adds a new root to the bundle without using it yet (start of a root rotation).
pub fn add_root(dir: &Path, now: OffsetDateTime) -> Result<u64, KeysetError> {
    let _lock = StateLock::acquire(dir)?;
    let mut current = Keyset::load(dir)?.manifest;
    let g = current.next_generation;
    let td = TrustDomain::parse(&current.trust_domain).expect("load() validated it");
    write_pair(dir, "root", &generate_root(&td, g, &current.policy, now)?)?;
    current.push_root(g);
    write_manifest(dir, &current)?;
    Ok(g)
}

/// Makes root `generation` the signing root: a new intermediate is issued under it.
pub fn activate_root(dir: &Path, generation: u64, now: OffsetDateTime) -> Result<(), KeysetError> {
    let _lock = StateLock::acquire(dir)?;
    let mut current = Keyset::load(dir)?.manifest;
    current.activate_root(generation, &dir.join(MANIFEST))?;
    new_intermediate(dir, current, now)?;
    Ok(())
}

/// Drops root `generation` from the bundle (end of a root rotation).
pub fn retire_root(dir: &Path, generation: u64) -> Result<(), KeysetError> {
    let _lock = StateLock::acquire(dir)?;
    let mut current = Keyset::load(dir)?.manifest;
    current.retire_root(generation, &dir.join(MANIFEST))?;
    write_manifest(dir, &current)
}

/// A new self-signed root of generation `g`.
pub fn generate_root(
    td: &TrustDomain,
    g: u64,
    policy: &IssuancePolicy,
    now: OffsetDateTime,
) -> Result<CaCert, KeysetError> {
    let key = pki::new_ca_key();
    let cert = pki::root_params(td, g, now, secs(policy.root_ttl_secs)).self_signed(&key)?;
    let origin = PathBuf::from(format!("root-{g}"));
    CaCert::from_pems(
        g,
        &der_to_pem(cert.der()),
        &key.serialize_pem(),
        &origin,
        &origin,
    )
}

/// A new intermediate of generation `g` signed by `root`, valid for the policy's
/// intermediate lifetime but never past the root.
pub fn generate_intermediate(
    td: &TrustDomain,
    g: u64,
    root: &CaCert,
    policy: &IssuancePolicy,
    now: OffsetDateTime,
) -> Result<CaCert, KeysetError> {
    let not_after = (now + secs(policy.intermediate_ttl_secs)).min(root.not_after);
    let key = pki::new_ca_key();
    let cert = pki::intermediate_params(td, g, now, not_after).signed_by(&key, &root.issuer)?;
    let origin = PathBuf::from(format!("intermediate-{g}"));
    CaCert::from_pems(
        g,
        &der_to_pem(cert.der()),
        &key.serialize_pem(),
        &origin,
        &origin,
    )
}

fn secs(s: u64) -> Duration {
    Duration::seconds(s as i64)
}

fn new_intermediate(
    dir: &Path,
    mut manifest: Manifest,
    now: OffsetDateTime,
) -> Result<Manifest, KeysetError> {
    let td = TrustDomain::parse(&manifest.trust_domain).map_err(|e| KeysetError::Corrupt {
        path: dir.join(MANIFEST),
        detail: e.to_string(),
    })?;
    let root = read_pair(dir, "root", manifest.active_root)?;
    let g = manifest.next_generation;
    let inter = generate_intermediate(&td, g, &root, &manifest.policy, now)?;
    write_pair(dir, "intermediate", &inter)?;
    manifest.set_intermediate(g);
    write_manifest(dir, &manifest)?;
    Ok(manifest)
}

fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), KeysetError> {
    let path = dir.join(MANIFEST);
    write_atomic(&path, &m.to_json(), 0o644).map_err(io_err(&path))
}

fn write_pair(dir: &Path, kind: &str, ca: &CaCert) -> Result<(), KeysetError> {
    let kp = key_path(dir, kind, ca.generation);
    write_atomic(&kp, ca.key_pem().as_bytes(), 0o600).map_err(io_err(&kp))?;
    let cp = cert_path(dir, kind, ca.generation);
    write_atomic(&cp, ca.cert_pem().as_bytes(), 0o644).map_err(io_err(&cp))
}

fn read_pair(dir: &Path, kind: &str, g: u64) -> Result<CaCert, KeysetError> {
    let cp = cert_path(dir, kind, g);
    let kp = key_path(dir, kind, g);
    let cert_pem = std::fs::read_to_string(&cp).map_err(io_err(&cp))?;
    let key_pem = std::fs::read_to_string(&kp).map_err(io_err(&kp))?;
    CaCert::from_pems(g, &cert_pem, &key_pem, &cp, &kp)
}

impl CaCert {
    /// Parses a CA certificate and its key (PEM) and checks that they match. `cert_origin`
    /// and `key_origin` name where they came from (file, database row) in errors.
    pub fn from_pems(
        generation: u64,
        cert_pem: &str,
        key_pem: &str,
        cert_origin: &Path,
        key_origin: &Path,
    ) -> Result<Self, KeysetError> {
        let corrupt = |path: &Path, detail: String| KeysetError::Corrupt {
            path: path.to_owned(),
            detail,
        };
        let der: CertificateDer<'static> = pem::parse(cert_pem)
            .map_err(|e| corrupt(cert_origin, e.to_string()))?
            .into_contents()
            .into();
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| corrupt(cert_origin, e.to_string()))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| corrupt(key_origin, e.to_string()))?;
        if x509.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(corrupt(
                key_origin,
                format!("key does not match {}", cert_origin.display()),
            ));
        }
        let not_before = x509.validity().not_before.to_datetime();
        let not_after = x509.validity().not_after.to_datetime();
        let issuer =
            Issuer::from_ca_cert_der(&der, key).map_err(|e| corrupt(cert_origin, e.to_string()))?;
        Ok(Self {
            generation,
            der,
            not_after,
            not_before,
            issuer,
        })
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> String {
        der_to_pem(&self.der)
    }

    /// The private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }
}

/// PEM-encodes one DER certificate.
pub fn der_to_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
