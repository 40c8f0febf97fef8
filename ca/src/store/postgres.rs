//! The shared store for CA replicas: PostgreSQL holds tokens, entries, bans and the key
//! material (private keys sealed under a KEK that stays outside the database).
//!
//! Every replica keeps one pipelined connection for requests and reconnects after losing
//! it; while it cannot reach the database, every operation fails with
//! [`StoreError::Postgres`] (the API answers 503), so no replica issues from stale state.
//! Changes of key material run in their own short transactions under `SELECT ... FOR UPDATE`
//! of the manifest row, so two replicas never rotate at once.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio_postgres::{Client, NoTls};

use super::{Ban, CaStore, JoinTokenRecord, Redemption, RegistrationEntry, StoreError};
use crate::keyset::{self, CaCert, Keyset, KeysetError, Manifest};
use crate::keystore::KeyStore;
use crate::policy::IssuancePolicy;
use crate::seal::Kek;
use crate::spiffe::TrustDomain;

const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../migrations/0001_init.sql")),
    (2, include_str!("../../migrations/0002_reattest.sql")),
];
/// Advisory lock key serialising migrations between replicas starting together.
const MIGRATION_LOCK: i64 = 0x6d65_7368_6564;

/// A changed manifest and the new CA certificates it names.
type KeyChange = (Manifest, Vec<(&'static str, CaCert)>);

/// PostgreSQL-backed [`CaStore`] and [`KeyStore`].
pub struct PgStore {
    config: tokio_postgres::Config,
    target: String,
    kek: Arc<Kek>,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

fn target_of(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or(""))
}

impl PgStore {
    /// Connects to `url` (libpq key=value or URI form), applies migrations, and keeps
    /// `kek` to seal and open CA keys.
    pub async fn open(url: &str, kek: Kek) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|source| StoreError::Postgres {
                target: "configured url".into(),
                source,
            })?;
        let store = Self {
            target: target_of(&config),
            config,
            kek: Arc::new(kek),
            client: tokio::sync::Mutex::new(None),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Host, port and database, for messages (never the password).
    pub fn target(&self) -> &str {
        &self.target
    }

    fn err(&self) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
        move |source| StoreError::Postgres {
            target: self.target.clone(),
            source,
        }
    }

    async fn connect(&self) -> Result<Client, StoreError> {
        let (client, conn) = self.config.connect(NoTls).await.map_err(self.err())?;
        let target = self.target.clone();
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::warn!(%target, %err, "postgres connection lost");
            }
        });
        Ok(client)
    }

    /// The shared request connection, reconnecting when it was lost.
    async fn client(&self) -> Result<Arc<Client>, StoreError> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        *guard = None;
        let c = Arc::new(self.connect().await?);
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut c = self.connect().await?;
        let tx = c.transaction().await.map_err(self.err())?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(self.err())?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS meshedge_schema (version INTEGER PRIMARY KEY)",
        )
        .await
        .map_err(self.err())?;
        for (version, sql) in MIGRATIONS {
            let done = tx
                .query_opt(
                    "SELECT 1 FROM meshedge_schema WHERE version = $1",
                    &[version],
                )
                .await
                .map_err(self.err())?;
            if done.is_none() {
                tx.batch_execute(sql).await.map_err(self.err())?;
                tx.execute(
                    "INSERT INTO meshedge_schema (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(self.err())?;
                tracing::info!(target = %self.target, version, "applied migration");
            }
        }
        tx.commit().await.map_err(self.err())
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> KeysetError {
        KeysetError::Unavailable {
            target: format!("postgres {}", self.target),
            detail: e.to_string(),
        }
    }

    fn origin(&self, what: &str) -> PathBuf {
        PathBuf::from(format!("postgres {} {what}", self.target))
    }

    /// Stores a freshly generated CA: fails if the database already holds one for another
    /// trust domain; returns false (and changes nothing) if it holds this one already.
    pub async fn init_keys(
        &self,
        td: &TrustDomain,
        policy: IssuancePolicy,
        now: OffsetDateTime,
    ) -> Result<bool, KeysetError> {
        let mut c = self.connect().await.map_err(|e| self.unavailable(e))?;
        let tx = c.transaction().await.map_err(|e| self.unavailable(e))?;
        tx.execute("LOCK TABLE ca_manifest IN EXCLUSIVE MODE", &[])
            .await
            .map_err(|e| self.unavailable(e))?;
        if let Some(row) = tx
            .query_opt("SELECT body FROM ca_manifest WHERE id = 1", &[])
            .await
            .map_err(|e| self.unavailable(e))?
        {
            let body: String = row.get(0);
            let existing = Manifest::parse(body.as_bytes(), &self.origin("ca_manifest"))?;
            if existing.trust_domain == td.as_str() {
                return Ok(false);
            }
            return Err(KeysetError::AlreadyInitialized {
                path: self.origin(&format!(
                    "ca_manifest (trust domain {})",
                    existing.trust_domain
                )),
            });
        }
        let root = keyset::generate_root(td, 1, &policy, now)?;
        let inter = keyset::generate_intermediate(td, 2, &root, &policy, now)?;
        let mut manifest = Manifest {
            trust_domain: td.to_string(),
            policy,
            roots: vec![],
            active_root: 1,
            intermediate: 0,
            next_generation: 1,
        };
        manifest.push_root(1);
        manifest.set_intermediate(2);
        self.insert_key(&tx, "root", &root).await?;
        self.insert_key(&tx, "intermediate", &inter).await?;
        let body = String::from_utf8(manifest.to_json()).expect("json is utf-8");
        tx.execute(
            "INSERT INTO ca_manifest (id, body, version) VALUES (1, $1, 1)",
            &[&body],
        )
        .await
        .map_err(|e| self.unavailable(e))?;
        tx.commit().await.map_err(|e| self.unavailable(e))?;
        Ok(true)
    }

    async fn insert_key(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        kind: &str,
        ca: &CaCert,
    ) -> Result<(), KeysetError> {
        let label = format!("{kind}-{}", ca.generation);
        let sealed = self.kek.seal(&label, ca.key_pem().as_bytes());
        tx.execute(
            "INSERT INTO ca_keys (kind, generation, cert_pem, key_sealed) VALUES ($1, $2, $3, $4)",
            &[&kind, &(ca.generation as i64), &ca.cert_pem(), &sealed],
        )
        .await
        .map_err(|e| self.unavailable(e))?;
        Ok(())
    }

    async fn read_key(
        &self,
        c: &impl tokio_postgres::GenericClient,
        kind: &str,
        g: u64,
    ) -> Result<CaCert, KeysetError> {
        let label = format!("{kind}-{g}");
        let row = c
            .query_opt(
                "SELECT cert_pem, key_sealed FROM ca_keys WHERE kind = $1 AND generation = $2",
                &[&kind, &(g as i64)],
            )
            .await
            .map_err(|e| self.unavailable(e))?
            .ok_or_else(|| KeysetError::Corrupt {
                path: self.origin("ca_keys"),
                detail: format!("{label} is named by the manifest but missing"),
            })?;
        let cert_pem: String = row.get(0);
        let sealed: Vec<u8> = row.get(1);
        let key_pem = String::from_utf8(self.kek.open(&label, &sealed)?).map_err(|_| {
            KeysetError::Corrupt {
                path: self.origin(&format!("ca_keys {label}")),
                detail: "key is not UTF-8 PEM".into(),
            }
        })?;
        let origin = self.origin(&format!("ca_keys {label}"));
        CaCert::from_pems(g, &cert_pem, &key_pem, &origin, &origin)
    }

    async fn load_from(
        &self,
        c: &impl tokio_postgres::GenericClient,
        lock: bool,
    ) -> Result<Keyset, KeysetError> {
        let sql = if lock {
            "SELECT body FROM ca_manifest WHERE id = 1 FOR UPDATE"
        } else {
            "SELECT body FROM ca_manifest WHERE id = 1"
        };
        let row = c
            .query_opt(sql, &[])
            .await
            .map_err(|e| self.unavailable(e))?
            .ok_or_else(|| {
                self.unavailable("no CA in this database; run `meshedge ca init --postgres`")
            })?;
        let body: String = row.get(0);
        let manifest = Manifest::parse(body.as_bytes(), &self.origin("ca_manifest"))?;
        let mut roots = Vec::new();
        for &g in &manifest.roots {
            roots.push(self.read_key(c, "root", g).await?);
        }
        let inter = self
            .read_key(c, "intermediate", manifest.intermediate)
            .await?;
        Keyset::assemble(manifest, roots, inter, &self.origin("ca_manifest"))
    }

    /// Runs `change` on the locked manifest in one transaction and stores the result.
    async fn change<F>(&self, change: F) -> Result<(), KeysetError>
    where
        F: for<'a> FnOnce(&'a Keyset) -> Result<Option<KeyChange>, KeysetError>,
    {
        let mut c = self.connect().await.map_err(|e| self.unavailable(e))?;
        let tx = c.transaction().await.map_err(|e| self.unavailable(e))?;
        let current = self.load_from(&tx, true).await?;
        let Some((manifest, new_keys)) = change(&current)? else {
            return Ok(());
        };
        for (kind, ca) in &new_keys {
            self.insert_key(&tx, kind, ca).await?;
        }
        let body = String::from_utf8(manifest.to_json()).expect("json is utf-8");
        tx.execute(
            "UPDATE ca_manifest SET body = $1, version = version + 1 WHERE id = 1",
            &[&body],
        )
        .await
        .map_err(|e| self.unavailable(e))?;
        tx.commit().await.map_err(|e| self.unavailable(e))
    }
}

