//! Whether a failed try is tried again, when, and where; and when a slow try gets a hedge.
//!
//! - **Retryable outcomes**: connect failure, reset, per-try timeout, and the statuses in
//!   `retriable_statuses` (502, 503, 504). Everything else goes back to the client.
//! - **Safe requests only**: idempotent methods (RFC 9110 section 9.2.2: GET, HEAD, OPTIONS,
//!   TRACE, PUT, DELETE), or any request that provably never left the gateway (a connect
//!   failure, or what the upstream layer knows was not sent, e.g. an HTTP/2
//!   `REFUSED_STREAM`).
//! - **Backoff**: full jitter (the AWS architecture blog's "exponential backoff and
//!   jitter"): retry `n` (from 0) waits uniform `0..=min(max_backoff, base_backoff x 2^n)`,
//!   25ms and 250ms by default. At most `max_retries` (2).
//! - **Where**: always another endpoint (the caller passes the tried ones to the
//!   balancer as `exclude`); after a network-level failure (connect failure, reset,
//!   timeout), which is what a lost or hung zone looks like, another zone too.
//! - **Budget** ([`RetryBudget`]): retries and hedges in flight may not exceed
//!   `budget_percent` (20%) of the active requests, with a floor of `budget_min_concurrent`
//!   (3), in the spirit of Envoy's `retry_budget` and Linkerd's retry budgets: during an
//!   outage retries add at most a fifth to the load instead of multiplying it.
//! - **Hedging** (Envoy's hedge policy, Finagle's backup requests): an idempotent try
//!   that has not answered after `max(p90 x hedge_multiplier, hedge_min_delay)` gets a
//!   second try to another zone, inside the same budget; the first answer wins.

use std::time::Duration;

use rand::Rng;
use serde::Serialize;

use super::config::RetryConfig;
use super::Outcome;

/// Why a failed try is not retried; a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum NoRetry {
    /// The outcome is not retryable (a success, a 500, a 4xx...).
    #[error("outcome is not retryable")]
    NotRetryable,
    /// The request is not idempotent and may have been sent.
    #[error("request is not idempotent and may have reached the upstream")]
    NotIdempotent,
    /// `max_retries` reached.
    #[error("retries exhausted")]
    Exhausted,
    /// The retry budget is spent.
    #[error("retry budget exhausted")]
    BudgetExhausted,
    /// The circuit breaker's `max_retries` is reached.
    #[error("circuit breaker max_retries reached")]
    CircuitOpen,
}

impl NoRetry {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotRetryable => "not_retryable",
            Self::NotIdempotent => "not_idempotent",
            Self::Exhausted => "exhausted",
            Self::BudgetExhausted => "budget_exhausted",
            Self::CircuitOpen => "circuit_open",
        }
    }
}

/// A retry to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// Wait this long first.
    pub backoff: Duration,
    /// Ask the balancer for another zone (`prefer_other_zone`).
    pub prefer_other_zone: bool,
}

/// What the upstream layer knows about a failed try's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TryContext {
    /// The method is idempotent (see [`is_idempotent`]).
    pub idempotent: bool,
    /// Nothing of the request reached the upstream.
    pub never_sent: bool,
    /// Retries already made for this request.
    pub retries: u32,
}

/// RFC 9110 section 9.2.2 idempotent methods.
pub fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

/// The retry policy of a cluster.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    config: RetryConfig,
}

// === impl RetryPolicy ===

impl RetryPolicy {
    /// The policy for `config`.
    pub fn new(config: RetryConfig) -> Self {
        Self { config }
    }

