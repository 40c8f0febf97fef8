//! Which store a CA state dir uses: embedded (files + SQLite, the default) or PostgreSQL,
//! selected by an optional `store.toml` in the state dir:
//!
//! ```toml
//! [postgres]
//! url = "host=127.0.0.1 port=5432 user=meshedge dbname=meshedge application_name=ca-1"
//! kek_file = "/etc/meshedge/ca.kek"   # or: kek_env = "MESHEDGE_CA_KEK"
//! ```
//!
//! The key-encryption key (base64 of 32 bytes) seals the CA's private keys in the database;
//! it must be the same on every replica and is never stored in the database.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::keyset::KeysetError;
use crate::keystore::{DirKeyStore, KeyStore};
use crate::seal::{Kek, SealError};
use crate::store::{CaStore, PgStore, SqliteStore, StoreError};

/// File name of the store selection in the state dir.
pub const STORE_TOML: &str = "store.toml";

/// Contents of `store.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Use PostgreSQL instead of the embedded store.
    pub postgres: Option<PostgresConfig>,
}

/// `[postgres]` of `store.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// libpq connection string or URI.
    pub url: String,
    /// File holding the key-encryption key.
    #[serde(default)]
    pub kek_file: Option<PathBuf>,
    /// Environment variable holding the key-encryption key.
    #[serde(default)]
    pub kek_env: Option<String>,
}

/// Failure to open a state dir's store.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// `store.toml` is unreadable or invalid.
    #[error("{path}: {detail}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The KEK could not be read.
    #[error(transparent)]
    Kek(#[from] SealError),
    /// The record store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key material could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeysetError),
}

/// The stores of one state dir.
#[derive(Clone)]
pub struct Backend {
    /// Tokens, entries, bans.
    pub records: Arc<dyn CaStore>,
    /// Roots and intermediates.
    pub keys: Arc<dyn KeyStore>,
    /// `embedded` or `postgres <host:port/db>`.
    pub description: String,
    /// The PostgreSQL store, when selected (for `ca init`).
    pub postgres: Option<Arc<PgStore>>,
}

impl PostgresConfig {
    /// Reads the configured KEK.
    pub fn kek(&self, origin: &Path) -> Result<Kek, BackendError> {
        match (&self.kek_file, &self.kek_env) {
            (Some(f), None) => Ok(Kek::from_file(f)?),
            (None, Some(v)) => Ok(Kek::from_env(v)?),
            _ => Err(BackendError::Config {
                path: origin.to_owned(),
                detail: "postgres: set exactly one of kek_file, kek_env".into(),
            }),
        }
    }
}

/// Reads `store.toml` of `dir` (the default when absent).
pub fn read_config(dir: &Path) -> Result<StoreConfig, BackendError> {
    let path = dir.join(STORE_TOML);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| BackendError::Config {
            path,
            detail: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StoreConfig::default()),
        Err(e) => Err(BackendError::Config {
            path,
            detail: e.to_string(),
        }),
    }
}

/// Opens the stores a state dir selects.
pub async fn open(dir: &Path) -> Result<Backend, BackendError> {
    match read_config(dir)?.postgres {
        None => Ok(Backend {
            records: Arc::new(SqliteStore::open(dir)?),
            keys: Arc::new(DirKeyStore::new(dir.to_owned())),
            description: "embedded".into(),
            postgres: None,
        }),
        Some(pg) => {
            let kek = pg.kek(&dir.join(STORE_TOML))?;
            let store = Arc::new(PgStore::open(&pg.url, kek).await?);
            Ok(Backend {
                records: store.clone(),
                keys: store.clone(),
                description: format!("postgres {}", store.target()),
                postgres: Some(store),
            })
        }
    }
}
