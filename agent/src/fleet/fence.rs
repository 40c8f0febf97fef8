//! The VIP fence: the device that carries a node's virtual IPs lives exactly as long as its
//! gateway process.
//!
//! keepalived puts a VIP on the LAN interface; when keepalived is killed or hangs, the
//! address stays there while a backup claims it too (two holders). meshedge puts the
//! address on a non-persistent TUN device whose only open descriptor is inherited by the
//! gateway (as fd [`FENCE_FD`]). The kernel destroys such a device, and every address on
//! it, the moment its last descriptor closes: when the gateway exits for any reason,
//! `kill -9` included, the address is gone before any survivor's lease can expire. A hung
//! agent does not close it, so a serving gateway keeps its address.
//!
//! The kernel answers ARP on the LAN interface for an address configured on any interface
//! (`arp_ignore = 0`, the default), so the fence only has to be up; the address goes on it
//! as a host address (`/32`, `/128`) and the subnet route stays on the LAN interface.

use std::os::fd::{AsFd, OwnedFd};

use tun_rs::{DeviceBuilder, Layer};

/// The descriptor number under which the gateway inherits its fence.
pub const FENCE_FD: i32 = 3;

/// Name pattern of fence devices (the kernel picks the first free number).
const NAME_PATTERN: &str = "mefence%d";

/// A fence device created for one gateway process.
#[derive(Debug)]
pub struct Fence {
    /// The device's name, e.g. `mefence0`.
    pub device: String,
    /// The descriptor the gateway inherits; dropping it without a gateway removes the device.
    pub descriptor: OwnedFd,
}

/// Creates a fence device, up, with no address.
pub fn create() -> std::io::Result<Fence> {
    let device = DeviceBuilder::new()
        .name(NAME_PATTERN)
        .layer(Layer::L3)
        .packet_information(false)
        .enable(true)
        .build_sync()?;
    let name = device.name()?;
    let descriptor = device.as_fd().try_clone_to_owned()?;
    Ok(Fence {
        device: name,
        descriptor,
    })
}

/// The host prefix length of an address (32 or 128): a fence never carries a subnet route.
pub fn host_prefix(address: std::net::IpAddr) -> u8 {
    if address.is_ipv4() {
        32
    } else {
        128
    }
}

/// Adds every address of fence `from` to fence `to` (a rolled gateway takes over its
/// predecessor's VIPs before the old one drains and its fence disappears).
pub async fn carry(from: &str, to: &str) -> Result<(), super::vip::VipError> {
    let listing = super::vip::ip_output(&["-o", "addr", "show", "dev", from]).await?;
    for cidr in addresses(&listing) {
        super::vip::ip_run(&["addr", "add", cidr, "dev", to]).await?;
    }
    Ok(())
}

/// The `inet`/`inet6` CIDRs in `ip -o addr show` output.
fn addresses(listing: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut words = listing.split_whitespace();
    while let Some(word) = words.next() {
        if word == "inet" || word == "inet6" {
            if let Some(cidr) = words.next() {
                out.push(cidr);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_from_ip_output() {
        let listing = "7: mefence0    inet 198.18.0.100/32 scope global mefence0\\       valid_lft forever preferred_lft forever\n7: mefence0    inet6 2001:db8::1/128 scope global \\       valid_lft forever preferred_lft forever\n";
        assert_eq!(
            addresses(listing),
            vec!["198.18.0.100/32", "2001:db8::1/128"]
        );
        assert!(addresses("").is_empty());
    }
}