    /// Whether `outcome` may be retried at all.
    pub fn is_retryable(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::ConnectFailure | Outcome::Reset | Outcome::Timeout => true,
            Outcome::Response { status } => self.config.retriable_statuses.contains(&status),
            Outcome::Cancelled => false,
        }
    }

    /// Decides about a failed try. The budget is checked, not taken: the caller acquires
    /// it ([`RetryBudget::try_acquire`]) when the retry starts.
    pub fn decide<R: Rng + ?Sized>(
        &self,
        outcome: Outcome,
        ctx: TryContext,
        budget: &RetryBudget,
        rng: &mut R,
    ) -> Result<Retry, NoRetry> {
        if !self.is_retryable(outcome) {
            return Err(NoRetry::NotRetryable);
        }
        let never_sent = ctx.never_sent || outcome == Outcome::ConnectFailure;
        if !ctx.idempotent && !never_sent {
            return Err(NoRetry::NotIdempotent);
        }
        if ctx.retries >= self.config.max_retries {
            return Err(NoRetry::Exhausted);
        }
        // The budget bounds the extra work retries put on upstreams; a request that never
        // reached one (connect refused, TLS failure) costs them nothing, and when a zone
        // dies every request in flight to it fails at once: those always get their retry.
        if !never_sent && !budget.has_room() {
            return Err(NoRetry::BudgetExhausted);
        }
        Ok(Retry {
            backoff: self.backoff(ctx.retries, rng),
            prefer_other_zone: matches!(
                outcome,
                Outcome::ConnectFailure | Outcome::Reset | Outcome::Timeout
            ),
        })
    }

    /// Full-jitter backoff before retry number `retry` (0 for the first retry).
    pub fn backoff<R: Rng + ?Sized>(&self, retry: u32, rng: &mut R) -> Duration {
        let cap = self
            .config
            .base_backoff
            .saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .min(self.config.max_backoff);
        let nanos = cap.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(rng.random_range(0..=nanos))
    }

    /// How long after a try started a hedge should go out, given the recent p90 latency;
    /// `None` when hedging is off or nothing is known about latency yet.
    pub fn hedge_delay(&self, latency_p90: Option<Duration>) -> Option<Duration> {
        if !self.config.hedge {
            return None;
        }
        let p90 = latency_p90?;
        Some(
            p90.mul_f64(self.config.hedge_multiplier)
                .max(self.config.hedge_min_delay),
        )
    }

    /// Whether an idempotent try that started at `started` and has not answered by `now`
    /// should be hedged (the budget is the caller's to acquire).
    pub fn should_hedge(
        &self,
        now: tokio::time::Instant,
        started: tokio::time::Instant,
        latency_p90: Option<Duration>,
    ) -> bool {
        self.hedge_delay(latency_p90)
            .is_some_and(|d| now.saturating_duration_since(started) >= d)
    }
}

/// Retries (and hedges) in flight against active requests, per cluster.
#[derive(Debug, Clone, Serialize)]
pub struct RetryBudget {
    #[serde(skip)]
    percent: f64,
    #[serde(skip)]
    min_concurrent: u32,
    active: u32,
    retries: u32,
}

// === impl RetryBudget ===

impl RetryBudget {
    /// A budget of `budget_percent` of active requests with a floor of `budget_min_concurrent`.
    pub fn new(config: &RetryConfig) -> Self {
        Self {
            percent: config.budget_percent,
            min_concurrent: config.budget_min_concurrent,
            active: 0,
            retries: 0,
        }
    }

    /// Retries allowed in flight right now.
    pub fn limit(&self) -> u32 {
        let share = (f64::from(self.active) * self.percent / 100.0).floor() as u32;
        share.max(self.min_concurrent)
    }

    /// Whether one more retry fits.
    pub fn has_room(&self) -> bool {
        self.retries < self.limit()
    }

    /// A client request started (count once per request, not per try).
    pub fn request_started(&mut self) {
        self.active = self.active.saturating_add(1);
    }

    /// A client request finished.
    pub fn request_finished(&mut self) {
        self.active = self.active.saturating_sub(1);
    }

    /// Takes room for one retry or hedge; `Err` when the budget is spent.
    pub fn try_acquire(&mut self) -> Result<(), NoRetry> {
        if !self.has_room() {
            return Err(NoRetry::BudgetExhausted);
        }
        self.retries += 1;
        Ok(())
    }

    /// A retry or hedge taken with [`try_acquire`](Self::try_acquire) finished.
    pub fn release(&mut self) {
        self.retries = self.retries.saturating_sub(1);
    }

    /// Active requests and retries in flight.
    pub fn counts(&self) -> (u32, u32) {
        (self.active, self.retries)
    }
}

#[cfg(test)]
#[path = "retry/tests.rs"]
mod tests;
