//! [`ClusterPolicy`]: every resilience policy of one cluster behind the two points of the
//! upstream layer (pick an endpoint, report an outcome) plus a [`snapshot`] for
//! `/clusters`. It combines the [`Balancer`], the [`OutlierDetector`], the active health
//! results, the [`CircuitBreaker`], the [`RetryPolicy`] with its [`RetryBudget`], and the
//! latency window behind per-try timeouts and hedging; it emits the
//! [`metrics`](super::metrics) and keeps the last failure events for the dashboard.
//!
//! An endpoint gets traffic while its last active health verdict is healthy, it is not
//! ejected, and its zone is not drained ([`PolicyEvent`]s say when that changes).
//!
//! # Adopting it in `cluster.rs`
//!
//! Keep one `std::sync::Mutex<ClusterPolicy>` per cluster (never held across `.await`):
//!
//! ```ignore
//! // construction (seed: e.g. from the cluster name, or rand::random()):
//! let policy = Mutex::new(ClusterPolicy::new(name, resilience_config, local_zone.map(|z| Zone::new(&z)), seed));
//! // whenever the endpoint table changes:
//! policy.lock().expect("policy").set_endpoints(now, eps.iter().map(|e| EndpointSpec {
//!     id: EndpointId(e.address), zone: e.zone.as_deref().map_or_else(Zone::unknown, Zone::new),
//!     tier: Tier(e.priority), weight: e.weight }));
//! // per request: admission, then per try pick / report:
//! policy.lock().expect("policy").start_request()?;            // Err(CircuitOpen) -> 503 + OVERFLOW_HEADER
//! let pick = policy.lock().expect("policy").pick(now, &tried, prefer_other_zone);  // None -> 503 no endpoint
//! let timeout = policy.lock().expect("policy").per_try_timeout(Some(deadline - now));
//! // ... the try ...
//! policy.lock().expect("policy").report(now, pick.endpoint, latency, outcome); // outcome: see below
//! match policy.lock().expect("policy").retry(outcome, ctx) { Ok(r) => /* sleep r.backoff, finish_retry(in_budget) after */, Err(_) => /* answer */ }
//! policy.lock().expect("policy").finish_request();
//! // background: tick at next_deadline(); health reports from health::probe::run:
//! policy.lock().expect("policy").on_health_report(&report);
//! // GET /clusters:
//! serde_json::to_value(policy.lock().expect("policy").snapshot(now))
//! ```
//!
//! Outcomes from the upstream layer map as: a response head -> `Outcome::Response {
//! status }`; `FailureKind::{Connect, Tls, Identity}` -> `Outcome::ConnectFailure` (never
//! sent); `Timeout` -> `Outcome::Timeout`; `Protocol` -> `Outcome::Reset`; a dropped try
//! (client gone, hedge lost) -> `Outcome::Cancelled`.
//!
//! [`snapshot`]: ClusterPolicy::snapshot

use std::collections::{HashSet, VecDeque};
use std::sync::OnceLock;
use std::time::Duration;

use metrics::Counter;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::time::Instant;

use super::balance::{Balancer, EndpointSpec, Pick, PickReason};
use super::breaker::{CircuitBreaker, CircuitOpen, Resource};
use super::config::ClusterResilience;
use super::health::probe::CheckReport;
use super::health::Transition;
use super::metrics as m;
use super::outlier::{EjectionTarget, OutlierDetector};
use super::retry::{NoRetry, Retry, RetryBudget, RetryPolicy, TryContext};
use super::timeout::{LatencyWindow, PerTryTimeout};
use super::{EndpointId, Outcome, Zone};

mod view;

use view::millis;
pub use view::{BudgetView, ClusterSnapshot, EndpointView, EventView, PolicyEvent};

/// Failure events kept for the dashboard.
const EVENTS_KEPT: usize = 64;
/// The latency window behind per-try timeouts and hedging.
const LATENCY_WINDOW: Duration = Duration::from_secs(10);

/// The resilience state of one cluster.
#[derive(Debug)]
pub struct ClusterPolicy {
    name: String,
    local_zone: Option<Zone>,
    balancer: Balancer,
    outlier: OutlierDetector,
    failing_checks: HashSet<EndpointId>,
    breaker: CircuitBreaker,
    retry: RetryPolicy,
    budget: RetryBudget,
    per_try: PerTryTimeout,
    latency: LatencyWindow,
    rng: SmallRng,
    major_zone: Option<Zone>,
    events: VecDeque<(Instant, PolicyEvent)>,
    /// `meshedge_edge_picks_total` handles by pick reason, registered on first use.
    picks: [OnceLock<Counter>; PICK_REASONS],
}

