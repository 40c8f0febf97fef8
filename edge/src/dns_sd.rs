//! DNS-SD endpoint source: a discovery [`Watch`] per cluster, published to the data plane
//! as cheap snapshots. A resolver failure keeps the last good set (marked stale); an
//! authoritative empty answer empties it (see meshedge-discovery).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use meshedge_discovery::resolve::{DnsResolver, ResolverConfig, Source};
use meshedge_discovery::{EndpointSet, Name, ServiceName, Watch, WatchConfig};

use crate::endpoint::{Endpoint, EndpointSnapshot, EndpointSource};

/// Why a DNS-SD source could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DnsSdError {
    /// The service is neither `_svc._tcp.domain` nor a DNS name.
    #[error("dns_sd service {service:?}: {detail}")]
    Service {
        /// The configured name.
        service: String,
        /// The parser's complaint.
        detail: String,
    },
    /// The resolver could not be built.
    #[error("dns_sd resolver for {service:?}: {detail}")]
    Resolver {
        /// The configured name.
        service: String,
        /// What failed.
        detail: String,
    },
}

/// Endpoints of one DNS-SD service, kept fresh by a background watch.
pub struct DnsSdEndpoints {
    current: Arc<RwLock<EndpointSnapshot>>,
    _watch: Watch,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for DnsSdEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsSdEndpoints").finish_non_exhaustive()
    }
}

impl Drop for DnsSdEndpoints {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Nameservers of /etc/resolv.conf, for a cluster that names none.
fn system_resolvers() -> Vec<SocketAddr> {
    let found: Vec<SocketAddr> = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect();
    if found.is_empty() {
        vec![SocketAddr::from(([127, 0, 0, 1], 53))]
    } else {
        found
    }
}

fn to_snapshot(set: &EndpointSet, version: u64) -> EndpointSnapshot {
    EndpointSnapshot {
        version,
        endpoints: set
            .endpoints()
            .iter()
            .map(|e| Endpoint {
                address: e.socket_addr(),
                zone: e.zone.clone(),
                weight: u32::from(e.weight.max(1)),
                priority: e.priority,
                health: e.attributes.get("health").cloned(),
            })
            .collect(),
        stale: set.is_stale() || !set.is_resolved(),
    }
}

impl DnsSdEndpoints {
    /// Starts watching `service` (browse `_svc._tcp.domain`, or a direct SRV name) through
    /// `resolvers` (the system's when empty), refreshing at most every `refresh`.
    pub fn start(
        service: &str,
        resolvers: &[SocketAddr],
        refresh: Duration,
    ) -> Result<Self, DnsSdError> {
        let source = match ServiceName::parse(service) {
            Ok(s) => Source::Browse(s),
            Err(_) => Source::Srv(Name::from_ascii(service).map_err(|e| DnsSdError::Service {
                service: service.to_owned(),
                detail: e.to_string(),
            })?),
        };
        let servers = if resolvers.is_empty() {
            system_resolvers()
        } else {
            resolvers.to_vec()
        };
        let resolver =
            DnsResolver::new(&ResolverConfig::new(servers)).map_err(|e| DnsSdError::Resolver {
                service: service.to_owned(),
                detail: e.to_string(),
            })?;
        let config = WatchConfig {
            min_refresh: refresh.min(Duration::from_secs(1)),
            max_refresh: refresh.max(Duration::from_secs(1)),
            ..WatchConfig::default()
        };
        let watch = Watch::spawn(resolver, source, config);
        static VERSION: AtomicU64 = AtomicU64::new(1_000_000);
        let mut rx = watch.subscribe();
        let current = Arc::new(RwLock::new(to_snapshot(
            &rx.borrow(),
            VERSION.fetch_add(1, Ordering::Relaxed),
        )));
        let shared = current.clone();
        let name = service.to_owned();
        let task = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let snap = to_snapshot(
                    &rx.borrow_and_update(),
                    VERSION.fetch_add(1, Ordering::Relaxed),
                );
                tracing::info!(service = %name, endpoints = snap.endpoints.len(), stale = snap.stale, "dns-sd endpoints changed");
                *shared.write().expect("snapshot lock") = snap;
            }
        });
        Ok(Self {
            current,
            _watch: watch,
            task,
        })
    }
}

impl EndpointSource for DnsSdEndpoints {
    fn snapshot(&self) -> EndpointSnapshot {
        self.current.read().expect("snapshot lock").clone()
    }

    fn kind(&self) -> &'static str {
        "dns_sd"
    }
}
