//! A cluster: its endpoint source, its resilience policy ([`ClusterPolicy`]) and mTLS client,
//! and the two points every upstream call goes through: [`Cluster::pick`] (the one place an
//! endpoint is chosen: zone-aware power-of-two-choices) and [`Cluster::report`] (the one
//! place the outcome of a try is recorded: counters, outlier detection, latency window).
//! Admission (circuit breaker), retry and hedge room are guards ([`Admission`],
//! [`RetryRoom`]) that give their unit back when dropped. A background task per cluster
//! runs the policy's `tick` and one active health check per endpoint (`health`).

mod health;
mod probe;
mod status;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Response;
use metrics::Gauge;
use smallvec::SmallVec;
use tokio::time::Instant;

use crate::config::ClusterConfig;
use crate::endpoint::{Endpoint, EndpointSource, EndpointState};
use crate::metrics as m;
use crate::resilience::balance::{Decision, EndpointSpec};
use crate::resilience::breaker::{CircuitOpen, Resource};
use crate::resilience::cluster_state::ClusterPolicy;
use crate::resilience::retry::{NoRetry, Retry, TryContext};
use crate::resilience::{EndpointId, Outcome, Tier, Zone};
use crate::upstream::{
    ConnectionBreaker, FailureKind, Outgoing, ResponseBody, TryBudget, UpstreamClient,
    UpstreamError,
};

pub use probe::ProbeResult;
pub use status::{ClusterStatus, EndpointStatus};

/// No endpoint can take the request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cluster {cluster}: no usable endpoint")]
pub struct NoEndpoint {
    /// The cluster.
    pub cluster: String,
}

/// The policy outcome of a failed upstream call: connect, TLS and identity failures were
/// never sent; a timeout is a timeout; anything else after the request left is a reset.
pub fn failure_outcome(kind: FailureKind) -> Outcome {
    match kind {
        FailureKind::Connect | FailureKind::Tls | FailureKind::Identity => Outcome::ConnectFailure,
        FailureKind::Timeout => Outcome::Timeout,
        FailureKind::Protocol => Outcome::Reset,
        // Our own certificate or our own limit, not the endpoint: counts neither way.
        FailureKind::OwnSvidExpired | FailureKind::CircuitOpen => Outcome::Cancelled,
    }
}

/// The connector's view of the cluster's breaker: a weak handle, so that the pools (which
/// the connector lives in) do not keep a dropped cluster's policy alive.
struct PolicyBreaker(Weak<Mutex<ClusterPolicy>>);

impl ConnectionBreaker for PolicyBreaker {
    fn take(&self, resource: Resource) -> Result<(), CircuitOpen> {
        match self.0.upgrade() {
            Some(policy) => lock(&policy).acquire(resource),
            None => Ok(()),
        }
    }

    fn give_back(&self, resource: Resource) {
        if let Some(policy) = self.0.upgrade() {
            lock(&policy).release(resource);
        }
    }
}

fn lock(policy: &Mutex<ClusterPolicy>) -> MutexGuard<'_, ClusterPolicy> {
    policy.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An endpoint chosen for one try of a request. Hand it back to [`Cluster::report`]; a pick
/// dropped unreported (a lost hedge, a client gone) counts as cancelled.
pub struct Pick {
    state: Arc<EndpointState>,
    /// The cluster's policy, name and in-flight gauge (one reference count for the three).
    shared: Arc<Shared>,
    decision: Decision,
    started: Instant,
    reported: bool,
    /// Whether the cluster had another endpoint when this one was picked (a hedge needs one).
    alternatives: bool,
}

impl std::fmt::Debug for Pick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pick")
            .field("cluster", &self.shared.name)
            .field("endpoint", &self.state.endpoint.address)
            .field("decision", &self.decision)
            .field("reported", &self.reported)
            .finish_non_exhaustive()
    }
}

impl Pick {
    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.state.endpoint
    }

    /// Its address.
    pub fn address(&self) -> SocketAddr {
        self.state.endpoint.address
    }

    /// Why the balancer chose it (tier, zone, reason).
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// When the pick was made.
    pub fn started(&self) -> Instant {
        self.started
    }

    fn finish(&mut self, outcome: Outcome, now: Instant) {
        self.reported = true;
        let latency = now.saturating_duration_since(self.started);
        self.state.finish(outcome.is_5xx());
        lock(&self.shared.policy).report(now, EndpointId(self.address()), latency, outcome);
        if let Some(in_flight) = self.shared.in_flight.get() {
            in_flight.decrement(1.0);
        }
        if outcome.is_5xx() {
            metrics::counter!(m::UPSTREAM_FAILURES_TOTAL, "cluster" => self.shared.name.to_string(), "reason" => outcome.label())
                .increment(1);
        }
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        if !self.reported {
            self.finish(Outcome::Cancelled, crate::clock::now());
        }
    }
}

