//! The workload SVID cache: the node's registration entries from the CA, one SVID per entry
//! (key and CSR made here), renewed at half-life in batches, published to every Workload API
//! stream through a watch channel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meshedge_ca::api::{BatchItem, CsrRequest, MAX_BATCH};
use meshedge_ca::client::ClientError;
use meshedge_ca::store::RegistrationEntry;
use meshedge_ca::SpiffeId;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::backoff::{Backoff, URGENT_RETRY_MAX};
use crate::keys::KeyAndCsr;
use crate::metrics as m;
use crate::node::{ca_failed, ca_ok, NodeIdentity};
use crate::schedule::{Renewal, RenewalSchedule};
use crate::svid::Svid;
use crate::sync_budget::{SyncBudget, FORCED_SYNCS_PER_SECOND, FORCED_SYNC_BURST};

/// How long an entry the CA refused waits before it is tried again.
pub const REFUSAL_RETRY: Duration = Duration::from_secs(5);

/// Cache settings.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// How often entries are fetched from the CA.
    pub entry_refresh: Duration,
    /// Requested workload SVID lifetime (the entry's, or the CA default, when `None`).
    pub workload_ttl: Option<Duration>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            entry_refresh: Duration::from_secs(5),
            workload_ttl: None,
        }
    }
}

/// A workload SVID and the entry it was issued for.
#[derive(Debug)]
pub struct WorkloadSvid {
    /// The registration entry.
    pub entry: RegistrationEntry,
    /// The SVID.
    pub svid: Svid,
}

/// What the cache holds at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The node's registration entries, as last fetched.
    pub entries: Arc<Vec<RegistrationEntry>>,
    /// SVIDs by entry ID.
    pub svids: HashMap<String, Arc<WorkloadSvid>>,
    /// The trust bundle.
    pub bundle: Arc<Vec<CertificateDer<'static>>>,
    /// Entry sync attempts so far (forced syncs wait for this to grow).
    pub syncs: u64,
}

/// The cache and its driver.
pub struct SvidCache {
    node: Arc<NodeIdentity>,
    cfg: CacheConfig,
    state: watch::Sender<Arc<Snapshot>>,
    wake: Notify,
    forced: AtomicBool,
}

impl SvidCache {
    /// An empty cache for `node`'s entries. Nothing happens until [`SvidCache::run`].
    pub fn new(node: Arc<NodeIdentity>, cfg: CacheConfig) -> Arc<Self> {
        let bundle = node.bundle().borrow().clone();
        let (state, _) = watch::channel(Arc::new(Snapshot {
            bundle,
            ..Default::default()
        }));
        Arc::new(Self {
            node,
            cfg,
            state,
            wake: Notify::new(),
            forced: AtomicBool::new(false),
        })
    }

