//! The node identity: enrollment with a join token, the node SVID and trust bundle on disk,
//! and renewal at half-life over mTLS with capped exponential backoff.
//!
//! State dir: `node.pem` (chain and key in one file, 0600, so that a crash can never leave
//! a key beside the wrong certificate) and `bundle.pem` (the latest trust bundle).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use meshedge_ca::client::{trust_domain_of_bundle, CaClient, ClientError};
use meshedge_ca::fsutil::{create_private_dir, write_atomic};
use meshedge_ca::tls::certs_from_pem;
use meshedge_ca::{SpiffeId, TrustDomain};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::attestation;
use crate::backoff::{Backoff, URGENT_RETRY_MAX};
use crate::keys::{private_key, KeyAndCsr, KeyError};
use crate::metrics as m;
use crate::schedule::{Renewal, RenewalSchedule};
use crate::svid::{certs_to_pem, key_from_pem, Svid, SvidError};

/// File of the node SVID chain and key in the state dir.
pub const NODE_FILE: &str = "node.pem";
/// File of the trust bundle in the state dir.
pub const BUNDLE_FILE: &str = "bundle.pem";

/// What the node identity needs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// CA addresses, HOST:PORT, tried in order.
    pub ca_addrs: Vec<String>,
    /// The trust bundle to start from (`--ca-bundle`); the CA's answers update it.
    pub ca_bundle: Vec<CertificateDer<'static>>,
    /// Node name.
    pub node: String,
    /// State dir (created 0700).
    pub state_dir: PathBuf,
    /// Join token for the first enrollment.
    pub join_token: Option<String>,
    /// Requested node SVID lifetime (CA default when `None`).
    pub node_ttl: Option<Duration>,
}

