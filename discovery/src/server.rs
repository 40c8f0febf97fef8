//! The embedded authoritative DNS-SD server: zones over UDP and TCP, TSIG-authenticated
//! RFC 2136 updates, and an atomically written snapshot so registrations survive restarts.
//!
//! Runs in-process (`serve` on a tokio runtime) for `meshedge demo` and single-machine
//! setups, or standalone behind `meshedge dns serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hickory_proto::rr::Name;
use tokio::task::JoinHandle;

use crate::name::{parse_domain, NameError};
use crate::tsig::TsigKey;

mod handler;
mod net;
mod persist;
mod update;
mod zone;

pub use persist::SnapshotError;
pub use zone::Zone;

/// What the server serves and where.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address for both UDP and TCP; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Zone apexes served, e.g. `mesh.example`.
    pub zones: Vec<Name>,
    /// Keys allowed to update any zone. Without keys, every update is refused.
    pub keys: Vec<TsigKey>,
    /// Snapshot file; `None` keeps zones in memory only.
    pub snapshot: Option<PathBuf>,
    /// Negative-answer TTL (SOA minimum), in seconds.
    pub negative_ttl: u32,
}

impl ServerConfig {
    /// A config for `zones` (domain names) on `listen`, no keys, no snapshot, negative TTL
    /// of 5 s.
    pub fn try_new(listen: SocketAddr, zones: &[&str]) -> Result<Self, ServerError> {
        let zones = zones
            .iter()
            .map(|z| parse_domain(z))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            listen,
            zones,
            keys: Vec::new(),
            snapshot: None,
            negative_ttl: 5,
        })
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No zone configured.
    #[error("no zones configured")]
    NoZones,
    /// A zone appears twice.
    #[error("zone {zone} configured twice")]
    DuplicateZone {
        /// The repeated zone.
        zone: Name,
    },
    /// A zone name is invalid.
    #[error("invalid zone name")]
    Zone(#[from] NameError),
    /// Binding the listen address failed.
    #[error("binding {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot could not be loaded.
    #[error("loading zones")]
    Snapshot(#[from] SnapshotError),
}

/// A running server. Dropping it stops the listeners.
pub struct ServerHandle {
    addr: SocketAddr,
    handler: Arc<handler::Handler>,
    tasks: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A copy of the zones as they are now.
    pub fn zones(&self) -> Vec<Zone> {
        self.handler.zones()
    }

    /// Stops the listeners (same as dropping the handle).
    pub fn shutdown(self) {}
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Loads the snapshot, binds UDP and TCP on `config.listen`, and serves until the handle is
/// dropped.
pub async fn serve(config: ServerConfig) -> Result<ServerHandle, ServerError> {
    let zones = build_zones(&config).await?;
    let (udp, tcp) = net::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = udp.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let names: Vec<String> = zones.iter().map(|z| z.origin().to_string()).collect();
    tracing::info!(%addr, zones = ?names, "dns server listening on {addr}");
    let handler = Arc::new(handler::Handler::new(
        zones,
        config.keys.clone(),
        config.snapshot.clone(),
    ));
    let tasks = vec![
        tokio::spawn(net::serve_udp(udp, Arc::clone(&handler))),
        tokio::spawn(net::serve_tcp(tcp, Arc::clone(&handler))),
    ];
    Ok(ServerHandle {
        addr,
        handler,
        tasks,
    })
}

async fn build_zones(config: &ServerConfig) -> Result<Vec<Zone>, ServerError> {
    if config.zones.is_empty() {
        return Err(ServerError::NoZones);
    }
    let mut zones: Vec<Zone> = Vec::new();
    for origin in &config.zones {
        let mut origin = origin.to_lowercase();
        origin.set_fqdn(true);
        if zones.iter().any(|z| *z.origin() == origin) {
            return Err(ServerError::DuplicateZone { zone: origin });
        }
        zones.push(Zone::new(&origin, config.negative_ttl));
    }
    let Some(path) = &config.snapshot else {
        return Ok(zones);
    };
    let records = persist::load(path).await?;
    let mut restored = 0usize;
    for record in records {
        let zone = zones
            .iter_mut()
            .filter(|z| z.contains(record.name()))
            .max_by_key(|z| z.origin().num_labels());
        match zone {
            Some(zone) => {
                zone.restore(record);
                restored += 1;
            }
            None => {
                tracing::warn!(name = %record.name(), "snapshot record outside served zones dropped");
            }
        }
    }
    tracing::info!(path = %path.display(), records = restored, "zone snapshot loaded");
    Ok(zones)
}

#[cfg(test)]
mod tests;
