//! Putting a virtual IP on an interface and taking it off: `ip addr add|del` (iproute2),
//! then a gratuitous ARP with `arping -U` (iputils-arping) so that neighbours update their
//! caches at once. Only used inside network namespaces the operator (or a test) built.

use std::net::IpAddr;
use std::process::Stdio;

use tokio::process::Command;
use tracing::{info, warn};

use super::config::VipConfig;

/// Why an address operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    /// The command could not run.
    #[error("running {command} for {address} on {interface}")]
    Spawn {
        /// The command.
        command: String,
        /// The address.
        address: IpAddr,
        /// The interface.
        interface: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The command failed.
    #[error("{command} for {address} on {interface} failed: {stderr}")]
    Failed {
        /// The command.
        command: String,
        /// The address.
        address: IpAddr,
        /// The interface.
        interface: String,
        /// Its stderr.
        stderr: String,
    },
}

/// Adds the address, then announces it with gratuitous ARP (IPv4) in the background.
pub async fn add(vip: &VipConfig) -> Result<(), VipError> {
    let cidr = format!("{}/{}", vip.address, vip.prefix);
    match ip(vip, &["addr", "add", &cidr, "dev", &vip.interface]).await {
        Err(VipError::Failed { stderr, .. }) if stderr.contains("File exists") => {}
        other => other?,
    }
    if vip.address.is_ipv4() {
        let mut arping = Command::new("arping");
        arping
            .args(["-U", "-c", "2", "-w", "1", "-I", &vip.interface])
            .arg(vip.address.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match arping.spawn() {
            Ok(mut child) => {
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
            }
            Err(e) => warn!(address = %vip.address, error = %e, "arping not available"),
        }
    }
    info!(address = %vip.address, interface = %vip.interface, "virtual IP added");
    Ok(())
}

/// Removes the address (an absent address is not an error).
pub async fn remove(vip: &VipConfig) -> Result<(), VipError> {
    let cidr = format!("{}/{}", vip.address, vip.prefix);
    match ip(vip, &["addr", "del", &cidr, "dev", &vip.interface]).await {
        Err(VipError::Failed { stderr, .. }) if stderr.contains("Cannot assign") => Ok(()),
        Ok(()) => {
            info!(address = %vip.address, interface = %vip.interface, "virtual IP removed");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn ip(vip: &VipConfig, args: &[&str]) -> Result<(), VipError> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| VipError::Spawn {
            command: command.clone(),
            address: vip.address,
            interface: vip.interface.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(VipError::Failed {
            command,
            address: vip.address,
            interface: vip.interface.clone(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
