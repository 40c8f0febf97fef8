//! DNS-SD advertising of ready gateways: `_meshedge-edge._tcp.<zone>` instances named after
//! their node, TXT `zone=`, registered with RFC 2136 + TSIG through
//! [`meshedge_discovery::Registrar`].

use std::net::SocketAddr;
use std::path::Path;

use meshedge_discovery::{Instance, Name, RegisterError, Registrar, ServiceName, TsigKey, Txt};
use tracing::{info, warn};

use super::config::DnsConfig;
use super::metrics as m;

/// The DNS-SD service of gateways.
pub const SERVICE: &str = "meshedge-edge";

/// Why advertising could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdvertiseError {
    /// The TSIG key file is unreadable or malformed.
    #[error("TSIG key file {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A name is invalid.
    #[error("DNS name for {what} is invalid: {reason}")]
    Name {
        /// Which name.
        what: String,
        /// What is wrong.
        reason: String,
    },
}

/// Registers and withdraws gateway instances.
#[derive(Debug, Clone)]
pub struct Advertiser {
    registrar: Registrar,
    service: ServiceName,
    zone: String,
    ttl: u32,
}

impl Advertiser {
    /// An advertiser for `config`.
    pub fn try_new(config: &DnsConfig) -> Result<Self, AdvertiseError> {
        let key = read_key(&config.tsig_key_file)?;
        let zone = Name::from_ascii(&config.zone).map_err(|e| AdvertiseError::Name {
            what: config.zone.clone(),
            reason: e.to_string(),
        })?;
        let service =
            ServiceName::try_new(SERVICE, &config.zone).map_err(|e| AdvertiseError::Name {
                what: format!("_{SERVICE}._tcp.{}", config.zone),
                reason: e.to_string(),
            })?;
        Ok(Self {
            registrar: Registrar::new(config.server, zone, key),
            service,
            zone: config.zone.trim_end_matches('.').to_owned(),
            ttl: config.ttl,
        })
    }

    /// The instance of `node`'s gateway in `zone` serving at `serve`.
    pub fn instance(&self, node: &str, zone: &str, serve: SocketAddr) -> Option<Instance> {
        let label = node.replace(['.', ' '], "-");
        let target = Name::from_ascii(format!("{label}.{}.", self.zone)).ok()?;
        Some(Instance {
            service: self.service.clone(),
            name: node.to_owned(),
            target,
            port: serve.port(),
            priority: 0,
            weight: 100,
            txt: Txt {
                zone: Some(zone.to_owned()),
                ..Txt::default()
            },
            addresses: vec![serve.ip()],
            ttl: self.ttl,
        })
    }

    /// Registers (or refreshes) `node`'s gateway.
    pub async fn register(&self, node: &str, zone: &str, serve: SocketAddr) {
        let Some(inst) = self.instance(node, zone, serve) else {
            return;
        };
        let result = self.registrar.register_or_update(&inst).await;
        report("register", node, result);
    }

    /// Withdraws `node`'s gateway (`op` is `deregister` for our own, `withdraw` for a dead
    /// member's).
    pub async fn withdraw(&self, op: &'static str, node: &str, zone: &str, serve: SocketAddr) {
        let Some(inst) = self.instance(node, zone, serve) else {
            return;
        };
        let result = match self.registrar.deregister(&inst).await {
            Err(RegisterError::NotRegistered { .. }) => Ok(()),
            other => other,
        };
        report(op, node, result);
    }
}

fn report(op: &'static str, node: &str, result: Result<(), RegisterError>) {
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!(m::FLEET_ADVERTISE_TOTAL, "op" => op, "result" => outcome).increment(1);
    match result {
        Ok(()) => info!(node, op, "DNS-SD {op} of gateway {node}"),
        Err(e) => warn!(node, op, error = %e, "DNS-SD {op} failed"),
    }
}

fn read_key(path: &Path) -> Result<TsigKey, AdvertiseError> {
    let bad = |reason: String| AdvertiseError::Key {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(name), Some(secret), None) => {
            TsigKey::from_base64(name, secret).map_err(|e| bad(e.to_string()))
        }
        _ => Err(bad("expected `NAME BASE64SECRET`".into())),
    }
}
