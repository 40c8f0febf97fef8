//! The node's attestation key: a long-lived P-256 key made at first enrollment, registered
//! with the CA, and used to get back in (`POST /v1/reattest`) after the node SVID expired
//! during a CA outage, without a human and without a new join token. See the README's
//! threat model: holding this key is equivalent to being the node until it is banned.

use std::path::{Path, PathBuf};

use meshedge_ca::fsutil::write_atomic;
use rcgen::KeyPair;

/// File of the attestation key in the state dir (0600).
pub const ATTESTATION_FILE: &str = "attestation.key";

/// Why the attestation key could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AttestationError {
    /// File I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a P-256 PKCS#8 key.
    #[error("{path}: not a P-256 private key: {detail}")]
    Bad {
        /// The key file.
        path: PathBuf,
        /// What rcgen said.
        detail: String,
    },
}

/// Loads the attestation key of `state_dir`, if there is one.
pub fn load(state_dir: &Path) -> Result<Option<KeyPair>, AttestationError> {
    let path = state_dir.join(ATTESTATION_FILE);
    match std::fs::read_to_string(&path) {
        Ok(pem) => KeyPair::from_pem(&pem)
            .map(Some)
            .map_err(|e| AttestationError::Bad {
                path,
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AttestationError::Io { path, source }),
    }
}

/// The existing key, or a new one written (0600) before it is ever sent to the CA.
pub fn load_or_create(state_dir: &Path) -> Result<KeyPair, AttestationError> {
    if let Some(k) = load(state_dir)? {
        return Ok(k);
    }
    let path = state_dir.join(ATTESTATION_FILE);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| {
        AttestationError::Bad {
            path: path.clone(),
            detail: e.to_string(),
        }
    })?;
    write_atomic(&path, key.serialize_pem().as_bytes(), 0o600)
        .map_err(|source| AttestationError::Io { path, source })?;
    Ok(key)
}

/// The public half as the CA registers it (uncompressed point).
pub fn public_key(key: &KeyPair) -> Vec<u8> {
    rcgen::PublicKeyData::der_bytes(key).to_vec()
}