fn new_intermediate(current: &Keyset, now: OffsetDateTime) -> Result<KeyChange, KeysetError> {
    let mut m = current.manifest.clone();
    let g = m.next_generation;
    let root = current
        .roots
        .iter()
        .find(|r| r.generation == m.active_root)
        .expect("manifest lists its active root");
    let inter = keyset::generate_intermediate(&current.trust_domain, g, root, &m.policy, now)?;
    m.set_intermediate(g);
    Ok((m, vec![("intermediate", inter)]))
}

#[async_trait]
impl KeyStore for PgStore {
    async fn load(&self) -> Result<Keyset, KeysetError> {
        let c = self.client().await.map_err(|e| self.unavailable(e))?;
        self.load_from(c.as_ref(), false).await
    }

    async fn version(&self) -> Result<String, KeysetError> {
        let c = self.client().await.map_err(|e| self.unavailable(e))?;
        let row = c
            .query_one("SELECT version FROM ca_manifest WHERE id = 1", &[])
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(row.get::<_, i64>(0).to_string())
    }

    async fn rotate_intermediate(
        &self,
        now: OffsetDateTime,
        force: bool,
    ) -> Result<bool, KeysetError> {
        let mut rotated = false;
        self.change(|current| {
            if !force && !current.intermediate_is_due(now) {
                return Ok(None);
            }
            rotated = true;
            new_intermediate(current, now).map(Some)
        })
        .await?;
        Ok(rotated)
    }

