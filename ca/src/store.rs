//! CA records behind one interface: join tokens, registration entries and bans.
//!
//! The embedded default is SQLite in the state dir ([`SqliteStore`]); a shared SQL store
//! for several CA replicas implements the same trait.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

mod postgres;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// A failure of the store itself (not a policy decision).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or queried.
    #[error("{path}: {source}")]
    Database {
        /// The database file or address.
        path: String,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL store failed (connection lost, query refused).
    #[error("postgres {target}: {source}")]
    Postgres {
        /// Host, port and database (never the password).
        target: String,
        /// The cause.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A record with the same key exists.
    #[error("{what} already exists")]
    Conflict {
        /// The record.
        what: String,
    },
}

/// A join token as stored: only its SHA-256 hash, never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenRecord {
    /// Hex SHA-256 of the token.
    pub hash: String,
    /// The node it enrolls.
    pub node: String,
    /// Unix seconds after which it is refused.
    pub expires_at: i64,
}

/// Result of redeeming a join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// This call consumed the token.
    Redeemed {
        /// The node it enrolls.
        node: String,
    },
    /// No such token.
    Unknown,
    /// Used before.
    AlreadyUsed,
    /// Past its expiry.
    Expired,
}

/// A registration entry: which workload ID a node may obtain, and for which selectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationEntry {
    /// Entry ID (random).
    pub id: String,
    /// The workload's SPIFFE ID.
    pub spiffe_id: String,
    /// The node whose agent may obtain it.
    pub parent: String,
    /// Workload selectors, e.g. `unix:uid:1000`.
    pub selectors: Vec<String>,
    /// DNS SANs the SVID may carry.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// SVID lifetime for this entry, seconds (policy default when absent).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// A banned node: it can renew nothing and obtain nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    /// Node name.
    pub node: String,
    /// Why.
    pub reason: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Storage for the CA's records. Implementations must make token redemption atomic
/// across every process sharing the store.
#[async_trait]
pub trait CaStore: Send + Sync + 'static {
    /// Stores a new join token.
    async fn insert_token(&self, token: &JoinTokenRecord) -> Result<(), StoreError>;
    /// Looks a token up without consuming it.
    async fn token(&self, hash: &str) -> Result<Option<(JoinTokenRecord, bool)>, StoreError>;
    /// Consumes a token at `now` (unix seconds); at most one caller ever gets `Redeemed`.
    async fn redeem_token(&self, hash: &str, now: i64) -> Result<Redemption, StoreError>;
    /// Stores a registration entry.
    async fn insert_entry(&self, entry: &RegistrationEntry) -> Result<(), StoreError>;
    /// Entries whose parent is `node` (all entries when `None`).
    async fn entries(&self, node: Option<&str>) -> Result<Vec<RegistrationEntry>, StoreError>;
    /// Deletes an entry; true when it existed.
    async fn delete_entry(&self, id: &str) -> Result<bool, StoreError>;
    /// Registers (or replaces) a node's attestation public key.
    async fn set_attestation_key(&self, node: &str, key: &[u8]) -> Result<(), StoreError>;
    /// A node's attestation public key.
    async fn attestation_key(&self, node: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Records a re-attestation nonce; false when it was seen before (a replay). Nonces
    /// older than `now - keep_secs` may be forgotten.
    async fn use_nonce(&self, nonce: &str, now: i64, keep_secs: i64) -> Result<bool, StoreError>;
    /// Checks that the store answers (for readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Bans a node.
    async fn ban(&self, ban: &Ban) -> Result<(), StoreError>;
    /// Lifts a ban; true when there was one.
    async fn unban(&self, node: &str) -> Result<bool, StoreError>;
    /// The ban on `node`, if any.
    async fn ban_of(&self, node: &str) -> Result<Option<Ban>, StoreError>;
}

/// Hex SHA-256 of a join token, the form in which tokens are stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}