/// A request admitted by the circuit breaker; released when dropped.
#[derive(Debug)]
pub struct Admission(Arc<Mutex<ClusterPolicy>>);

impl Drop for Admission {
    fn drop(&mut self) {
        lock(&self.0).finish_request();
    }
}

/// Room for one retry or hedge in the retry budget and the breaker; released when dropped.
#[derive(Debug)]
pub struct RetryRoom(Arc<Mutex<ClusterPolicy>>, bool);

impl Drop for RetryRoom {
    fn drop(&mut self) {
        lock(&self.0).finish_retry(self.1);
    }
}

struct EndpointTable {
    version: u64,
    stale: bool,
    states: Vec<Arc<EndpointState>>,
}

/// What the cluster and its background task share.
struct Shared {
    config: ClusterConfig,
    name: Arc<str>,
    source: Arc<dyn EndpointSource>,
    table: ArcSwap<EndpointTable>,
    policy: Arc<Mutex<ClusterPolicy>>,
    client: UpstreamClient,
    /// `meshedge_edge_upstream_in_flight` for this cluster, registered on first use.
    in_flight: OnceLock<Gauge>,
}

impl Shared {
    /// The endpoint table, refreshed from the source when its version moved (counters of
    /// endpoints that stay are kept; the policy learns the new set).
    fn states(&self) -> Arc<EndpointTable> {
        let cur = self.table.load_full();
        let snap = self.source.snapshot();
        if snap.version == cur.version && snap.stale == cur.stale {
            return cur;
        }
        let states: Vec<Arc<EndpointState>> = snap
            .endpoints
            .iter()
            .map(|e| {
                cur.states
                    .iter()
                    .find(|s| s.endpoint == *e)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(EndpointState::new(e.clone())))
            })
            .collect();
        if snap.version != cur.version {
            let specs = states.iter().map(|s| spec(&s.endpoint));
            lock(&self.policy).set_endpoints(Instant::now(), specs);
        }
        let next = Arc::new(EndpointTable {
            version: snap.version,
            stale: snap.stale,
            states,
        });
        self.table.store(next.clone());
        next
    }
}

fn spec(e: &Endpoint) -> EndpointSpec {
    EndpointSpec {
        id: EndpointId(e.address),
        zone: e.zone.as_deref().map_or_else(Zone::unknown, Zone::new),
        tier: Tier(e.priority),
        weight: e.weight,
    }
}

/// One upstream cluster.
pub struct Cluster {
    shared: Arc<Shared>,
    background: Option<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.shared.config.name)
            .field("source", &self.shared.source)
            .finish_non_exhaustive()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(task) = &self.background {
            task.abort();
        }
    }
}