/// The number of [`PickReason`] variants (`Fallback` is the last).
const PICK_REASONS: usize = 7;
const _: () = assert!(PickReason::Fallback as usize + 1 == PICK_REASONS);

// === impl ClusterPolicy ===

impl ClusterPolicy {
    /// The policy of cluster `name` for a gateway in `local_zone`; `seed` seeds the
    /// balancer's RNG (tests pass a constant, the gateway a random value).
    pub fn new(
        name: impl Into<String>,
        config: ClusterResilience,
        local_zone: Option<Zone>,
        seed: u64,
    ) -> Self {
        Self {
            name: name.into(),
            balancer: Balancer::new(config.balancer.clone(), local_zone.clone()),
            local_zone,
            outlier: OutlierDetector::new(config.outlier.clone()),
            failing_checks: HashSet::new(),
            breaker: CircuitBreaker::new(config.circuit_breaker.clone()),
            budget: RetryBudget::new(&config.retry),
            per_try: PerTryTimeout::new(config.retry.per_try_timeout.clone()),
            retry: RetryPolicy::new(config.retry),
            latency: LatencyWindow::new(LATENCY_WINDOW),
            rng: SmallRng::seed_from_u64(seed),
            major_zone: None,
            events: VecDeque::new(),
            picks: Default::default(),
        }
    }

    /// Replaces the endpoint set (from discovery or the static config).
    pub fn set_endpoints(&mut self, now: Instant, specs: impl IntoIterator<Item = EndpointSpec>) {
        let specs: Vec<EndpointSpec> = specs.into_iter().collect();
        self.outlier
            .set_endpoints(specs.iter().map(|s| (s.id, s.zone.clone())));
        let ids: HashSet<EndpointId> = specs.iter().map(|s| s.id).collect();
        self.failing_checks.retain(|id| ids.contains(id));
        self.balancer.set_endpoints(specs);
        self.sync(now);
    }

    /// Admits a client request (circuit breaker `max_requests`); pair with
    /// [`finish_request`](Self::finish_request) when it is answered.
    pub fn start_request(&mut self) -> Result<(), CircuitOpen> {
        self.acquire(Resource::Requests)?;
        self.budget.request_started();
        Ok(())
    }

    /// A request admitted by [`start_request`](Self::start_request) was answered.
    pub fn finish_request(&mut self) {
        self.breaker.release(Resource::Requests);
        self.budget.request_finished();
    }

    /// Takes one unit of a breaker resource (connections and pending requests are the
    /// pool's to take); refusals are counted.
    pub fn acquire(&mut self, resource: Resource) -> Result<(), CircuitOpen> {
        self.breaker.try_acquire(resource).inspect_err(|e| {
            metrics::counter!(m::CIRCUIT_OPEN_TOTAL, "cluster" => self.name.clone(), "reason" => e.resource.as_str())
                .increment(1);
        })
    }

    /// Gives back a unit taken with [`acquire`](Self::acquire).
    pub fn release(&mut self, resource: Resource) {
        self.breaker.release(resource);
    }

    /// THE pick: an endpoint for one try, counted in flight until [`report`](Self::report).
    pub fn pick(
        &mut self,
        now: Instant,
        exclude: &[EndpointId],
        prefer_other_zone: bool,
    ) -> Option<Pick> {
        let pick = self
            .balancer
            .pick(now, &mut self.rng, exclude, prefer_other_zone)?;
        self.balancer.start(pick.endpoint);
        let reason = pick.decision.reason;
        self.picks[reason as usize]
            .get_or_init(|| {
                metrics::counter!(m::PICKS_TOTAL, "cluster" => self.name.clone(), "reason" => reason.as_str())
            })
            .increment(1);
        Some(pick)
    }

