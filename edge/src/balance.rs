//! Choosing an endpoint among candidates, pure. Today: weighted round robin over the lowest
//! failover tier that has candidates. Issue 7 replaces [`RoundRobin`] with zone-aware
//! power-of-two-choices behind the same [`Balancer`] trait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::endpoint::EndpointState;

/// What a pick may consider.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickContext<'a> {
    /// 0 for the first try, then 1, 2, ... for retries and hedges.
    pub attempt: u32,
    /// Endpoints already tried for this request (avoided when others exist).
    pub exclude: &'a [std::net::SocketAddr],
}

/// The outcome of one upstream call, as reported to the balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response head arrived with this status.
    Response(http::StatusCode),
    /// The call failed before a response head.
    Failed(crate::upstream::FailureKind),
    /// The client went away or the request was cancelled (not the endpoint's fault).
    Cancelled,
}

impl Outcome {
    /// True when the endpoint should be counted as failing (gateway failure or 5xx).
    pub fn is_failure(&self) -> bool {
        match self {
            Self::Response(s) => s.is_server_error(),
            Self::Failed(_) => true,
            Self::Cancelled => false,
        }
    }
}

/// A balancing policy. `pick` and `report` are the only entry points; implementations keep
/// their own state (e.g. latency EWMAs) and must not block.
pub trait Balancer: Send + Sync + std::fmt::Debug {
    /// Index into `candidates` of the endpoint to use, or `None` when none is usable.
    fn pick(
        &self,
        candidates: &[std::sync::Arc<EndpointState>],
        ctx: &PickContext<'_>,
    ) -> Option<usize>;
    /// Learns from a finished call to `candidate` that took `latency`.
    fn report(&self, candidate: &EndpointState, outcome: Outcome, latency: Duration);
}

/// Weighted round robin over the lowest tier (SRV priority) with usable endpoints.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicU64,
}

impl Balancer for RoundRobin {
    fn pick(
        &self,
        candidates: &[std::sync::Arc<EndpointState>],
        ctx: &PickContext<'_>,
    ) -> Option<usize> {
        let usable = |e: &EndpointState| e.endpoint.weight > 0;
        let fresh = |e: &EndpointState| usable(e) && !ctx.exclude.contains(&e.endpoint.address);
        let pool: Vec<usize> = {
            let any_fresh = candidates.iter().any(|e| fresh(e));
            let ok = |e: &EndpointState| if any_fresh { fresh(e) } else { usable(e) };
            let tier = candidates
                .iter()
                .filter(|e| ok(e))
                .map(|e| e.endpoint.priority)
                .min()?;
            (0..candidates.len())
                .filter(|&i| ok(&candidates[i]) && candidates[i].endpoint.priority == tier)
                .collect()
        };
        let total: u64 = pool
            .iter()
            .map(|&i| u64::from(candidates[i].endpoint.weight))
            .sum();
        let mut point = self.next.fetch_add(1, Ordering::Relaxed) % total;
        for i in pool {
            let w = u64::from(candidates[i].endpoint.weight);
            if point < w {
                return Some(i);
            }
            point -= w;
        }
        None
    }

    fn report(&self, _candidate: &EndpointState, _outcome: Outcome, _latency: Duration) {}
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::endpoint::Endpoint;

    fn eps(spec: &[(u16, u32, u16)]) -> Vec<Arc<EndpointState>> {
        spec.iter()
            .map(|&(port, weight, priority)| {
                Arc::new(EndpointState::new(Endpoint {
                    address: ([127, 0, 0, 1], port).into(),
                    zone: None,
                    weight,
                    priority,
                }))
            })
            .collect()
    }

    fn ports(b: &RoundRobin, c: &[Arc<EndpointState>], ctx: PickContext<'_>, n: usize) -> Vec<u16> {
        (0..n)
            .map(|_| c[b.pick(c, &ctx).unwrap()].endpoint.address.port())
            .collect()
    }

    #[test]
    fn weighted_rotation_in_lowest_tier() {
        let b = RoundRobin::default();
        let c = eps(&[(1, 1, 0), (2, 2, 0), (3, 5, 1), (4, 0, 0)]);
        let got = ports(&b, &c, PickContext::default(), 6);
        assert_eq!(got, vec![1, 2, 2, 1, 2, 2]);
    }

    #[test]
    fn excluded_endpoints_avoided_then_tier_moves() {
        let b = RoundRobin::default();
        let c = eps(&[(1, 1, 0), (2, 1, 0), (3, 1, 1)]);
        let ex = [c[0].endpoint.address];
        let got = ports(
            &b,
            &c,
            PickContext {
                attempt: 1,
                exclude: &ex,
            },
            3,
        );
        assert_eq!(got, vec![2, 2, 2]);
        let ex = [c[0].endpoint.address, c[1].endpoint.address];
        let got = ports(
            &b,
            &c,
            PickContext {
                attempt: 2,
                exclude: &ex,
            },
            2,
        );
        assert_eq!(got, vec![3, 3]);
        let ex: Vec<_> = c.iter().map(|e| e.endpoint.address).collect();
        assert!(b
            .pick(
                &c,
                &PickContext {
                    attempt: 3,
                    exclude: &ex
                }
            )
            .is_some());
        assert!(b
            .pick(&eps(&[(1, 0, 0)]), &PickContext::default())
            .is_none());
        assert!(b.pick(&[], &PickContext::default()).is_none());
    }
}
