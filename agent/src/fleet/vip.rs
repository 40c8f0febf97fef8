//! Putting a virtual IP on this node and taking it off: `ip addr add|del` (iproute2), then a
//! gratuitous ARP with `arping -U` (iputils-arping) on the LAN interface so that neighbours
//! update their caches at once. With a fence ([`super::fence`]) the address goes on the
//! gateway's fence device as a host address; without one, on the LAN interface.

use std::process::Stdio;

use tokio::process::Command;
use tracing::{info, warn};

use super::config::VipConfig;
use super::fence;

/// Why an address operation failed; `command` names the address and the device.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    /// The command could not run.
    #[error("running `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The command failed.
    #[error("`{command}` failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its stderr.
        stderr: String,
    },
}

/// Adds the address (on `fence` when given), then announces it with gratuitous ARP (IPv4)
/// on the LAN interface in the background.
pub async fn add(vip: &VipConfig, fence: Option<&str>) -> Result<(), VipError> {
    let (cidr, device) = placement(vip, fence);
    match ip_run(&["addr", "add", &cidr, "dev", device]).await {
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
    info!(address = %vip.address, device, "virtual IP added");
    Ok(())
}

/// Removes the address from `fence` (when given) and from the LAN interface. An absent
/// address, or a fence already gone with its gateway, is not an error.
pub async fn remove(vip: &VipConfig, fence: Option<&str>) -> Result<(), VipError> {
    if let Some(device) = fence {
        let cidr = format!("{}/{}", vip.address, fence::host_prefix(vip.address));
        remove_from(&cidr, device).await?;
    }
    let cidr = format!("{}/{}", vip.address, vip.prefix);
    remove_from(&cidr, &vip.interface).await
}

async fn remove_from(cidr: &str, device: &str) -> Result<(), VipError> {
    match ip_run(&["addr", "del", cidr, "dev", device]).await {
        Err(VipError::Failed { stderr, .. })
            if stderr.contains("Cannot assign") || stderr.contains("Cannot find device") =>
        {
            Ok(())
        }
        Ok(()) => {
            info!(address = cidr, device, "virtual IP removed");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn placement<'a>(vip: &'a VipConfig, fence: Option<&'a str>) -> (String, &'a str) {
    match fence {
        Some(device) => (
            format!("{}/{}", vip.address, fence::host_prefix(vip.address)),
            device,
        ),
        None => (format!("{}/{}", vip.address, vip.prefix), &vip.interface),
    }
}

/// Runs `ip ARGS`.
pub(super) async fn ip_run(args: &[&str]) -> Result<(), VipError> {
    ip_output(args).await.map(|_| ())
}

/// Runs `ip ARGS` and returns its stdout.
pub(super) async fn ip_output(args: &[&str]) -> Result<String, VipError> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| VipError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(VipError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Bytes a probe sends: a TLS alert record, then a line end. A TLS server closes or answers
/// with an alert, an HTTP server with a 400; a process that does not run answers nothing
/// (its kernel still completes the TCP handshake, so connecting alone proves nothing).
const PROBE_BYTES: &[u8] = b"\x15\x03\x03\x00\x02\x02\x32\r\n\r\n";

/// Whether a process serves on `target`: it accepts a connection and reacts to
/// [`PROBE_BYTES`] (an answer, a close or a reset) within `timeout`. A refused or
/// unanswered connection, or silence after it, means nothing serves.
pub async fn address_serves(target: std::net::SocketAddr, timeout: std::time::Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(target).await?;
        if stream.write_all(PROBE_BYTES).await.is_ok() {
            let mut buf = [0u8; 64];
            let _ = stream.read(&mut buf).await;
        }
        Ok::<(), std::io::Error>(())
    };
    matches!(tokio::time::timeout(timeout, exchange).await, Ok(Ok(())))
}