    /// THE report: how a picked try ended, after `latency`. Returns what changed.
    pub fn report(
        &mut self,
        now: Instant,
        endpoint: EndpointId,
        latency: Duration,
        outcome: Outcome,
    ) -> Vec<PolicyEvent> {
        self.balancer.finish(endpoint, now, latency, outcome);
        if outcome.is_success() {
            self.latency.record(now, latency);
        }
        if outcome == Outcome::Timeout {
            metrics::counter!(m::PER_TRY_TIMEOUTS_TOTAL, "cluster" => self.name.clone())
                .increment(1);
        }
        let Some(ejection) = self.outlier.record(now, endpoint, outcome) else {
            return Vec::new();
        };
        metrics::counter!(m::EJECTIONS_TOTAL, "cluster" => self.name.clone(), "reason" => ejection.reason.as_str())
            .increment(1);
        let duration_ms = millis(ejection.duration);
        let event = match ejection.target {
            EjectionTarget::Endpoint(endpoint) => PolicyEvent::Ejected {
                endpoint,
                reason: ejection.reason.as_str(),
                duration_ms,
            },
            EjectionTarget::Zone(zone) => PolicyEvent::ZoneDrained { zone, duration_ms },
        };
        tracing::warn!(cluster = %self.name, ?event, "outlier ejection");
        self.push(now, vec![event])
    }

    /// Decides about a failed try and, for a retry, takes room in the retry budget (not for
    /// a request that was never sent) and the breaker's `max_retries`; call
    /// [`finish_retry`](Self::finish_retry) (saying whether it was in the budget) when that
    /// retry ends. Pass `retry.prefer_other_zone` and the tried endpoints to `pick`.
    pub fn retry(&mut self, outcome: Outcome, ctx: TryContext) -> Result<Retry, NoRetry> {
        let in_budget = !(ctx.never_sent || outcome == Outcome::ConnectFailure);
        let decision = self
            .retry
            .decide(outcome, ctx, &self.budget, &mut self.rng)
            .and_then(|r| self.take_retry_room(in_budget).map(|()| r));
        match &decision {
            Ok(_) => metrics::counter!(m::RETRIES_TOTAL, "cluster" => self.name.clone(), "reason" => outcome.label())
                .increment(1),
            Err(e) => metrics::counter!(m::RETRIES_SKIPPED_TOTAL, "cluster" => self.name.clone(), "reason" => e.as_str())
                .increment(1),
        }
        decision
    }

    /// Takes room for a hedge (same budget as retries); call
    /// [`finish_retry`](Self::finish_retry) when the hedge ends.
    pub fn start_hedge(&mut self) -> Result<(), NoRetry> {
        self.take_retry_room(true)?;
        metrics::counter!(m::HEDGES_TOTAL, "cluster" => self.name.clone()).increment(1);
        Ok(())
    }

    fn take_retry_room(&mut self, in_budget: bool) -> Result<(), NoRetry> {
        if in_budget {
            if let Err(e) = self.budget.try_acquire() {
                metrics::counter!(m::RETRY_BUDGET_EXHAUSTED_TOTAL, "cluster" => self.name.clone())
                    .increment(1);
                return Err(e);
            }
        }
        if self.acquire(Resource::Retries).is_err() {
            if in_budget {
                self.budget.release();
            }
            return Err(NoRetry::CircuitOpen);
        }
        Ok(())
    }

    /// A retry or hedge ended.
    pub fn finish_retry(&mut self, in_budget: bool) {
        if in_budget {
            self.budget.release();
        }
        self.breaker.release(Resource::Retries);
    }

    /// When an unanswered idempotent try should be hedged (from the recent p90).
    pub fn hedge_delay(&self) -> Option<Duration> {
        self.retry.hedge_delay(self.latency.quantile(0.9))
    }

    /// The timeout of the next try, given the time the request has left.
    pub fn per_try_timeout(&self, remaining: Option<Duration>) -> Duration {
        self.per_try.timeout(self.latency.quantile(0.99), remaining)
    }

    /// Folds in one active health check from [`health::probe::run`](super::health::probe::run).
    pub fn on_health_report(&mut self, report: &CheckReport) -> Vec<PolicyEvent> {
        let now = report.at;
        let mut events = Vec::new();
        match report.transition {
            Transition::BecameHealthy => {
                self.failing_checks.remove(&report.endpoint);
            }
            Transition::BecameUnhealthy => {
                self.failing_checks.insert(report.endpoint);
            }
            Transition::Unchanged => {}
        }
        if report.transition != Transition::Unchanged {
            let healthy = report.transition == Transition::BecameHealthy;
            metrics::counter!(m::HEALTH_TRANSITIONS_TOTAL, "cluster" => self.name.clone(),
                "result" => if healthy { "healthy" } else { "unhealthy" })
            .increment(1);
            events.push(PolicyEvent::Health {
                endpoint: report.endpoint,
                healthy,
            });
        }
        let outlier = self
            .outlier
            .on_health_check(report.endpoint, report.result.is_pass());
        events.extend(outlier.into_iter().map(PolicyEvent::from));
        self.push(now, events)
    }

