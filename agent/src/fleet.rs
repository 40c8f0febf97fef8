//! The fleet role of the agent: keep every zone covered by ready gateways.
//!
//! - [`policy`]: pure gateway placement (start / keep / drain) from the membership view,
//!   with rendezvous hashing ([`rendezvous`]) and hysteresis.
//! - [`lease`]: pure virtual-IP ownership (one holder, release before claim).
//! - [`supervisor`]: runs the local gateway as a child, restarts, drains and rolls it.
//! - [`metrics`]: metric names.

pub mod lease;
pub mod metrics;
pub mod policy;
pub mod rendezvous;
pub mod supervisor;

pub use policy::{GatewayAction, GatewayState, MemberView, Placement, PlacementConfig};
