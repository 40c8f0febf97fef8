//! Where the CA's key material lives: the state dir (default) or a shared database.
//!
//! `ca serve` polls [`KeyStore::version`] every second and reloads when it changes, so root
//! rotation by the CLI, or an intermediate rotated by another replica, is picked up live.

use std::path::PathBuf;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::keyset::{self, Keyset, KeysetError};

/// Storage of roots, intermediates and the manifest naming them.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Loads and cross-checks everything.
    async fn load(&self) -> Result<Keyset, KeysetError>;
    /// A value that changes whenever the key material changes.
    async fn version(&self) -> Result<String, KeysetError>;
    /// Issues a new intermediate under the active root if the current one is due for
    /// rotation once the store is locked (another replica may have rotated first), or
    /// unconditionally with `force`. True when it rotated.
    async fn rotate_intermediate(
        &self,
        now: OffsetDateTime,
        force: bool,
    ) -> Result<bool, KeysetError>;
    /// Adds a new, not yet active root; returns its generation.
    async fn add_root(&self, now: OffsetDateTime) -> Result<u64, KeysetError>;
    /// Makes root `generation` sign a new intermediate.
    async fn activate_root(&self, generation: u64, now: OffsetDateTime) -> Result<(), KeysetError>;
    /// Removes root `generation` from the bundle.
    async fn retire_root(&self, generation: u64) -> Result<(), KeysetError>;
}

/// Key material in files of the state dir (see [`crate::keyset`]).
pub struct DirKeyStore {
    dir: PathBuf,
}

impl DirKeyStore {
    /// Key material under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KeysetError> + Send + 'static,
) -> Result<T, KeysetError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

#[async_trait]
impl KeyStore for DirKeyStore {
    async fn load(&self) -> Result<Keyset, KeysetError> {
        let dir = self.dir.clone();
        blocking(move || Keyset::load(&dir)).await
    }

    async fn version(&self) -> Result<String, KeysetError> {
        let path = self.dir.join(keyset::MANIFEST);
        let meta = std::fs::metadata(&path).map_err(|source| KeysetError::Io { path, source })?;
        Ok(format!("{:?}/{}", meta.modified().ok(), meta.len()))
    }

    async fn rotate_intermediate(
        &self,
        now: OffsetDateTime,
        force: bool,
    ) -> Result<bool, KeysetError> {
        let current = self.load().await?;
        if !force && !current.intermediate_is_due(now) {
            return Ok(false);
        }
        let dir = self.dir.clone();
        blocking(move || keyset::rotate_intermediate(&dir, now).map(|_| true)).await
    }

    async fn add_root(&self, now: OffsetDateTime) -> Result<u64, KeysetError> {
        let dir = self.dir.clone();
        blocking(move || keyset::add_root(&dir, now)).await
    }

    async fn activate_root(&self, generation: u64, now: OffsetDateTime) -> Result<(), KeysetError> {
        let dir = self.dir.clone();
        blocking(move || keyset::activate_root(&dir, generation, now)).await
    }

    async fn retire_root(&self, generation: u64) -> Result<(), KeysetError> {
        let dir = self.dir.clone();
        blocking(move || keyset::retire_root(&dir, generation)).await
    }
}
