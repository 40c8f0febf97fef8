//! The fleet role of the agent: keep every zone covered by ready gateways.
//!
//! - [`policy`]: pure gateway placement (start / keep / drain) from the membership view,
//!   with rendezvous hashing ([`rendezvous`]) and hysteresis.
//! - [`lease`]: pure virtual-IP ownership (one holder, release before claim).
//! - [`membership`]: SWIM membership (foca) over UDP with HMAC-authenticated packets.
//! - [`supervisor`]: runs the local gateway as a child, restarts, drains and rolls it.
//! - [`advertise`]: DNS-SD registration of ready gateways; [`vip`]: addresses on
//!   interfaces; [`config`]: the fleet config file.
//! - [`run`]: the task tying them together ([`run_fleet`], [`FleetArgs`]).
//! - [`metrics`]: metric names.

pub mod advertise;
pub mod config;
pub mod fence;
pub mod lease;
pub mod membership;
pub mod metrics;
pub mod policy;
pub mod rendezvous;
pub mod run;
pub mod status;
pub mod supervisor;
pub mod vip;
pub mod vip_probe;

pub use policy::{GatewayAction, GatewayState, MemberView, Placement, PlacementConfig};
pub use run::{run_fleet, FleetArgs, FleetError};
