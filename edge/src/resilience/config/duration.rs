//! serde for [`Duration`] as a humantime string (`"1m 30s"`, `"250ms"`).

use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serializer};

/// Serializes as humantime (`"30s"`).
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Parses a humantime string.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| de::Error::custom(format!("invalid duration {s:?}: {e}")))
}
