//! Per-route rate limiters: one [`RateLimiter`] per route name, created on first use and
//! replaced when the route's `rate_limit` changes on reload.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use crate::headers::RequestFields;
use tokio::time::Instant;

use crate::resilience::config::RateLimitConfig;
use crate::resilience::rate_limit::{RateDecision, RateLimiter};

/// The rate limiters of all routes.
#[derive(Debug, Default)]
pub(super) struct RouteLimits {
    limiters: Mutex<HashMap<String, (RateLimitConfig, RateLimiter)>>,
}

impl RouteLimits {
    /// Takes a token for one request of `route`.
    pub(super) fn check(
        &self,
        route: &str,
        config: &RateLimitConfig,
        client: IpAddr,
        headers: RequestFields<'_>,
        spiffe_id: Option<&str>,
    ) -> RateDecision {
        let mut map = self.limiters.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = match map.get_mut(route) {
            Some(e) if e.0 == *config => e,
            _ => {
                map.insert(
                    route.to_owned(),
                    (config.clone(), RateLimiter::new(config.clone())),
                );
                map.get_mut(route).expect("just inserted")
            }
        };
        let key = entry.1.key(client, headers, spiffe_id);
        let decision = entry.1.check(Instant::now(), &key);
        if !decision.allowed {
            metrics::counter!(crate::resilience::metrics::RATE_LIMITED_TOTAL, "route" => route.to_owned())
                .increment(1);
        }
        decision
    }
}
