//! The fleet role's TOML config (`meshedge fleet --config FILE`, later
//! `meshedge agent --fleet-config FILE`). Every table denies unknown keys.
//!
//! ```toml
//! node = "a1"
//! zone = "a"
//! listen = "198.18.0.1:7946"          # gossip (UDP)
//! peers = ["198.18.0.2:7946"]         # seeds
//! key_file = "/var/lib/meshedge/fleet.key"  # shared gossip key, >= 32 bytes
//! expected_members = 6                # quorum = expected_members / 2 + 1
//! min_per_zone = 1
//! start_delay = "500ms"
//! drain_delay = "5s"
//! status_file = "/run/meshedge/fleet.json"  # optional: served by the gateway at GET /fleet
//!
//! [gateway]                           # omit `command` to run `<this exe> edge --config FILE`
//! config = "/etc/meshedge/edge.toml"
//! ready = "127.0.0.1:9901"
//! serve = "198.18.0.1:8443"
//!
//! [dns]                               # optional: advertise ready gateways in DNS-SD
//! server = "198.18.0.250:53"
//! zone = "mesh.test"
//! tsig_key_file = "/etc/meshedge/tsig.key"
//!
//! vip_lease = "100ms"                 # VIP lease; the other VIP timings derive from it
//!
//! [[vip]]                             # optional, repeatable
//! address = "198.18.1.1"
//! prefix = 15
//! interface = "eth0"                # LAN interface (gratuitous ARP, subnet route)
//! fence = true                        # default: the address lives and dies with the gateway
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why the fleet config is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading a file failed.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TOML did not parse.
    #[error("{path}: invalid fleet config")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: toml::de::Error,
    },
    /// A value is invalid.
    #[error("{path}: {key}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// The fleet config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// Node name.
    pub node: String,
    /// Zone of this node.
    pub zone: String,
    /// Gossip UDP address.
    pub listen: SocketAddr,
    /// Seed members' gossip addresses.
    #[serde(default)]
    pub peers: Vec<SocketAddr>,
    /// Shared gossip key file (raw bytes, at least 32).
    pub key_file: PathBuf,
    /// Configured fleet size; the VIP quorum is a majority of it.
    pub expected_members: u32,
    /// Whether this node may host a gateway.
    #[serde(default = "yes")]
    pub eligible: bool,
    /// Capacity offered (0: none).
    #[serde(default = "one")]
    pub capacity: u32,
    /// Ready gateways wanted per zone.
    #[serde(default = "one_usize")]
    pub min_per_zone: usize,
    /// How long a deficit lasts before a gateway starts.
    #[serde(default = "start_delay", with = "duration")]
    pub start_delay: Duration,
    /// How long a surplus lasts before a gateway drains.
    #[serde(default = "drain_delay", with = "duration")]
    pub drain_delay: Duration,
    /// SWIM probe period.
    #[serde(default = "probe_period", with = "duration")]
    pub probe_period: Duration,
    /// SWIM suspicion before a member is down.
    #[serde(default = "suspect_to_down", with = "duration")]
    pub suspect_to_down: Duration,
    /// The gateway this agent supervises.
    pub gateway: GatewayConfig,
    /// DNS-SD advertising.
    pub dns: Option<DnsConfig>,
    /// Virtual IPs of the fleet.
    #[serde(default)]
    pub vip: Vec<VipConfig>,
    /// VIP lease length; every other VIP timing derives from it (see `LeaseTiming`).
    #[serde(default = "vip_lease", with = "duration")]
    pub vip_lease: Duration,
    /// Where to keep the fleet's state as JSON for the gateway's `GET /fleet`.
    pub status_file: Option<PathBuf>,
}

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Full command line; default `<this exe> edge --config <config>`.
    pub command: Option<Vec<String>>,
    /// The edge config file (for the default command).
    pub config: Option<PathBuf>,
    /// Admin address serving the readiness endpoint.
    pub ready: SocketAddr,
    /// Readiness path.
    #[serde(default = "ready_path")]
    pub ready_path: String,
    /// Where the gateway serves clients (advertised in DNS-SD).
    pub serve: SocketAddr,
}

