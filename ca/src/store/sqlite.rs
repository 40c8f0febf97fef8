//! The embedded store: one SQLite database in WAL mode in the state dir, shared safely by
//! `ca serve` and the `ca token|entry|ban` commands running beside it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{Ban, CaStore, JoinTokenRecord, Redemption, RegistrationEntry, StoreError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY, node TEXT NOT NULL, expires_at INTEGER NOT NULL,
    used_at INTEGER);
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY, spiffe_id TEXT NOT NULL, parent TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS entries_parent ON entries(parent);
CREATE TABLE IF NOT EXISTS attestation_keys (
    node TEXT PRIMARY KEY, key BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS reattest_nonces (
    nonce TEXT PRIMARY KEY, seen_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS bans (
    node TEXT PRIMARY KEY, reason TEXT NOT NULL, created_at INTEGER NOT NULL);
";

/// SQLite-backed [`CaStore`].
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/store.sqlite` and checks that it is readable.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("store.sqlite");
        let err = |source| StoreError::Database {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        restrict_permissions(&path);
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().expect("sqlite mutex poisoned");
        f(&mut conn).map_err(|source| match source {
            rusqlite::Error::SqliteFailure(e, _)
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::Conflict {
                    what: "record".into(),
                }
            }
            source => StoreError::Database {
                path: self.path.display().to_string(),
                source,
            },
        })
    }
}

/// Tokens and entries are the CA's secrets' neighbours: keep the database owner-only.
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(err) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), %err, "could not restrict permissions");
    }
}

#[async_trait]
impl CaStore for SqliteStore {
    async fn insert_token(&self, t: &JoinTokenRecord) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO tokens (hash, node, expires_at) VALUES (?1, ?2, ?3)",
                params![t.hash, t.node, t.expires_at],
            )
            .map(|_| ())
        })
    }

    async fn token(&self, hash: &str) -> Result<Option<(JoinTokenRecord, bool)>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT node, expires_at, used_at IS NOT NULL FROM tokens WHERE hash = ?1",
                params![hash],
                |r| {
                    Ok((
                        JoinTokenRecord {
                            hash: hash.to_owned(),
                            node: r.get(0)?,
                            expires_at: r.get(1)?,
                        },
                        r.get(2)?,
                    ))
                },
            )
            .optional()
        })
    }

    async fn redeem_token(&self, hash: &str, now: i64) -> Result<Redemption, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let row: Option<(String, i64, Option<i64>)> = tx
                .query_row(
                    "SELECT node, expires_at, used_at FROM tokens WHERE hash = ?1",
                    params![hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let outcome = match row {
                None => Redemption::Unknown,
                Some((_, _, Some(_))) => Redemption::AlreadyUsed,
                Some((_, exp, None)) if exp <= now => Redemption::Expired,
                Some((node, _, None)) => {
                    tx.execute(
                        "UPDATE tokens SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL",
                        params![hash, now],
                    )?;
                    Redemption::Redeemed { node }
                }
            };
            tx.commit()?;
            Ok(outcome)
        })
    }

    async fn insert_entry(&self, e: &RegistrationEntry) -> Result<(), StoreError> {
        let body = serde_json::to_string(e).expect("entry serializes");
        self.with(|c| {
            c.execute(
                "INSERT INTO entries (id, spiffe_id, parent, body) VALUES (?1, ?2, ?3, ?4)",
                params![e.id, e.spiffe_id, e.parent, body],
            )
            .map(|_| ())
        })
    }

    async fn entries(&self, node: Option<&str>) -> Result<Vec<RegistrationEntry>, StoreError> {
        let bodies: Vec<String> = self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT body FROM entries WHERE ?1 IS NULL OR parent = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![node], |r| r.get(0))?;
            rows.collect()
        })?;
        Ok(bodies
            .iter()
            .filter_map(|b| match serde_json::from_str(b) {
                Ok(e) => Some(e),
                Err(err) => {
                    tracing::error!(path = %self.path.display(), %err, "skipping unreadable registration entry");
                    None
                }
            })
            .collect())
    }

    async fn delete_entry(&self, id: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            c.execute("DELETE FROM entries WHERE id = ?1", params![id])
                .map(|n| n > 0)
        })
    }

    async fn set_attestation_key(&self, node: &str, key: &[u8]) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO attestation_keys (node, key) VALUES (?1, ?2)",
                params![node, key],
            )
            .map(|_| ())
        })
    }

    async fn attestation_key(&self, node: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT key FROM attestation_keys WHERE node = ?1",
                params![node],
                |r| r.get(0),
            )
            .optional()
        })
    }

    async fn use_nonce(&self, nonce: &str, now: i64, keep_secs: i64) -> Result<bool, StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM reattest_nonces WHERE seen_at < ?1",
                params![now - keep_secs],
            )?;
            c.execute(
                "INSERT OR IGNORE INTO reattest_nonces (nonce, seen_at) VALUES (?1, ?2)",
                params![nonce, now],
            )
            .map(|n| n == 1)
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())))
    }

    async fn ban(&self, b: &Ban) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO bans (node, reason, created_at) VALUES (?1, ?2, ?3)",
                params![b.node, b.reason, b.created_at],
            )
            .map(|_| ())
        })
    }

    async fn unban(&self, node: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            c.execute("DELETE FROM bans WHERE node = ?1", params![node])
                .map(|n| n > 0)
        })
    }

    async fn ban_of(&self, node: &str) -> Result<Option<Ban>, StoreError> {
        self.with(|c| {
            c.prepare_cached("SELECT reason, created_at FROM bans WHERE node = ?1")?
                .query_row(params![node], |r| {
                    Ok(Ban {
                        node: node.to_owned(),
                        reason: r.get(0)?,
                        created_at: r.get(1)?,
                    })
                })
                .optional()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (SqliteStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "meshedge-store-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        (SqliteStore::open(&dir).unwrap(), dir)
    }

    #[tokio::test]
    async fn token_redeems_once_and_expires() {
        let (s, dir) = store();
        let t = JoinTokenRecord {
            hash: "h1".into(),
            node: "n1".into(),
            expires_at: 100,
        };
        s.insert_token(&t).await.unwrap();
        assert_eq!(
            s.redeem_token("nope", 50).await.unwrap(),
            Redemption::Unknown
        );
        assert_eq!(
            s.redeem_token("h1", 50).await.unwrap(),
            Redemption::Redeemed { node: "n1".into() }
        );
        assert_eq!(
            s.redeem_token("h1", 51).await.unwrap(),
            Redemption::AlreadyUsed
        );
        s.insert_token(&JoinTokenRecord {
            hash: "h2".into(),
            ..t
        })
        .await
        .unwrap();
        assert_eq!(
            s.redeem_token("h2", 100).await.unwrap(),
            Redemption::Expired
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn entries_bans_and_reopen() {
        let (s, dir) = store();
        let e = RegistrationEntry {
            id: "e1".into(),
            spiffe_id: "spiffe://example.org/svc/a".into(),
            parent: "n1".into(),
            selectors: vec!["unix:uid:1000".into()],
            dns_names: vec![],
            ttl_secs: None,
        };
        s.insert_entry(&e).await.unwrap();
        assert!(matches!(
            s.insert_entry(&e).await,
            Err(StoreError::Conflict { .. })
        ));
        s.ban(&Ban {
            node: "n2".into(),
            reason: "lost".into(),
            created_at: 1,
        })
        .await
        .unwrap();
        drop(s);
        let s = SqliteStore::open(&dir).unwrap();
        assert_eq!(s.entries(Some("n1")).await.unwrap(), vec![e]);
        assert!(s.entries(Some("n2")).await.unwrap().is_empty());
        assert_eq!(s.ban_of("n2").await.unwrap().unwrap().reason, "lost");
        assert!(s.unban("n2").await.unwrap());
        assert!(s.ban_of("n2").await.unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_database_is_named() {
        let dir = std::env::temp_dir().join(format!("meshedge-store-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("store.sqlite"), vec![0x42u8; 8192]).unwrap();
        let err = SqliteStore::open(&dir).err().expect("refused").to_string();
        assert!(err.contains("store.sqlite"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
