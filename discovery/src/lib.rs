//! DNS-SD discovery for meshedge: resolve and watch services, register instances with
//! RFC 2136 dynamic updates, and serve DNS-SD zones from an embedded authoritative server.
//!
//! Conventions (see DESIGN.md "DNS-SD conventions"): `_<svc>._tcp.<domain>` PTR lists
//! instances; each instance has SRV (priority = failover tier, weight) and TXT
//! (`zone=` and attributes); SRV targets resolve by A/AAAA. A failed refresh never empties
//! an endpoint set: the last good answer is kept and marked stale.

#![warn(missing_docs)]

pub mod endpoint;
pub mod metrics;
pub mod name;
pub mod register;
pub mod resolve;
pub mod server;
pub mod tsig;
pub mod txt;
pub mod watch;

/// DNS names as used throughout the API (hickory's `Name`).
pub use hickory_proto::rr::Name;

pub use endpoint::{Endpoint, EndpointDiff, EndpointSet};
pub use name::{NameError, Protocol, ServiceName};
pub use register::{Instance, RegisterError, Registrar};
pub use resolve::{
    DnsResolver, FailureReason, Resolution, Resolve, ResolveError, ResolverConfig, Source,
};
pub use server::{serve, ServerConfig, ServerError, ServerHandle};
pub use tsig::TsigKey;
pub use txt::Txt;
pub use watch::{Watch, WatchConfig};