/// The node identity could not be established.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A state file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or dir.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A state file holds no usable SVID.
    #[error("{path}: unusable node identity")]
    BadState {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: SvidError,
    },
    /// No identity on disk (or an expired one) and no join token.
    #[error("no valid node identity in {state_dir} and no join token: pass --join-token")]
    NoToken {
        /// The state dir.
        state_dir: PathBuf,
    },
    /// The attestation key could not be read or written.
    #[error(transparent)]
    Attestation(#[from] crate::attestation::AttestationError),
    /// The bundle names no trust domain.
    #[error("trust bundle holds no spiffe:// root")]
    NoTrustDomain,
    /// The node name does not make a SPIFFE ID.
    #[error("node name {node:?}: {source}")]
    BadNodeName {
        /// The name.
        node: String,
        /// The cause.
        #[source]
        source: meshedge_ca::spiffe::SpiffeIdError,
    },
    /// The CA refused the enrollment (a retry with the same token would not help).
    #[error("enrollment of node {node}")]
    Enroll {
        /// The node.
        node: String,
        /// The CA's answer.
        #[source]
        source: ClientError,
    },
    /// A CA answer held an unusable SVID.
    #[error("ca answer")]
    BadAnswer(#[source] SvidError),
    /// A key could not be made.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The CA client could not be set up.
    #[error("ca client")]
    Client(#[source] ClientError),
}

/// The node's identity and its CA client, renewed in the background by [`NodeIdentity::run`].
pub struct NodeIdentity {
    cfg: NodeConfig,
    trust_domain: TrustDomain,
    svid: RwLock<Arc<Svid>>,
    client: RwLock<Arc<CaClient>>,
    bundle: watch::Sender<Arc<Vec<CertificateDer<'static>>>>,
    /// Counts node SVIDs installed since start (each one is proof the CA answers).
    installed: watch::Sender<u64>,
}

impl NodeIdentity {
    /// Loads the identity from the state dir, or enrolls with the join token when there is
    /// none (or it expired). Retries unreachable CAs with backoff; fails on refusals.
    pub async fn start(cfg: NodeConfig) -> Result<Arc<Self>, NodeError> {
        create_private_dir(&cfg.state_dir).map_err(|source| NodeError::Io {
            path: cfg.state_dir.clone(),
            source,
        })?;
        let bundle = match read_opt(&cfg.state_dir.join(BUNDLE_FILE))? {
            Some(text) => certs_from_pem(&text)
                .ok()
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| cfg.ca_bundle.clone()),
            None => cfg.ca_bundle.clone(),
        };
        let trust_domain = trust_domain_of_bundle(&bundle).ok_or(NodeError::NoTrustDomain)?;
        let node_path = cfg.state_dir.join(NODE_FILE);
        let now = OffsetDateTime::now_utc();
        let loaded = match read_opt(&node_path)? {
            Some(text) => {
                let bad = |source| NodeError::BadState {
                    path: node_path.clone(),
                    source,
                };
                let key = key_from_pem(&node_path.display().to_string(), &text).map_err(bad)?;
                let svid = Svid::from_pem(&node_path.display().to_string(), &text, key, None)
                    .map_err(bad)?;
                if RenewalSchedule::is_expired(now, &svid.lifetime) {
                    tracing::warn!(path = %node_path.display(), "node SVID on disk has expired");
                    None
                } else {
                    tracing::info!(id = %svid.spiffe_id, not_after = %svid.lifetime.not_after, "resuming with the node SVID on disk");
                    Some(svid)
                }
            }
            None => None,
        };
        let svid = match loaded {
            Some(s) => s,
            None => match attestation::load(&cfg.state_dir)? {
                Some(key) if read_opt(&node_path)?.is_some() => {
                    Self::reattest_until_done(&cfg, &trust_domain, &bundle, &key).await?
                }
                _ => Self::enroll(&cfg, &trust_domain, &bundle).await?,
            },
        };
        let client = CaClient::new(
            cfg.ca_addrs.clone(),
            &bundle,
            Some((svid.chain.clone(), private_key(&svid.key_pkcs8))),
        )
        .map_err(NodeError::Client)?;
        let (bundle_tx, _) = watch::channel(Arc::new(bundle));
        Ok(Arc::new(Self {
            cfg,
            trust_domain,
            svid: RwLock::new(Arc::new(svid)),
            client: RwLock::new(Arc::new(client)),
            bundle: bundle_tx,
            installed: watch::channel(0).0,
        }))
    }

    async fn enroll(
        cfg: &NodeConfig,
        td: &TrustDomain,
        bundle: &[CertificateDer<'static>],
    ) -> Result<Svid, NodeError> {
        let token = cfg
            .join_token
            .as_deref()
            .ok_or_else(|| NodeError::NoToken {
                state_dir: cfg.state_dir.clone(),
            })?;
        let id = td
            .node_id(&cfg.node)
            .map_err(|source| NodeError::BadNodeName {
                node: cfg.node.clone(),
                source,
            })?;
        let anonymous =
            CaClient::new(cfg.ca_addrs.clone(), bundle, None).map_err(NodeError::Client)?;
        let attestation = attestation::load_or_create(&cfg.state_dir)?;
        let attestation_public = attestation::public_key(&attestation);
        let ttl = ttl_secs(cfg.node_ttl);
        obtain_until_answered(cfg, &id, "enroll", |csr| {
            let anonymous = &anonymous;
            let attestation_public = &attestation_public;
            async move {
                anonymous
                    .enroll_with_attestation(token, &csr, ttl, Some(attestation_public))
                    .await
            }
        })
        .await
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The node name.
    pub fn node(&self) -> &str {
        &self.cfg.node
    }

    /// The current node SVID.
    pub fn svid(&self) -> Arc<Svid> {
        self.svid.read().expect("lock not poisoned").clone()
    }

    /// A CA client presenting the current node SVID.
    pub fn client(&self) -> Arc<CaClient> {
        self.client.read().expect("lock not poisoned").clone()
    }

    /// The latest trust bundle, updated by every CA answer.
    pub fn bundle(&self) -> watch::Receiver<Arc<Vec<CertificateDer<'static>>>> {
        self.bundle.subscribe()
    }

    /// Changes every time a new node SVID is installed: the CA is reachable again, so
    /// whatever waits in backoff (the workload SVID cache) may retry at once.
    pub fn installed(&self) -> watch::Receiver<u64> {
        self.installed.subscribe()
    }

    /// Takes the bundle of a CA answer if it differs from the current one.
    pub fn update_bundle(&self, bundle_pem: &str) {
        let Ok(certs) = certs_from_pem(bundle_pem) else {
            return;
        };
        if certs.is_empty() || **self.bundle.borrow() == certs {
            return;
        }
        let path = self.cfg.state_dir.join(BUNDLE_FILE);
        if let Err(e) = write_atomic(&path, certs_to_pem(&certs).as_bytes(), 0o644) {
            tracing::warn!(path = %path.display(), error = %e, "could not save the trust bundle");
        }
        tracing::info!(roots = certs.len(), "trust bundle changed");
        self.bundle.send_replace(Arc::new(certs));
    }

    /// Renews the node SVID at half of its lifetime, forever. CA failures keep the current
    /// SVID and retry with capped exponential backoff and jitter.
    pub async fn run(self: Arc<Self>) {
        let schedule = RenewalSchedule::default();
        let mut backoff = Backoff::for_ca();
        loop {
            let current = self.svid();
            let now = OffsetDateTime::now_utc();
            metrics::gauge!(m::NODE_SVID_EXPIRY_SECONDS)
                .set((current.lifetime.not_after - now).as_seconds_f64());
            if let Renewal::In(wait) = schedule.next(now, &current.lifetime) {
                tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
                continue;
            }
            let expired = RenewalSchedule::is_expired(now, &current.lifetime);
            let attempt = if expired {
                self.reattest_once().await
            } else {
                self.renew_once().await
            };
            match attempt {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    let cap = if expired {
                        URGENT_RETRY_MAX
                    } else {
                        Duration::MAX
                    };
                    let wait = backoff.next_delay_within(rand::random(), cap);
                    metrics::gauge!(m::CA_BACKOFF_SECONDS).set(wait.as_secs_f64());
                    tracing::warn!(error = %e, retry_in = ?wait, failures = backoff.failures(), "node SVID renewal failed; keeping the current one");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Re-attests with the attestation key until the CA answers (startup with an expired
    /// node SVID on disk); a refusal (e.g. a ban) is final.
    async fn reattest_until_done(
        cfg: &NodeConfig,
        td: &TrustDomain,
        bundle: &[CertificateDer<'static>],
        key: &rcgen::KeyPair,
    ) -> Result<Svid, NodeError> {
        let id = td
            .node_id(&cfg.node)
            .map_err(|source| NodeError::BadNodeName {
                node: cfg.node.clone(),
                source,
            })?;
        let anonymous =
            CaClient::new(cfg.ca_addrs.clone(), bundle, None).map_err(NodeError::Client)?;
        obtain_until_answered(cfg, &id, "reattest", |csr| {
            let anonymous = &anonymous;
            async move { anonymous.reattest(&cfg.node, &csr, key).await }
        })
        .await
    }

    /// The node SVID expired (the CA was unreachable for longer than its lifetime): get a
    /// new one with the attestation key, then carry on as after a renewal.
    #[tracing::instrument(skip(self), fields(node = %self.cfg.node))]
    async fn reattest_once(&self) -> Result<(), NodeError> {
        let Some(key) = attestation::load(&self.cfg.state_dir)? else {
            return Err(NodeError::NoToken {
                state_dir: self.cfg.state_dir.clone(),
            });
        };
        let id = self.svid().spiffe_id.clone();
        let kc = KeyAndCsr::generate(&id)?;
        let bundle = self.bundle.borrow().clone();
        let anonymous =
            CaClient::new(self.cfg.ca_addrs.clone(), &bundle, None).map_err(NodeError::Client)?;
        let resp = match anonymous.reattest(&self.cfg.node, &kc.csr_pem, &key).await {
            Ok(r) => r,
            Err(e) => {
                ca_failed("reattest");
                metrics::counter!(m::NODE_RENEWALS_TOTAL, "op" => "reattest", "result" => "error")
                    .increment(1);
                return Err(NodeError::Client(e));
            }
        };
        metrics::counter!(m::NODE_RENEWALS_TOTAL, "op" => "reattest", "result" => "ok")
            .increment(1);
        tracing::info!("node re-attested with its attestation key after its SVID expired");
        self.install(resp, kc.key_pkcs8)
    }

    #[tracing::instrument(skip(self), fields(node = %self.cfg.node))]
    async fn renew_once(&self) -> Result<(), NodeError> {
        let id = self.svid().spiffe_id.clone();
        let kc = KeyAndCsr::generate(&id)?;
        let resp = match self
            .client()
            .renew(&kc.csr_pem, ttl_secs(self.cfg.node_ttl))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                ca_failed("renew");
                metrics::counter!(m::NODE_RENEWALS_TOTAL, "op" => "renew", "result" => "error")
                    .increment(1);
                return Err(NodeError::Client(e));
            }
        };
        metrics::counter!(m::NODE_RENEWALS_TOTAL, "op" => "renew", "result" => "ok").increment(1);
        self.install(resp, kc.key_pkcs8)
    }

    /// Persists and starts using a node SVID the CA just issued.
    fn install(
        &self,
        resp: meshedge_ca::api::SvidResponse,
        key_pkcs8: Vec<u8>,
    ) -> Result<(), NodeError> {
        ca_ok();
        let svid = Svid::from_response(&resp, key_pkcs8, OffsetDateTime::now_utc())
            .map_err(NodeError::BadAnswer)?;
        persist(&self.cfg.state_dir, &svid, &resp.bundle_pem)?;
        self.update_bundle(&resp.bundle_pem);
        let bundle = self.bundle.borrow().clone();
        let client = CaClient::new(
            self.cfg.ca_addrs.clone(),
            &bundle,
            Some((svid.chain.clone(), private_key(&svid.key_pkcs8))),
        )
        .map_err(NodeError::Client)?;
        tracing::info!(id = %svid.spiffe_id, not_after = %svid.lifetime.not_after, "node SVID renewed");
        *self.svid.write().expect("lock not poisoned") = Arc::new(svid);
        *self.client.write().expect("lock not poisoned") = Arc::new(client);
        self.installed.send_modify(|n| *n += 1);
        Ok(())
    }
}

/// Obtains a node SVID for `id` from a CA call (`op`: enroll or reattest) that takes a fresh
/// PEM CSR, retrying unreachable CAs with capped backoff; a refusal is final. The SVID and
/// bundle are persisted before they are returned.
async fn obtain_until_answered<F, Fut>(
    cfg: &NodeConfig,
    id: &SpiffeId,
    op: &'static str,
    mut call: F,
) -> Result<Svid, NodeError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<meshedge_ca::api::SvidResponse, ClientError>>,
{
    let mut backoff = Backoff::for_ca();
    loop {
        let kc = KeyAndCsr::generate(id)?;
        match call(kc.csr_pem).await {
            Ok(resp) => {
                ca_ok();
                metrics::counter!(m::NODE_RENEWALS_TOTAL, "op" => op, "result" => "ok")
                    .increment(1);
                let svid = Svid::from_response(&resp, kc.key_pkcs8, OffsetDateTime::now_utc())
                    .map_err(NodeError::BadAnswer)?;
                persist(&cfg.state_dir, &svid, &resp.bundle_pem)?;
                tracing::info!(id = %svid.spiffe_id, not_after = %svid.lifetime.not_after, op, "node SVID obtained");
                return Ok(svid);
            }
            Err(e) => {
                metrics::counter!(m::NODE_RENEWALS_TOTAL, "op" => op, "result" => "error")
                    .increment(1);
                ca_failed(op);
                if !e.is_retryable() {
                    return Err(NodeError::Enroll {
                        node: cfg.node.clone(),
                        source: e,
                    });
                }
                let wait = backoff.next_delay(rand::random());
                metrics::gauge!(m::CA_BACKOFF_SECONDS).set(wait.as_secs_f64());
                tracing::warn!(error = %e, retry_in = ?wait, op, "CA unreachable, retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Records a successful CA call.
pub(crate) fn ca_ok() {
    metrics::gauge!(m::CA_REACHABLE).set(1.0);
    metrics::gauge!(m::CA_BACKOFF_SECONDS).set(0.0);
}

/// Records a failed CA call for `op`.
pub(crate) fn ca_failed(op: &'static str) {
    metrics::gauge!(m::CA_REACHABLE).set(0.0);
    metrics::counter!(m::CA_ERRORS_TOTAL, "op" => op).increment(1);
}

fn ttl_secs(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_secs().max(1))
}

fn read_opt(path: &Path) -> Result<Option<String>, NodeError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(NodeError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn persist(dir: &Path, svid: &Svid, bundle_pem: &str) -> Result<(), NodeError> {
    let io = |path: PathBuf| move |source| NodeError::Io { path, source };
    let bundle_path = dir.join(BUNDLE_FILE);
    if let Ok(certs) = certs_from_pem(bundle_pem) {
        if !certs.is_empty() {
            write_atomic(&bundle_path, certs_to_pem(&certs).as_bytes(), 0o644)
                .map_err(io(bundle_path.clone()))?;
        }
    }
    let node_path = dir.join(NODE_FILE);
    let text = format!("{}{}", svid.chain_pem(), svid.key_pem());
    write_atomic(&node_path, text.as_bytes(), 0o600).map_err(io(node_path.clone()))
}