    /// Follows every change of the cache.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.state.subscribe()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.borrow().clone()
    }

    /// The node identity behind the cache.
    pub fn node(&self) -> &Arc<NodeIdentity> {
        &self.node
    }

    /// Asks for an entry sync now (rate-limited) and waits up to `timeout` for it.
    pub async fn sync_now(&self, timeout: Duration) -> Arc<Snapshot> {
        let mut rx = self.subscribe();
        let start = rx.borrow().syncs;
        self.forced.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|s| s.syncs > start)).await;
        self.snapshot()
    }

    fn publish(&self, f: impl FnOnce(&mut Snapshot)) {
        let mut next = (**self.state.borrow()).clone();
        f(&mut next);
        self.state.send_replace(Arc::new(next));
    }

    /// Keeps entries and SVIDs fresh, forever. CA failures keep what is cached and retry
    /// with capped exponential backoff and jitter.
    pub async fn run(self: Arc<Self>) {
        let schedule = RenewalSchedule::default();
        let mut backoff = Backoff::for_ca();
        let mut bundle_rx = self.node.bundle();
        let mut node_rx = self.node.installed();
        let mut next_sync = Instant::now();
        let mut budget =
            SyncBudget::new(FORCED_SYNC_BURST, FORCED_SYNCS_PER_SECOND, Instant::now());
        let mut retry_at: Option<Instant> = None;
        let mut refused: HashMap<String, Instant> = HashMap::new();
        loop {
            let now = Instant::now();
            let can_call = retry_at.is_none_or(|t| now >= t);
            let wants = self.forced.load(Ordering::SeqCst) && can_call;
            let took_token = wants && now < next_sync && budget.try_take(now);
            let forced = wants && (now >= next_sync || took_token);
            let mut failed = false;
            if can_call && (forced || now >= next_sync) {
                self.forced.store(false, Ordering::SeqCst);
                next_sync = now + self.cfg.entry_refresh;
                match self.sync_entries().await {
                    // A forced sync that found a new entry was a new workload, not abuse:
                    // it does not count against the budget.
                    Ok(true) if took_token => budget.refund(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "could not fetch registration entries; keeping the cached ones");
                        failed = true;
                    }
                }
                self.publish(|s| s.syncs += 1);
            } else if self.forced.load(Ordering::SeqCst) && !can_call {
                // In backoff: answer the waiters with what is cached.
                self.forced.store(false, Ordering::SeqCst);
                self.publish(|s| s.syncs += 1);
            }
            if can_call && !failed {
                refused.retain(|_, t| *t > now);
                let due = self.due(&schedule, &refused);
                if !due.is_empty() {
                    if let Err(e) = self.issue(due, &mut refused).await {
                        tracing::warn!(error = %e, "workload SVID renewal failed; keeping the cached SVIDs");
                        failed = true;
                    }
                }
            }
            let (expired, next_expiry) = self.expiry();
            if expired > 0 {
                // An SVID expired while in backoff: do not sleep out a long wait.
                let latest = Instant::now() + URGENT_RETRY_MAX;
                retry_at = retry_at.map(|r| r.min(latest));
            }
            if failed {
                let cap = if expired > 0 {
                    URGENT_RETRY_MAX
                } else {
                    Duration::MAX
                };
                let wait = backoff.next_delay_within(rand::random(), cap);
                metrics::gauge!(m::CA_BACKOFF_SECONDS).set(wait.as_secs_f64());
                tracing::warn!(retry_in = ?wait, expired, failures = backoff.failures(), "CA call for workload SVIDs failed; retrying");
                retry_at = Some(Instant::now() + wait);
            } else if can_call {
                backoff.reset();
                retry_at = None;
            }
            let mut wake = next_sync.min(self.next_refresh(&schedule));
            if let Some(t) = refused.values().min() {
                wake = wake.min(*t);
            }
            if self.forced.load(Ordering::SeqCst) {
                wake = wake.min(budget.next_at(now));
            }
            if let Some(r) = retry_at {
                wake = wake.max(r);
                // Wake when an SVID expires, to shorten the wait (above).
                if let Some(e) = next_expiry {
                    wake = wake.min(e.max(now));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.wake.notified() => {}
                changed = bundle_rx.changed() => {
                    if changed.is_ok() {
                        let bundle = bundle_rx.borrow_and_update().clone();
                        self.publish(|s| s.bundle = bundle);
                    }
                }
                changed = node_rx.changed() => {
                    node_rx.borrow_and_update();
                    if changed.is_ok() && retry_at.is_some() {
                        // The node just got a new SVID: the CA answers again (after an
                        // outage, often with a node SVID that had expired). Retry now
                        // instead of sleeping out this loop's own backoff.
                        tracing::info!("node SVID renewed; retrying workload SVIDs now");
                        retry_at = None;
                        backoff.reset();
                    }
                }
            }
        }
    }

    #[tracing::instrument(skip(self), fields(node = %self.node.node()))]
    /// Fetches the entries; `Ok(true)` when they changed.
    async fn sync_entries(&self) -> Result<bool, ClientError> {
        let entries = match self.node.client().entries().await {
            Ok(e) => e,
            Err(e) => {
                ca_failed("entries");
                return Err(e);
            }
        };
        ca_ok();
        metrics::gauge!(m::ENTRIES).set(entries.len() as f64);
        let snap = self.snapshot();
        if *snap.entries == entries {
            return Ok(false);
        }
        tracing::info!(entries = entries.len(), "registration entries changed");
        self.publish(|s| {
            s.svids.retain(|id, _| entries.iter().any(|e| &e.id == id));
            s.entries = Arc::new(entries);
        });
        Ok(true)
    }

    /// Entries that need an SVID now: none yet, issued for an older version of the entry,
    /// or past half-life.
    fn due(
        &self,
        schedule: &RenewalSchedule,
        refused: &HashMap<String, Instant>,
    ) -> Vec<RegistrationEntry> {
        let snap = self.snapshot();
        let now = OffsetDateTime::now_utc();
        snap.entries
            .iter()
            .filter(|e| !refused.contains_key(&e.id))
            .filter(|e| match snap.svids.get(&e.id) {
                None => true,
                Some(w) => w.entry != **e || schedule.next(now, &w.svid.lifetime) == Renewal::Due,
            })
            .cloned()
            .collect()
    }

    fn next_refresh(&self, schedule: &RenewalSchedule) -> Instant {
        let snap = self.snapshot();
        let now = OffsetDateTime::now_utc();
        let far = Instant::now() + Duration::from_secs(3600);
        snap.svids
            .values()
            .map(|w| match schedule.next(now, &w.svid.lifetime) {
                Renewal::Due => Instant::now(),
                Renewal::In(d) => Instant::now() + d,
            })
            .min()
            .map_or(far, |t| t.min(far))
    }

    /// Workload SVIDs past their `notAfter` (also set as a gauge), and when the next one
    /// of the others expires.
    fn expiry(&self) -> (usize, Option<Instant>) {
        let now = OffsetDateTime::now_utc();
        let snap = self.snapshot();
        let (expired, live): (Vec<_>, Vec<_>) = snap
            .svids
            .values()
            .partition(|w| RenewalSchedule::is_expired(now, &w.svid.lifetime));
        metrics::gauge!(m::WORKLOAD_SVIDS_EXPIRED).set(expired.len() as f64);
        let next = live
            .iter()
            .map(|w| w.svid.lifetime.not_after - now)
            .min()
            .and_then(|left| Duration::try_from(left).ok())
            .map(|left| Instant::now() + left);
        (expired.len(), next)
    }

    #[tracing::instrument(skip_all, fields(count = due.len()))]
    async fn issue(
        &self,
        due: Vec<RegistrationEntry>,
        refused: &mut HashMap<String, Instant>,
    ) -> Result<(), ClientError> {
        let ttl = self.cfg.workload_ttl.map(|d| d.as_secs().max(1));
        for chunk in due.chunks(MAX_BATCH) {
            let mut keys = Vec::with_capacity(chunk.len());
            let mut csrs = Vec::with_capacity(chunk.len());
            for entry in chunk {
                let made = SpiffeId::parse(&entry.spiffe_id)
                    .map_err(|e| e.to_string())
                    .and_then(|id| KeyAndCsr::generate(&id).map_err(|e| e.to_string()));
                match made {
                    Ok(kc) => {
                        csrs.push(CsrRequest {
                            csr: kc.csr_pem,
                            ttl_secs: ttl,
                        });
                        keys.push((entry, kc.key_pkcs8));
                    }
                    Err(e) => {
                        tracing::warn!(entry = %entry.id, id = %entry.spiffe_id, error = %e, "cannot make a CSR for entry");
                        refused.insert(entry.id.clone(), Instant::now() + REFUSAL_RETRY);
                    }
                }
            }
            if csrs.is_empty() {
                continue;
            }
            let resp = match self.node.client().workload_batch(csrs).await {
                Ok(r) => r,
                Err(e) => {
                    ca_failed("workload");
                    return Err(e);
                }
            };
            ca_ok();
            let now = OffsetDateTime::now_utc();
            let mut issued = Vec::new();
            for ((entry, key), item) in keys.into_iter().zip(resp.results) {
                match item {
                    BatchItem::Ok(svid) => {
                        self.node.update_bundle(&svid.bundle_pem);
                        match Svid::from_response(&svid, key, now) {
                            Ok(s) => issued.push(WorkloadSvid {
                                entry: entry.clone(),
                                svid: s,
                            }),
                            Err(e) => {
                                tracing::warn!(entry = %entry.id, error = %e, "CA answer unusable");
                                refused.insert(entry.id.clone(), Instant::now() + REFUSAL_RETRY);
                            }
                        }
                    }
                    BatchItem::Err(api) => {
                        metrics::counter!(m::WORKLOAD_SVIDS_REFUSED_TOTAL, "code" => api.code.clone())
                            .increment(1);
                        tracing::warn!(entry = %entry.id, id = %entry.spiffe_id, code = %api.code, message = %api.message, "CA refused a workload SVID");
                        refused.insert(entry.id.clone(), Instant::now() + REFUSAL_RETRY);
                    }
                }
            }
            metrics::counter!(m::WORKLOAD_SVIDS_ISSUED_TOTAL).increment(issued.len() as u64);
            tracing::debug!(count = issued.len(), "workload SVIDs issued");
            let bundle = self.node.bundle().borrow().clone();
            self.publish(|s| {
                s.bundle = bundle;
                for w in issued {
                    s.svids.insert(w.entry.id.clone(), Arc::new(w));
                }
            });
        }
        Ok(())
    }
}