    async fn add_root(&self, now: OffsetDateTime) -> Result<u64, KeysetError> {
        let mut added = 0;
        self.change(|current| {
            let mut m = current.manifest.clone();
            let g = m.next_generation;
            let root = keyset::generate_root(&current.trust_domain, g, &m.policy, now)?;
            m.push_root(g);
            added = g;
            Ok(Some((m, vec![("root", root)])))
        })
        .await?;
        Ok(added)
    }

    async fn activate_root(&self, generation: u64, now: OffsetDateTime) -> Result<(), KeysetError> {
        let origin = self.origin("ca_manifest");
        self.change(|current| {
            let mut m = current.manifest.clone();
            m.activate_root(generation, &origin)?;
            let g = m.next_generation;
            let root = current
                .roots
                .iter()
                .find(|r| r.generation == generation)
                .expect("activate_root checked the generation");
            let inter =
                keyset::generate_intermediate(&current.trust_domain, g, root, &m.policy, now)?;
            m.set_intermediate(g);
            Ok(Some((m, vec![("intermediate", inter)])))
        })
        .await
    }

    async fn retire_root(&self, generation: u64) -> Result<(), KeysetError> {
        let origin = self.origin("ca_manifest");
        self.change(|current| {
            let mut m = current.manifest.clone();
            m.retire_root(generation, &origin)?;
            Ok(Some((m, vec![])))
        })
        .await
    }
}

