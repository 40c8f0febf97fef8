//! meshedge-edge: the edge gateway data plane.
//!
//! A request goes client -> [`listener`] (TLS with h1/h2, QUIC with HTTP/3) -> [`route`]
//! (first matching route) -> [`cluster`] (pick an endpoint, report the outcome) -> an
//! upstream over mTLS ([`upstream`]) whose SPIFFE ID the cluster allows.
//!
//! - [`config`]: TOML -> validated, typed config (`--check` and reload use it).
//! - [`route`], [`headers`]: pure request routing and header rules.
//! - [`endpoint`], [`cluster`], [`upstream`]: endpoint sets, the pick/report points, the
//!   pooled mTLS client.
//! - [`identity`]: certificates from files, reloaded when they change.
//! - [`admin`], [`metrics`], [`access_log`]: observability.
//! - [`gateway`]: wires it all, reloads, drains.
#![warn(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod dns_sd;
pub mod endpoint;
pub mod gateway;
pub mod headers;
pub mod identity;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod raw_head;
pub mod resilience;
pub mod route;
pub mod tcp;
pub mod upstream;
