//! `routes.<n>.rate_limit`.

use serde::{Deserialize, Serialize};

use super::{check, ConfigError};

fn d_max_keys() -> usize {
    10_000
}

/// What a rate limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum RateLimitKey {
    /// One bucket for the route (`"route"`).
    Route,
    /// One bucket per client IP (`"client_ip"`).
    ClientIp,
    /// One bucket per caller SPIFFE ID, when the client presented one (`"spiffe_id"`).
    SpiffeId,
    /// One bucket per value of a header, e.g. an API key (`"header:x-api-key"`).
    Header(String),
}

impl TryFrom<String> for RateLimitKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "route" => Ok(Self::Route),
            "client_ip" => Ok(Self::ClientIp),
            "spiffe_id" => Ok(Self::SpiffeId),
            _ => match s.strip_prefix("header:") {
                Some(h) if !h.is_empty() && http::HeaderName::try_from(h).is_ok() => {
                    Ok(Self::Header(h.to_ascii_lowercase()))
                }
                _ => Err(format!(
                    "unknown key {s:?}: expected \"route\", \"client_ip\", \"spiffe_id\" or \"header:<name>\""
                )),
            },
        }
    }
}

impl From<RateLimitKey> for String {
    fn from(k: RateLimitKey) -> String {
        match k {
            RateLimitKey::Route => "route".into(),
            RateLimitKey::ClientIp => "client_ip".into(),
            RateLimitKey::SpiffeId => "spiffe_id".into(),
            RateLimitKey::Header(h) => format!("header:{h}"),
        }
    }
}

/// `routes.<n>.rate_limit`: a token bucket per key.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained rate (required).
    pub requests_per_second: f64,
    /// Bucket size; unset: the rate rounded up (one second of traffic).
    #[serde(default)]
    pub burst: Option<u32>,
    /// What is counted (`"route"`).
    #[serde(default = "RateLimitConfig::default_key")]
    pub key: RateLimitKey,
    /// Most buckets kept; the least recently used is dropped beyond (10000).
    #[serde(default = "d_max_keys")]
    pub max_keys: usize,
}

impl RateLimitConfig {
    fn default_key() -> RateLimitKey {
        RateLimitKey::Route
    }

    /// The bucket size in effect.
    pub fn effective_burst(&self) -> u32 {
        self.burst
            .unwrap_or_else(|| self.requests_per_second.ceil().clamp(1.0, u32::MAX as f64) as u32)
    }

    /// Checks ranges; keys are relative to `routes.<n>.rate_limit`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.requests_per_second.is_finite() && self.requests_per_second > 0.0,
            "requests_per_second",
            "must be > 0",
        )?;
        check(self.burst != Some(0), "burst", "must be >= 1")?;
        check(self.max_keys >= 1, "max_keys", "must be >= 1")
    }
}