    /// Ends ejections and drains that are over, runs the interval statistics; call at
    /// [`next_deadline`](Self::next_deadline) (and at least every second for gauges).
    pub fn tick(&mut self, now: Instant) -> Vec<PolicyEvent> {
        self.latency.expire(now);
        let events: Vec<PolicyEvent> = self
            .outlier
            .tick(now)
            .into_iter()
            .map(PolicyEvent::from)
            .collect();
        self.push(now, events)
    }

    /// When [`tick`](Self::tick) must run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.outlier.next_deadline()
    }

    /// Records events, re-derives availability, returns the events.
    fn push(&mut self, now: Instant, events: Vec<PolicyEvent>) -> Vec<PolicyEvent> {
        for e in &events {
            if self.events.len() == EVENTS_KEPT {
                self.events.pop_back();
            }
            self.events.push_front((now, e.clone()));
        }
        self.sync(now);
        events
    }

    /// Pushes health, ejection and drain state into the balancer; updates the gauges.
    fn sync(&mut self, _now: Instant) {
        let ids: Vec<EndpointId> = self.balancer.endpoints().map(|s| s.id).collect();
        for id in ids {
            let available = !self.failing_checks.contains(&id) && !self.outlier.is_ejected(id);
            self.balancer.set_healthy(id, available);
        }
        let dist = self.balancer.distribution();
        let cluster = self.name.clone();
        let panic = dist.tiers.iter().any(|t| t.panic && t.load > 0.0);
        metrics::gauge!(m::PANIC_MODE, "cluster" => cluster.clone()).set(if panic {
            1.0
        } else {
            0.0
        });
        let mut major: Option<(f64, Zone)> = None;
        for z in dist.tiers.iter().flat_map(|t| &t.zones) {
            metrics::gauge!(m::ZONE_TRAFFIC_SHARE, "cluster" => cluster.clone(), "zone" => z.zone.to_string())
                .set(z.traffic);
            if major.as_ref().is_none_or(|(t, _)| z.traffic > *t) {
                major = Some((z.traffic, z.zone.clone()));
            }
        }
        let major = major.map(|(_, z)| z);
        if major != self.major_zone {
            if let (Some(from), Some(to)) = (&self.major_zone, &major) {
                metrics::counter!(m::ZONE_SHIFT_TOTAL, "cluster" => cluster.clone(),
                    "from" => from.to_string(), "to" => to.to_string())
                .increment(1);
                tracing::warn!(cluster = %cluster, %from, %to, "traffic moved to another zone");
            }
            self.major_zone = major;
        }
        let ejected = self
            .balancer
            .endpoints()
            .filter(|s| self.outlier.is_ejected(s.id))
            .count();
        metrics::gauge!(m::EJECTED, "cluster" => cluster).set(ejected as f64);
    }

    /// The `/clusters` view at `now`.
    pub fn snapshot(&mut self, now: Instant) -> ClusterSnapshot {
        let endpoints = self
            .balancer
            .endpoints()
            .map(|s| EndpointView {
                endpoint: s.id,
                zone: s.zone.clone(),
                tier: s.tier,
                weight: s.weight,
                available: self.balancer.is_healthy(s.id).unwrap_or(false),
                health_check_healthy: !self.failing_checks.contains(&s.id),
                outlier: self.outlier.status(s.id, now),
                load: self.balancer.load(s.id, now),
            })
            .collect();
        let (active_requests, retries_in_flight) = self.budget.counts();
        ClusterSnapshot {
            cluster: self.name.clone(),
            local_zone: self.local_zone.clone(),
            distribution: self.balancer.distribution(),
            endpoints,
            circuit_breaker: self.breaker.usage(),
            retry_budget: BudgetView {
                active_requests,
                retries_in_flight,
                limit: self.budget.limit(),
            },
            latency: self.latency.summary(),
            ejections_overflow: self.outlier.overflow_total(),
            events: self
                .events
                .iter()
                .map(|(at, event)| EventView {
                    ago_ms: millis(now.saturating_duration_since(*at)),
                    event: event.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
#[path = "cluster_state/tests.rs"]
mod tests;
