//! The background task of a cluster: runs the policy's `tick` (ejections and zone drains
//! that end, interval statistics, gauges) and one active health check per endpoint: an
//! HTTPS GET over the cluster's mTLS client to `health_check.path`, else the instance's
//! TXT `health=`, else `/healthz`; 2xx passes. Endpoint changes from discovery start and
//! stop checks. The task holds the cluster only weakly and ends with it.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use http::Request;
use http_body_util::{BodyExt, Empty};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use super::{lock, Shared};
use crate::resilience::cluster_state::ClusterPolicy;
use crate::resilience::health::probe::{self, HealthProbe, ProbeFuture};
use crate::resilience::health::{check_path, CheckResult, HealthCheck};
use crate::resilience::EndpointId;
use crate::upstream::{FailureKind, UpstreamClient};

/// How often the policy is ticked at least (gauges, expiring ejections).
const TICK: Duration = Duration::from_millis(250);

/// Active health checks over the cluster's pooled mTLS client.
pub struct MtlsProbe {
    client: UpstreamClient,
}

impl MtlsProbe {
    /// A probe calling through `client`.
    pub fn new(client: UpstreamClient) -> Self {
        Self { client }
    }
}

impl HealthProbe for MtlsProbe {
    fn check<'a>(&'a self, endpoint: EndpointId, path: &'a str) -> ProbeFuture<'a> {
        Box::pin(async move {
            // An expired SVID of ours says nothing of the endpoint (pooled connections would
            // still carry the check; new ones are refused by the connector).
            if self.client.own_svid_expired().is_some() {
                return CheckResult::NotSent;
            }
            let body = Empty::new().map_err(|never| match never {}).boxed_unsync();
            let req = match Request::get(path)
                .header(http::header::USER_AGENT, "meshedge-health-check")
                .body(body)
            {
                Ok(r) => r,
                Err(_) => return CheckResult::Status { status: 0 },
            };
            match self.client.send(endpoint.0, req.into(), None).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    // Read the (small) body so that the connection can be reused.
                    let _ = tokio::time::timeout(
                        Duration::from_millis(100),
                        http_body_util::Limited::new(resp.into_body(), 64 * 1024).collect(),
                    )
                    .await;
                    CheckResult::from_status(status)
                }
                Err(e) if e.kind == FailureKind::Timeout => CheckResult::Timeout,
                Err(e) if e.kind == FailureKind::OwnSvidExpired => CheckResult::NotSent,
                Err(_) => CheckResult::ConnectFailure,
            }
        })
    }
}

/// Spawns the check of one endpoint; reports go to the policy while it lives.
fn spawn_check(
    set: &mut JoinSet<()>,
    shared: &Shared,
    policy: Weak<Mutex<ClusterPolicy>>,
    addr: SocketAddr,
    txt_health: Option<&str>,
) -> AbortHandle {
    let config = shared.config.resilience.health_check.clone();
    let path = check_path(&config, txt_health).to_owned();
    let probe = MtlsProbe::new(shared.client.clone());
    let span = tracing::debug_span!("health_check", cluster = %shared.name, endpoint = %addr);
    set.spawn(
        async move {
            let mut rng = SmallRng::from_os_rng();
            let state = HealthCheck::new(config, Instant::now(), &mut rng);
            probe::run(&probe, EndpointId(addr), &path, state, rng, move |report| {
                if let Some(policy) = policy.upgrade() {
                    lock(&policy).on_health_report(&report);
                }
            })
            .await;
        }
        .instrument(span),
    )
}

/// The cluster's background task.
pub(super) async fn background(shared: Weak<Shared>) {
    let mut checks: JoinSet<()> = JoinSet::new();
    // Keyed by address and announced path: a new `health=` restarts the check.
    let mut running: HashMap<(SocketAddr, Option<String>), AbortHandle> = HashMap::new();
    loop {
        let next = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let table = shared.states();
            if shared.config.resilience.health_check.enabled {
                running.retain(|(addr, health), task| {
                    let keep = table
                        .states
                        .iter()
                        .any(|s| s.endpoint.address == *addr && s.endpoint.health == *health);
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                for s in &table.states {
                    let (addr, health) = (s.endpoint.address, s.endpoint.health.clone());
                    if let Entry::Vacant(slot) = running.entry((addr, health.clone())) {
                        let policy = std::sync::Arc::downgrade(&shared.policy);
                        slot.insert(spawn_check(
                            &mut checks,
                            &shared,
                            policy,
                            addr,
                            health.as_deref(),
                        ));
                    }
                }
                while checks.try_join_next().is_some() {}
            }
            let now = Instant::now();
            let mut policy = lock(&shared.policy);
            policy.tick(now);
            policy
                .next_deadline()
                .map_or(now + TICK, |d| d.min(now + TICK))
                .max(now + Duration::from_millis(5))
        };
        tokio::time::sleep_until(next).await;
    }
}
