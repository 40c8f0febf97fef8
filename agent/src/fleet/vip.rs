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

/// What a probe of an address found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// A process reacted to `PROBE_BYTES`: an answer, a close or a reset.
    Reacted,
    /// Refused, or no handshake within the connect timeout: no process serves there (the
    /// address is gone, or its host is cut off).
    Unreachable,
    /// A kernel completed the handshake but no process reacted within the reaction timeout
    /// (a stopped process, or a whole frozen node).
    Silent,
}

impl ProbeOutcome {
    /// The metric label (`reacted`, `unreachable`, `silent`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Reacted => "reacted",
            Self::Unreachable => "unreachable",
            Self::Silent => "silent",
        }
    }
}

/// Probes `target` in two phases: the TCP handshake within `connect_timeout` (a LAN peer's
/// kernel answers in well under a millisecond, so a short wait is enough to call a cut-off
/// or vanished address unreachable), then a process's reaction to `PROBE_BYTES` within
/// `reaction_timeout`. A completed handshake proves that some kernel holds the address, so
/// its process gets as long as its own supervisor gives it (a busy gateway is slow, not
/// dead: claiming then would make two holders).
pub async fn probe_address(
    target: std::net::SocketAddr,
    connect_timeout: std::time::Duration,
    reaction_timeout: std::time::Duration,
) -> ProbeOutcome {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::net::TcpStream::connect(target);
    let mut stream = match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) | Err(_) => return ProbeOutcome::Unreachable,
    };
    let reaction = async {
        if stream.write_all(PROBE_BYTES).await.is_ok() {
            let mut buf = [0u8; 64];
            let _ = stream.read(&mut buf).await;
        }
    };
    match tokio::time::timeout(reaction_timeout, reaction).await {
        Ok(()) => ProbeOutcome::Reacted,
        Err(_) => ProbeOutcome::Silent,
    }
}
