//! The agent's configuration: a TOML file (`--config`) whose keys the command-line flags
//! override, checked into a typed [`AgentConfig`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The `--config` file. Every key is optional; flags take precedence.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// CA addresses, HOST:PORT.
    #[serde(default)]
    pub ca_addrs: Vec<String>,
    /// The trust bundle file.
    pub ca_bundle: Option<PathBuf>,
    /// Join token for the first enrollment.
    pub join_token: Option<String>,
    /// Node name.
    pub node: Option<String>,
    /// Zone of the node.
    pub zone: Option<String>,
    /// State dir.
    pub state_dir: Option<PathBuf>,
    /// Workload API socket path.
    pub socket: Option<PathBuf>,
    /// Node SVID lifetime, seconds.
    pub node_ttl_secs: Option<u64>,
    /// Workload SVID lifetime, seconds.
    pub workload_ttl_secs: Option<u64>,
    /// Seconds between registration entry syncs.
    pub entry_refresh_secs: Option<u64>,
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: toml::de::Error,
    },
    /// A required key is set neither in the file nor by a flag.
    #[error("{key}: required (flag --{flag} or key {key} in the config file)")]
    Missing {
        /// The config key.
        key: &'static str,
        /// The flag.
        flag: &'static str,
    },
    /// A value is out of range.
    #[error("{key}: {reason}")]
    Invalid {
        /// The config key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl AgentFile {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks the merged settings into an [`AgentConfig`].
    pub fn validate(self) -> Result<AgentConfig, ConfigError> {
        let missing = |key, flag| ConfigError::Missing { key, flag };
        if self.ca_addrs.is_empty() {
            return Err(missing("ca_addrs", "ca-addr"));
        }
        let node = self.node.ok_or(missing("node", "node"))?;
        if node.is_empty() || node.contains('/') {
            return Err(ConfigError::Invalid {
                key: "node",
                reason: format!("{node:?} is not a node name"),
            });
        }
        let secs = |key, v: Option<u64>| match v {
            Some(0) => Err(ConfigError::Invalid {
                key,
                reason: "must be positive".into(),
            }),
            v => Ok(v.map(Duration::from_secs)),
        };
        Ok(AgentConfig {
            ca_addrs: self.ca_addrs,
            ca_bundle: self.ca_bundle.ok_or(missing("ca_bundle", "ca-bundle"))?,
            join_token: self.join_token.filter(|t| !t.is_empty()),
            node,
            zone: self.zone.unwrap_or_default(),
            state_dir: self.state_dir.ok_or(missing("state_dir", "state-dir"))?,
            socket: self.socket.ok_or(missing("socket", "socket"))?,
            node_ttl: secs("node_ttl_secs", self.node_ttl_secs)?,
            workload_ttl: secs("workload_ttl_secs", self.workload_ttl_secs)?,
            entry_refresh: secs("entry_refresh_secs", self.entry_refresh_secs)?
                .unwrap_or(Duration::from_secs(5)),
        })
    }
}

/// A checked agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// CA addresses.
    pub ca_addrs: Vec<String>,
    /// The trust bundle file to start from.
    pub ca_bundle: PathBuf,
    /// Join token (needed only when the state dir holds no valid node SVID).
    pub join_token: Option<String>,
    /// Node name.
    pub node: String,
    /// Zone (informational for now).
    pub zone: String,
    /// State dir.
    pub state_dir: PathBuf,
    /// Workload API socket path.
    pub socket: PathBuf,
    /// Node SVID lifetime to request.
    pub node_ttl: Option<Duration>,
    /// Workload SVID lifetime to request.
    pub workload_ttl: Option<Duration>,
    /// Entry sync interval.
    pub entry_refresh: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let f: AgentFile = toml::from_str(
            r#"
            ca_addrs = ["127.0.0.1:8081"]
            ca_bundle = "/b.pem"
            node = "n1"
            state_dir = "/s"
            socket = "/s/agent.sock"
            entry_refresh_secs = 2
            "#,
        )
        .unwrap();
        let c = f.validate().unwrap();
        assert_eq!(c.entry_refresh, Duration::from_secs(2));
        assert_eq!(c.join_token, None);
        let typo = toml::from_str::<AgentFile>("ca_adrs = []");
        assert!(typo.unwrap_err().to_string().contains("ca_adrs"));
        let err = AgentFile::default().validate().unwrap_err();
        assert!(err.to_string().starts_with("ca_addrs"), "{err}");
    }
}
