//! The fleet's state as JSON in a file (`status_file` in the fleet config), rewritten
//! atomically when it changes: the gateway this agent supervises serves it at `GET /fleet`
//! (edge `[admin] fleet_status_file`), which `meshedge status` and the dashboard read. A
//! file rather than a socket: the edge needs nothing from the agent to keep serving, and a
//! dead agent shows as a file that stopped being rewritten (`written_at`, refreshed at
//! least every 10 s).

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::policy::GatewayState;

/// The file is rewritten at least this often, even when nothing changed.
pub const REFRESH: Duration = Duration::from_secs(10);

/// One member as the fleet status shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberStatus {
    /// Node name.
    pub node: String,
    /// Zone.
    pub zone: String,
    /// `alive` (a member the SWIM view holds; down members leave the list).
    pub state: &'static str,
    /// Its gateway's state.
    pub gateway: GatewayState,
    /// May host a gateway.
    pub eligible: bool,
    /// Capacity it offers.
    pub capacity: u32,
    /// Where its gateway serves.
    pub serve: Option<String>,
    /// VIPs it holds.
    pub vips: Vec<String>,
    /// What its placement policy is doing.
    pub policy: String,
    /// This agent's own entry.
    pub local: bool,
}

/// The file's content.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetStatus {
    /// The node that wrote it.
    pub node: String,
    /// Its zone.
    pub zone: String,
    /// Ready gateways wanted per zone.
    pub min_per_zone: usize,
    /// Members, this node first.
    pub members: Vec<MemberStatus>,
    /// Each VIP and who holds it (as far as this node knows).
    pub vips: Vec<VipStatus>,
}

/// A VIP and its holder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VipStatus {
    /// The address.
    pub address: String,
    /// The zone it serves, if zonal.
    pub zone: Option<String>,
    /// The member holding it, if any.
    pub holder: Option<String>,
    /// Why this node last gave it up (`lease_lapsed`, `gateway_not_ready`, ...), if it
    /// ever did.
    pub last_release: Option<&'static str>,
}

/// Writes `status` to `path` (temp file + rename) with the time it was written.
pub fn write(path: &Path, status: &FleetStatus) -> std::io::Result<()> {
    let mut doc = serde_json::to_value(status).map_err(std::io::Error::other)?;
    doc["written_at"] = serde_json::Value::from(
        time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    );
    let text = serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_members_atomically() {
        let dir =
            std::env::temp_dir().join(format!("meshedge-fleet-status-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fleet.json");
        let status = FleetStatus {
            node: "a1".into(),
            zone: "a".into(),
            min_per_zone: 1,
            members: vec![MemberStatus {
                node: "a1".into(),
                zone: "a".into(),
                state: "alive",
                gateway: GatewayState::Ready,
                eligible: true,
                capacity: 1,
                serve: Some("198.18.0.1:8443".into()),
                vips: vec!["198.18.1.1".into()],
                policy: "zone a: 1 of 1 ready".into(),
                local: true,
            }],
            vips: vec![VipStatus {
                address: "198.18.1.1".into(),
                zone: None,
                holder: Some("a1".into()),
                last_release: Some("lease_lapsed"),
            }],
        };
        write(&path, &status).unwrap();
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["members"][0]["node"], "a1");
        assert_eq!(doc["vips"][0]["holder"], "a1");
        assert_eq!(doc["vips"][0]["last_release"], "lease_lapsed");
        assert!(doc["written_at"].as_str().unwrap().starts_with("20"));
        assert!(!path.with_extension("tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
