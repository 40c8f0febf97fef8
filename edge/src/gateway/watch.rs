//! Noticing changed files: a fingerprint of the contents of the config file and of every
//! certificate, key and bundle it names (contents, not mtimes: atomic renames and
//! same-second writes are both seen).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::config::{Config, IdentityConfig};

/// Files whose change triggers a reload.
pub fn watched_files(config_path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut v = vec![config_path.to_owned()];
    for c in &config.listener.certificates {
        v.push(c.cert.clone());
        v.push(c.key.clone());
    }
    if let IdentityConfig::Files { cert, key, bundle } = &config.identity {
        v.extend([cert.clone(), key.clone(), bundle.clone()]);
    }
    v
}

/// A hash over the contents (or read errors) of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// Matches no set of files: the next comparison reports a change.
    pub const CHANGED: Self = Self(0);

    /// Reads `files` and hashes them.
    pub fn of(files: &[PathBuf]) -> Self {
        let mut h = DefaultHasher::new();
        for f in files {
            f.hash(&mut h);
            match std::fs::read(f) {
                Ok(bytes) => bytes.hash(&mut h),
                Err(e) => e.kind().hash(&mut h),
            }
        }
        Self(h.finish())
    }
}