#[async_trait]
impl CaStore for PgStore {
    async fn insert_token(&self, t: &JoinTokenRecord) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO tokens (hash, node, expires_at) VALUES ($1, $2, $3)",
            &[&t.hash, &t.node, &t.expires_at],
        )
        .await
        .map_err(self.err())?;
        Ok(())
    }

    async fn token(&self, hash: &str) -> Result<Option<(JoinTokenRecord, bool)>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT node, expires_at, used_at IS NOT NULL FROM tokens WHERE hash = $1",
                &[&hash],
            )
            .await
            .map_err(self.err())?;
        Ok(row.map(|r| {
            (
                JoinTokenRecord {
                    hash: hash.to_owned(),
                    node: r.get(0),
                    expires_at: r.get(1),
                },
                r.get(2),
            )
        }))
    }

    async fn redeem_token(&self, hash: &str, now: i64) -> Result<Redemption, StoreError> {
        let c = self.client().await?;
        if let Some(row) = c
            .query_opt(
                "UPDATE tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING node",
                &[&hash, &now],
            )
            .await
            .map_err(self.err())?
        {
            return Ok(Redemption::Redeemed { node: row.get(0) });
        }
        let row = c
            .query_opt(
                "SELECT used_at IS NOT NULL FROM tokens WHERE hash = $1",
                &[&hash],
            )
            .await
            .map_err(self.err())?;
        Ok(match row.map(|r| r.get::<_, bool>(0)) {
            None => Redemption::Unknown,
            Some(true) => Redemption::AlreadyUsed,
            Some(false) => Redemption::Expired,
        })
    }

    async fn insert_entry(&self, e: &RegistrationEntry) -> Result<(), StoreError> {
        let c = self.client().await?;
        let body = serde_json::to_string(e).expect("entry serializes");
        let n = c
            .execute(
                "INSERT INTO entries (id, spiffe_id, parent, body) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&e.id, &e.spiffe_id, &e.parent, &body],
            )
            .await
            .map_err(self.err())?;
        if n == 0 {
            return Err(StoreError::Conflict {
                what: format!("entry {}", e.id),
            });
        }
        Ok(())
    }

    async fn entries(&self, node: Option<&str>) -> Result<Vec<RegistrationEntry>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT body FROM entries WHERE $1::TEXT IS NULL OR parent = $1 ORDER BY id",
                &[&node],
            )
            .await
            .map_err(self.err())?;
        Ok(rows
            .iter()
            .filter_map(|r| match serde_json::from_str(r.get::<_, &str>(0)) {
                Ok(e) => Some(e),
                Err(err) => {
                    tracing::error!(target = %self.target, %err, "skipping unreadable registration entry");
                    None
                }
            })
            .collect())
    }

    async fn delete_entry(&self, id: &str) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute("DELETE FROM entries WHERE id = $1", &[&id])
            .await
            .map_err(self.err())?;
        Ok(n > 0)
    }

    async fn set_attestation_key(&self, node: &str, key: &[u8]) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO attestation_keys (node, key) VALUES ($1, $2) ON CONFLICT (node) DO UPDATE SET key = $2",
            &[&node, &key],
        )
        .await
        .map_err(self.err())?;
        Ok(())
    }

    async fn attestation_key(&self, node: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt("SELECT key FROM attestation_keys WHERE node = $1", &[&node])
            .await
            .map_err(self.err())?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn use_nonce(&self, nonce: &str, now: i64, keep_secs: i64) -> Result<bool, StoreError> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM reattest_nonces WHERE seen_at < $1",
            &[&(now - keep_secs)],
        )
        .await
        .map_err(self.err())?;
        let n = c
            .execute(
                "INSERT INTO reattest_nonces (nonce, seen_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&nonce, &now],
            )
            .await
            .map_err(self.err())?;
        Ok(n == 1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.query_one("SELECT 1", &[]).await.map_err(self.err())?;
        Ok(())
    }

    async fn ban(&self, b: &Ban) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO bans (node, reason, created_at) VALUES ($1, $2, $3) ON CONFLICT (node) DO UPDATE SET reason = $2, created_at = $3",
            &[&b.node, &b.reason, &b.created_at],
        )
        .await
        .map_err(self.err())?;
        Ok(())
    }

    async fn unban(&self, node: &str) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute("DELETE FROM bans WHERE node = $1", &[&node])
            .await
            .map_err(self.err())?;
        Ok(n > 0)
    }

    async fn ban_of(&self, node: &str) -> Result<Option<Ban>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT reason, created_at FROM bans WHERE node = $1",
                &[&node],
            )
            .await
            .map_err(self.err())?;
        Ok(row.map(|r| Ban {
            node: node.to_owned(),
            reason: r.get(0),
            created_at: r.get(1),
        }))
    }
}
