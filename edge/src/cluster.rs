//! A cluster: its endpoint source, balancer and mTLS client, and the two points every
//! upstream call goes through: [`Cluster::pick`] (the one place an endpoint is chosen) and
//! [`Cluster::report`] (the one place the outcome of a call is recorded). Issue 7's health
//! checks, outlier detection and retries plug in behind these two.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use serde::Serialize;
use tokio::time::Instant;

use crate::balance::{Balancer, Outcome, PickContext, RoundRobin};
use crate::config::ClusterConfig;
use crate::endpoint::{Endpoint, EndpointSource, EndpointState};
use crate::metrics as m;
use crate::upstream::{UpstreamBody, UpstreamClient, UpstreamError};

/// No endpoint can take the request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cluster {cluster}: no usable endpoint")]
pub struct NoEndpoint {
    /// The cluster.
    pub cluster: String,
}

/// An endpoint chosen for one try of a request. Hand it back to [`Cluster::report`]; a pick
/// dropped unreported counts as cancelled.
#[derive(Debug)]
pub struct Pick {
    state: Arc<EndpointState>,
    started: Instant,
    attempt: u32,
    reported: bool,
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

    /// Which try of the request this is (0 first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the pick was made.
    pub fn started(&self) -> Instant {
        self.started
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        if !self.reported {
            self.state.finish(false);
        }
    }
}

struct EndpointTable {
    version: u64,
    stale: bool,
    states: Vec<Arc<EndpointState>>,
}

/// One upstream cluster.
pub struct Cluster {
    config: ClusterConfig,
    source: Arc<dyn EndpointSource>,
    table: ArcSwap<EndpointTable>,
    balancer: Box<dyn Balancer>,
    client: UpstreamClient,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.config.name)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A cluster over `source`, calling endpoints with `client`, balanced round robin.
    pub fn new(
        config: ClusterConfig,
        source: Arc<dyn EndpointSource>,
        client: UpstreamClient,
    ) -> Self {
        Self::with_balancer(config, source, client, Box::new(RoundRobin::default()))
    }

    /// As [`Cluster::new`] with another balancer.
    pub fn with_balancer(
        config: ClusterConfig,
        source: Arc<dyn EndpointSource>,
        client: UpstreamClient,
        balancer: Box<dyn Balancer>,
    ) -> Self {
        Self {
            config,
            source,
            table: ArcSwap::from_pointee(EndpointTable {
                version: 0,
                stale: false,
                states: Vec::new(),
            }),
            balancer,
            client,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Its config.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The endpoint table, refreshed from the source when its version moved (counters of
    /// endpoints that stay are kept).
    fn states(&self) -> Arc<EndpointTable> {
        let cur = self.table.load_full();
        let snap = self.source.snapshot();
        if snap.version == cur.version && snap.stale == cur.stale {
            return cur;
        }
        let states = snap
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
        let next = Arc::new(EndpointTable {
            version: snap.version,
            stale: snap.stale,
            states,
        });
        self.table.store(next.clone());
        next
    }

    /// THE place an endpoint is chosen for a try of a request.
    pub fn pick(&self, ctx: &PickContext<'_>) -> Result<Pick, NoEndpoint> {
        let table = self.states();
        let i = self
            .balancer
            .pick(&table.states, ctx)
            .ok_or_else(|| NoEndpoint {
                cluster: self.config.name.clone(),
            })?;
        let state = table.states[i].clone();
        state.start();
        metrics::gauge!(m::UPSTREAM_IN_FLIGHT, "cluster" => self.config.name.clone())
            .increment(1.0);
        Ok(Pick {
            state,
            started: Instant::now(),
            attempt: ctx.attempt,
            reported: false,
        })
    }

    /// THE place the outcome of a try is recorded (counters, balancer state, metrics).
    pub fn report(&self, mut pick: Pick, outcome: Outcome, now: Instant) {
        pick.reported = true;
        let latency = now.saturating_duration_since(pick.started);
        pick.state.finish(outcome.is_failure());
        self.balancer.report(&pick.state, outcome, latency);
        metrics::gauge!(m::UPSTREAM_IN_FLIGHT, "cluster" => self.config.name.clone())
            .decrement(1.0);
        if let Outcome::Failed(kind) = outcome {
            metrics::counter!(m::UPSTREAM_FAILURES_TOTAL, "cluster" => self.config.name.clone(), "reason" => kind.as_str()).increment(1);
        }
    }

    /// Sends `req` to the picked endpoint (no timeout here: the caller bounds the call).
    pub async fn send(
        &self,
        pick: &Pick,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.client.send(pick.address(), req).await
    }

    /// Whole-request timeout unless the route sets one.
    pub fn request_timeout(&self) -> Duration {
        self.config.request_timeout
    }

    /// State for `GET /clusters`.
    pub fn status(&self) -> ClusterStatus {
        let table = self.states();
        ClusterStatus {
            name: self.config.name.clone(),
            source: self.source.kind(),
            stale: table.stale,
            endpoints: table
                .states
                .iter()
                .map(|s| EndpointStatus {
                    address: s.endpoint.address,
                    zone: s.endpoint.zone.clone(),
                    weight: s.endpoint.weight,
                    priority: s.endpoint.priority,
                    health: "unknown",
                    ejected: false,
                    in_flight: s.in_flight(),
                    requests: s.requests(),
                    failures: s.failures(),
                })
                .collect(),
        }
    }
}

/// A cluster as shown by `GET /clusters`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// Name.
    pub name: String,
    /// Source kind.
    pub source: &'static str,
    /// True when the source serves a last good answer.
    pub stale: bool,
    /// Endpoints.
    pub endpoints: Vec<EndpointStatus>,
}

/// An endpoint as shown by `GET /clusters`.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    /// Address.
    pub address: SocketAddr,
    /// Zone.
    pub zone: Option<String>,
    /// Weight.
    pub weight: u32,
    /// Tier.
    pub priority: u16,
    /// Health-check state (`unknown` until issue 7 adds checks).
    pub health: &'static str,
    /// Ejected by outlier detection (issue 7).
    pub ejected: bool,
    /// Requests in flight (load).
    pub in_flight: u64,
    /// Requests sent.
    pub requests: u64,
    /// Failed requests.
    pub failures: u64,
}