/// `[dns]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// DNS server accepting RFC 2136 updates.
    pub server: SocketAddr,
    /// Zone (and DNS-SD domain), e.g. `mesh.test`.
    pub zone: String,
    /// TSIG key file, `NAME BASE64SECRET`.
    pub tsig_key_file: PathBuf,
    /// Record TTL, seconds.
    #[serde(default = "ttl")]
    pub ttl: u32,
}

/// `[[vip]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    /// The address.
    pub address: IpAddr,
    /// Prefix length on the interface.
    #[serde(default = "prefix")]
    pub prefix: u8,
    /// Interface to put it on.
    pub interface: String,
    /// Only members of this zone may hold it.
    pub zone: Option<String>,
    /// Port probed on the address before a claim (default: the gateway's serve port).
    pub probe_port: Option<u16>,
    /// Put the address on the gateway's fence device, so that it disappears with the
    /// gateway process (see `fleet::fence`); `false` puts it on `interface`.
    #[serde(default = "yes")]
    pub fence: bool,
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn one_usize() -> usize {
    1
}
fn start_delay() -> Duration {
    Duration::from_millis(500)
}
fn drain_delay() -> Duration {
    Duration::from_secs(5)
}
fn probe_period() -> Duration {
    Duration::from_millis(250)
}
fn suspect_to_down() -> Duration {
    Duration::from_millis(750)
}
fn ready_path() -> String {
    "/healthz/ready".into()
}
fn ttl() -> u32 {
    5
}
fn prefix() -> u8 {
    32
}
fn vip_lease() -> Duration {
    super::lease::DEFAULT_LEASE
}

impl FleetConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: FleetConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        if self.node.is_empty() || self.node.len() > 63 {
            return Err(invalid("node", "must be 1-63 characters"));
        }
        if self.expected_members == 0 {
            return Err(invalid("expected_members", "must be at least 1"));
        }
        if self.gateway.command.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid("gateway.command", "must not be empty"));
        }
        if self.gateway.command.is_none() && self.gateway.config.is_none() {
            return Err(invalid("gateway", "needs `command` or `config`"));
        }
        let lease_range = Duration::from_millis(12)..=Duration::from_secs(10);
        if !lease_range.contains(&self.vip_lease) {
            return Err(invalid("vip_lease", "must be within 12ms..=10s"));
        }
        for (i, vip) in self.vip.iter().enumerate() {
            let max = if vip.address.is_ipv4() { 32 } else { 128 };
            if vip.prefix == 0 || vip.prefix > max {
                return Err(invalid(&format!("vip[{i}].prefix"), "out of range"));
            }
        }
        Ok(())
    }

    /// The VIP quorum: a majority of `expected_members`.
    pub fn quorum(&self) -> usize {
        self.expected_members as usize / 2 + 1
    }

    /// Reads the gossip key.
    pub fn read_key(&self) -> Result<Vec<u8>, ConfigError> {
        std::fs::read(&self.key_file).map_err(|source| ConfigError::Read {
            path: self.key_file.clone(),
            source,
        })
    }
}

mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?}: expected a duration like 500ms or 5s"))
        })
    }

    pub fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = text[..split].parse().ok()?;
        match &text[split..] {
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
node = "a1"
zone = "a"
listen = "127.0.0.1:7946"
key_file = "k"
expected_members = 3
[gateway]
config = "edge.toml"
ready = "127.0.0.1:9901"
serve = "127.0.0.1:8443"
"#;

    #[test]
    fn minimal_config_gets_defaults_and_unknown_keys_are_refused() {
        let c: FleetConfig = toml::from_str(MINIMAL).unwrap();
        c.validate(Path::new("t")).unwrap();
        assert_eq!(c.start_delay, Duration::from_millis(500));
        assert_eq!(c.quorum(), 2);
        let typo = MINIMAL.replace("zone = \"a\"", "zone = \"a\"\nmin_per_zon = 2");
        assert!(toml::from_str::<FleetConfig>(&typo).is_err());
        let typo = MINIMAL.replace("[gateway]", "[gateway]\nreadyy = 1");
        assert!(toml::from_str::<FleetConfig>(&typo).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration::parse("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(duration::parse("3s"), Some(Duration::from_secs(3)));
        assert_eq!(duration::parse("3"), None);
        assert_eq!(duration::parse("ms"), None);
    }
}