impl Cluster {
    /// A cluster over `source`, calling endpoints with `client`, with the policy of
    /// `config.resilience` for a gateway in `config.local_zone`. Inside a tokio runtime it
    /// starts its background task (policy tick, active health checks).
    pub fn new(
        config: ClusterConfig,
        source: Arc<dyn EndpointSource>,
        client: UpstreamClient,
    ) -> Self {
        let policy = ClusterPolicy::new(
            config.name.clone(),
            config.resilience.clone(),
            config.local_zone.as_deref().map(Zone::new),
            rand::random(),
        );
        let shared = Arc::new(Shared {
            name: config.name.as_str().into(),
            config,
            source,
            table: ArcSwap::from_pointee(EndpointTable {
                version: 0,
                stale: false,
                states: Vec::new(),
            }),
            policy: Arc::new(Mutex::new(policy)),
            client,
            in_flight: OnceLock::new(),
        });
        shared
            .client
            .attach_breaker(Arc::new(PolicyBreaker(Arc::downgrade(&shared.policy))));
        shared.states();
        let background = tokio::runtime::Handle::try_current().ok().map(|rt| {
            rt.spawn(health::background(Arc::downgrade(&shared)))
                .abort_handle()
        });
        Self { shared, background }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Its config.
    pub fn config(&self) -> &ClusterConfig {
        &self.shared.config
    }

    /// Admits a request (circuit breaker `max_requests`); `Err` -> answer 503 at once.
    pub fn admit(&self) -> Result<Admission, CircuitOpen> {
        lock(&self.shared.policy).start_request()?;
        Ok(Admission(self.shared.policy.clone()))
    }

    /// THE place an endpoint is chosen for a try of a request: not one of `exclude`, in
    /// another zone than those tried when `prefer_other_zone`.
    pub fn pick(
        &self,
        exclude: &[SocketAddr],
        prefer_other_zone: bool,
    ) -> Result<Pick, NoEndpoint> {
        let table = self.shared.states();
        let no_endpoint = || NoEndpoint {
            cluster: self.shared.config.name.clone(),
        };
        // On the stack: a request tries a handful of endpoints at most.
        let exclude: SmallVec<[EndpointId; 4]> = exclude.iter().copied().map(EndpointId).collect();
        let now = crate::clock::now();
        let pick = lock(&self.shared.policy)
            .pick(now, &exclude, prefer_other_zone)
            .ok_or_else(no_endpoint)?;
        let Some(state) = table
            .states
            .iter()
            .find(|s| s.endpoint.address == pick.endpoint.0)
        else {
            lock(&self.shared.policy).report(
                now,
                pick.endpoint,
                Duration::ZERO,
                Outcome::Cancelled,
            );
            return Err(no_endpoint());
        };
        state.start();
        self.shared
            .in_flight
            .get_or_init(|| {
                metrics::gauge!(m::UPSTREAM_IN_FLIGHT, "cluster" => self.shared.name.to_string())
            })
            .increment(1.0);
        Ok(Pick {
            state: state.clone(),
            shared: self.shared.clone(),
            decision: pick.decision,
            started: now,
            reported: false,
            alternatives: table.states.len() > 1,
        })
    }

    /// THE place the outcome of a try is recorded (counters, policy, metrics).
    pub fn report(&self, mut pick: Pick, outcome: Outcome, now: Instant) {
        pick.finish(outcome, now);
    }

    /// Whether a failed try is retried; `Ok` carries the backoff, the zone preference and
    /// the room taken in the retry budget (hold it while the retry runs).
    pub fn retry(&self, outcome: Outcome, ctx: TryContext) -> Result<(Retry, RetryRoom), NoRetry> {
        let in_budget = !(ctx.never_sent || outcome == Outcome::ConnectFailure);
        let r = lock(&self.shared.policy).retry(outcome, ctx)?;
        Ok((r, RetryRoom(self.shared.policy.clone(), in_budget)))
    }

    /// Room for a hedged try (same budget as retries).
    pub fn hedge_room(&self) -> Result<RetryRoom, NoRetry> {
        lock(&self.shared.policy).start_hedge()?;
        Ok(RetryRoom(self.shared.policy.clone(), true))
    }

    /// The timing of the try of `pick`, with one look at the policy: its timeout (the
    /// per-try timeout when `retryable`, a retry may follow; else the `remaining` time of
    /// the request) and, when `hedgeable` (idempotent and replayable), the delay after
    /// which an unanswered try gets a hedge (from the recent p90, shorter than the try's
    /// timeout). No hedge when hedging is off, no latency is known yet, or the cluster had a
    /// single endpoint at the pick: a hedge goes to another endpoint, so no timer is armed
    /// where none could be sent.
    pub fn try_timing(
        &self,
        pick: &Pick,
        remaining: Duration,
        retryable: bool,
        hedgeable: bool,
    ) -> (Duration, Option<Duration>) {
        let policy = lock(&self.shared.policy);
        let per_try = if retryable {
            policy.per_try_timeout(Some(remaining))
        } else {
            remaining
        };
        let hedge = (hedgeable && pick.alternatives)
            .then(|| policy.hedge_delay())
            .flatten()
            .filter(|d| *d < per_try);
        (per_try, hedge)
    }

    /// Sends `req` to the picked endpoint within `budget` (none: the caller bounds it).
    pub async fn send(
        &self,
        pick: &Pick,
        out: Outgoing,
        budget: Option<TryBudget>,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        self.shared.client.send(pick.address(), out, budget).await
    }

    /// `Some(notAfter)` when the gateway's own SVID has expired: nothing may be sent.
    pub fn own_svid_expired(&self) -> Option<time::OffsetDateTime> {
        self.shared.client.own_svid_expired()
    }

    /// Whole-request timeout unless the route sets one.
    pub fn request_timeout(&self) -> Duration {
        self.shared.config.request_timeout
    }

    /// State for `GET /clusters`.
    pub fn status(&self) -> ClusterStatus {
        let table = self.shared.states();
        let snapshot = lock(&self.shared.policy).snapshot(Instant::now());
        status::build(&self.shared, &table, snapshot)
    }
}
