//! meshedge-agent: the node agent and the client library of the mesh.
//!
//! Agent side:
//! - [`node`]: enrollment with a join token, node SVID on disk, renewal at half-life.
//! - [`cache`]: registration entries and workload SVIDs, rotated at half-life in batches.
//! - [`api`]: the SPIFFE Workload API (gRPC on a unix socket) with peer-credential
//!   attestation ([`attest`], [`selector`]).
//! - [`agent`]: the process that ties them together; [`config`] its settings.
//!
//! Client side (services, the edge, `meshedge echo`):
//! - [`client`]: a Workload API client; [`source`]: an auto-updating [`source::X509Source`]
//!   from the Workload API or from files; [`tls`]: rustls configs that rotate with it and
//!   verify peers by SPIFFE ID; [`fetch`]: writing SVIDs to files.
//!
//! Pure logic: [`backoff`], [`schedule`], [`selector`].
#![warn(missing_docs)]

pub mod admin;
pub mod agent;
pub mod api;
pub mod attest;
pub mod attestation;
pub mod backoff;
pub mod cache;
pub mod client;
pub mod config;
pub mod echo;
pub mod fetch;
pub mod fleet;
pub mod keys;
pub mod metrics;
pub mod node;
pub mod proto;
pub mod schedule;
pub mod selector;
pub mod source;
pub mod svid;
pub mod sync_budget;
pub mod tls;
pub mod uds;

pub use agent::{Agent, AgentError};
pub use config::{AgentConfig, AgentFile};
