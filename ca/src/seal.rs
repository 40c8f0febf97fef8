//! Sealing CA private keys for a shared database: AES-256-GCM under a key-encryption key
//! (KEK) that never enters the database. The KEK comes from a file or an environment
//! variable, base64 of 32 random bytes.

use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Why a KEK could not be read, or a key could not be unsealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The KEK file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The KEK is not base64 of 32 bytes.
    #[error("{origin}: key-encryption key must be base64 of 32 bytes")]
    BadKek {
        /// File or variable name.
        origin: String,
    },
    /// The sealed key does not open under this KEK (wrong KEK or tampered row).
    #[error("sealed key {label} does not open with this key-encryption key")]
    Open {
        /// What was sealed.
        label: String,
    },
}

/// A key-encryption key.
pub struct Kek {
    key: LessSafeKey,
}

impl Kek {
    fn from_base64(text: &str, origin: &str) -> Result<Self, SealError> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| SealError::BadKek {
                origin: origin.to_owned(),
            })?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| SealError::BadKek {
            origin: origin.to_owned(),
        })?;
        Ok(Self {
            key: LessSafeKey::new(key),
        })
    }

    /// Reads a KEK from `path`.
    pub fn from_file(path: &Path) -> Result<Self, SealError> {
        let text = std::fs::read_to_string(path).map_err(|source| SealError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_base64(&text, &path.display().to_string())
    }

    /// Reads a KEK from environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, SealError> {
        let text = std::env::var(var).map_err(|_| SealError::BadKek {
            origin: format!("${var}"),
        })?;
        Self::from_base64(&text, &format!("${var}"))
    }

    /// Creates a new random KEK file (0600) and returns the key.
    pub fn create_file(path: &Path) -> Result<Self, SealError> {
        use base64::Engine;
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("system randomness is available");
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        crate::fsutil::write_atomic(path, format!("{text}\n").as_bytes(), 0o600).map_err(
            |source| SealError::Io {
                path: path.display().to_string(),
                source,
            },
        )?;
        Self::from_base64(&text, &path.display().to_string())
    }

    /// Seals `plaintext`, bound to `label` (e.g. `intermediate-7`): nonce || ciphertext || tag.
    pub fn seal(&self, label: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("system randomness is available");
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(label.as_bytes()),
                &mut buf,
            )
            .expect("AES-GCM sealing of a small buffer succeeds");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    /// Opens what [`Kek::seal`] produced for the same `label`.
    pub fn open(&self, label: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let err = || SealError::Open {
            label: label.to_owned(),
        };
        if sealed.len() < NONCE_LEN {
            return Err(err());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| err())?;
        let mut buf = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(label.as_bytes()), &mut buf)
            .map_err(|_| err())?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_refuses_tampering_or_relabelling() {
        let dir = std::env::temp_dir().join(format!("meshedge-seal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kek = Kek::create_file(&dir.join("kek")).unwrap();
        let sealed = kek.seal("root-1", b"secret key");
        assert!(!sealed.windows(10).any(|w| w == b"secret key"));
        assert_eq!(kek.open("root-1", &sealed).unwrap(), b"secret key");
        assert!(kek.open("root-2", &sealed).is_err());
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(kek.open("root-1", &bad).is_err());
        let other = Kek::create_file(&dir.join("kek2")).unwrap();
        assert!(other.open("root-1", &sealed).is_err());
        assert!(Kek::from_file(&dir.join("kek"))
            .unwrap()
            .open("root-1", &sealed)
            .is_ok());
        std::fs::write(dir.join("short"), "AAAA").unwrap();
        assert!(matches!(
            Kek::from_file(&dir.join("short")),
            Err(SealError::BadKek { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
