//! Building a [`Runtime`] from a validated config: certificates, identity, access log,
//! clusters (unchanged clusters keep their pools and counters across reloads).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::access_log::AccessLog;
use crate::cluster::Cluster;
use crate::config::{ClusterConfig, Config, EndpointsConfig, IdentityConfig};
use crate::endpoint::{Endpoint, EndpointSnapshot, EndpointSource, StaticEndpoints};
use crate::identity::workload;
use crate::identity::{ClientCertResolver, Identity, IdentityError, ServingCerts};
use crate::proxy::Runtime;
use crate::upstream::{client_tls, UpstreamClient};
use meshedge_agent::source::X509Source;

/// Why a config could not be turned into a running state.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A certificate, key or bundle.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The Workload API gave no usable identity.
    #[error(transparent)]
    Workload(#[from] workload::WorkloadIdentityError),
    /// The Workload API is not connected (a bug: the gateway connects before loading).
    #[error("identity.workload_api_socket: {socket} not connected")]
    NotConnected {
        /// The socket.
        socket: std::path::PathBuf,
    },
    /// The access-log file.
    #[error("access_log.output: cannot open")]
    AccessLog(#[source] std::io::Error),
    /// The TLS config of a cluster.
    #[error("clusters.{cluster}: tls setup")]
    ClusterTls {
        /// The cluster.
        cluster: String,
        /// Why.
        #[source]
        source: rustls::Error,
    },
}

/// Files loaded for a config.
pub struct Material {
    /// Serving certificates.
    pub serving: ServingCerts,
    /// The gateway's SVID and bundle.
    pub identity: Identity,
}

impl Material {
    /// Loads every file `config` names; the identity comes from `workload` when the config
    /// names a Workload API socket.
    pub fn load(config: &Config, workload: Option<&X509Source>) -> Result<Self, BuildError> {
        let identity = match (&config.identity, workload) {
            (IdentityConfig::Files { cert, key, bundle }, _) => {
                Identity::load_files(cert, key, bundle)?
            }
            (IdentityConfig::WorkloadApi { socket }, Some(source)) => {
                workload::identity_of(socket, &source.current())?
            }
            (IdentityConfig::WorkloadApi { socket }, None) => {
                return Err(BuildError::NotConnected {
                    socket: socket.clone(),
                })
            }
        };
        Ok(Self {
            serving: ServingCerts::load(&config.listener.certificates)?,
            identity,
        })
    }
}

/// A DNS-SD cluster whose watch could not start: no endpoints, marked stale.
#[derive(Debug)]
struct PendingDnsSd;

impl EndpointSource for PendingDnsSd {
    fn snapshot(&self) -> EndpointSnapshot {
        EndpointSnapshot {
            version: 0,
            endpoints: Arc::from(Vec::<Endpoint>::new()),
            stale: true,
        }
    }
    fn kind(&self) -> &'static str {
        "dns_sd"
    }
}

fn source(c: &ClusterConfig) -> Arc<dyn EndpointSource> {
    match &c.endpoints {
        EndpointsConfig::Static(list) => {
            Arc::new(StaticEndpoints::new(list.iter().map(Endpoint::from)))
        }
        EndpointsConfig::DnsSd {
            service,
            resolvers,
            refresh,
        } => match crate::dns_sd::DnsSdEndpoints::start(service, resolvers, *refresh) {
            Ok(source) => Arc::new(source),
            Err(err) => {
                tracing::error!(cluster = %c.name, %err, "dns_sd source failed to start: no endpoints");
                Arc::new(PendingDnsSd)
            }
        },
    }
}

/// Builds a runtime for `config`. Clusters of `previous` whose config and trust bundle did
/// not change are reused (their pools and counters survive the reload).
pub fn runtime(
    config: Arc<Config>,
    material: &Material,
    svid: &Arc<ClientCertResolver>,
    previous: Option<(&Runtime, &Identity)>,
) -> Result<Runtime, BuildError> {
    let access_log = match previous {
        Some((rt, _)) if rt.config.access_log == config.access_log => rt.access_log.clone(),
        _ => Arc::new(AccessLog::open(&config.access_log).map_err(BuildError::AccessLog)?),
    };
    let mut clusters = BTreeMap::new();
    for (name, c) in &config.clusters {
        let reuse = previous.and_then(|(rt, old_identity)| {
            let old = rt.clusters.get(name)?;
            (old.config() == c && old_identity.roots == material.identity.roots)
                .then(|| old.clone())
        });
        let cluster = match reuse {
            Some(old) => old,
            None => {
                let tls =
                    client_tls(&material.identity.roots, c, svid.clone()).map_err(|source| {
                        BuildError::ClusterTls {
                            cluster: name.clone(),
                            source,
                        }
                    })?;
                Arc::new(Cluster::new(
                    c.clone(),
                    source(c),
                    UpstreamClient::new(c, tls, svid.clone()),
                ))
            }
        };
        clusters.insert(name.clone(), cluster);
    }
    Ok(Runtime {
        config,
        clusters,
        access_log,
    })
}
