//! The circuit breaker of a cluster: Envoy's thresholds (max connections, pending
//! requests, requests, retries; 1024 each by default) as counters. When a resource is at
//! its limit, the request is answered at once with 503 and the header
//! [`OVERFLOW_HEADER`] naming the resource, instead of queueing behind a failing or
//! overloaded cluster.

use serde::Serialize;

use super::config::CircuitBreakerConfig;

/// Response header on a breaker's 503, e.g. `x-meshedge-circuit-open: max_requests`.
pub const OVERFLOW_HEADER: &str = "x-meshedge-circuit-open";

/// A resource the breaker limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// Upstream connections.
    Connections,
    /// Requests waiting for a connection.
    PendingRequests,
    /// Requests in flight.
    Requests,
    /// Retries and hedges in flight.
    Retries,
}

impl Resource {
    /// The config key and metric label, e.g. `max_requests`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connections => "max_connections",
            Self::PendingRequests => "max_pending_requests",
            Self::Requests => "max_requests",
            Self::Retries => "max_retries",
        }
    }
}

/// A refusal: the resource is at its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open: {} ({limit}) reached", resource.as_str())]
pub struct CircuitOpen {
    /// Which resource.
    pub resource: Resource,
    /// Its limit.
    pub limit: u32,
}

impl CircuitOpen {
    /// The HTTP status to answer with.
    pub const STATUS: u16 = 503;
}

/// Usage of each resource, for `/clusters`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BreakerUsage {
    /// Connections open.
    pub connections: u32,
    /// Requests waiting for a connection.
    pub pending_requests: u32,
    /// Requests in flight.
    pub requests: u32,
    /// Retries in flight.
    pub retries: u32,
}

/// The breaker of one cluster.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    usage: BreakerUsage,
}

// === impl CircuitBreaker ===

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self {
            config,
            usage: BreakerUsage::default(),
        }
    }

    fn slot(&mut self, resource: Resource) -> (&mut u32, u32) {
        let c = &self.config;
        match resource {
            Resource::Connections => (&mut self.usage.connections, c.max_connections),
            Resource::PendingRequests => (&mut self.usage.pending_requests, c.max_pending_requests),
            Resource::Requests => (&mut self.usage.requests, c.max_requests),
            Resource::Retries => (&mut self.usage.retries, c.max_retries),
        }
    }

    /// Takes one unit of `resource`, or refuses when it is at its limit.
    pub fn try_acquire(&mut self, resource: Resource) -> Result<(), CircuitOpen> {
        let (used, limit) = self.slot(resource);
        if *used >= limit {
            return Err(CircuitOpen { resource, limit });
        }
        *used += 1;
        Ok(())
    }

    /// Gives back one unit of `resource`.
    pub fn release(&mut self, resource: Resource) {
        let (used, _) = self.slot(resource);
        *used = used.saturating_sub(1);
    }

    /// Whether `resource` is at its limit (the circuit is open for it).
    pub fn is_open(&mut self, resource: Resource) -> bool {
        let (used, limit) = self.slot(resource);
        *used >= limit
    }

    /// Current usage.
    pub fn usage(&self) -> BreakerUsage {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_resource_refuses_at_its_limit() {
        let config = CircuitBreakerConfig {
            max_connections: 2,
            max_pending_requests: 1,
            max_requests: 3,
            max_retries: 0,
        };
        // (resource, units that fit)
        let cases = [
            (Resource::Connections, 2),
            (Resource::PendingRequests, 1),
            (Resource::Requests, 3),
            (Resource::Retries, 0),
        ];
        for (resource, fit) in cases {
            let mut b = CircuitBreaker::new(config.clone());
            for _ in 0..fit {
                assert_eq!(b.try_acquire(resource), Ok(()), "{resource:?}");
            }
            let err = b.try_acquire(resource).expect_err("at the limit");
            assert_eq!(
                err,
                CircuitOpen {
                    resource,
                    limit: fit
                }
            );
            assert!(b.is_open(resource));
            assert!(err.to_string().contains(resource.as_str()), "{err}");
            if fit > 0 {
                b.release(resource);
                assert!(!b.is_open(resource));
                assert_eq!(
                    b.try_acquire(resource),
                    Ok(()),
                    "{resource:?} after release"
                );
            }
            b.release(resource);
            b.release(resource);
            b.release(resource);
            b.release(resource);
            assert_eq!(b.usage(), BreakerUsage::default(), "release saturates at 0");
        }
    }

    #[test]
    fn resources_are_independent() {
        let mut b = CircuitBreaker::new(CircuitBreakerConfig {
            max_requests: 1,
            ..CircuitBreakerConfig::default()
        });
        assert_eq!(b.try_acquire(Resource::Requests), Ok(()));
        assert!(b.try_acquire(Resource::Requests).is_err());
        assert_eq!(b.try_acquire(Resource::Connections), Ok(()));
        assert_eq!(
            b.usage(),
            BreakerUsage {
                connections: 1,
                requests: 1,
                ..BreakerUsage::default()
            }
        );
    }
}
