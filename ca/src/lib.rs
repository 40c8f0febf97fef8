//! meshedge-ca: SPIFFE identities, X509-SVID issuance and the CA's HTTPS API.
//!
//! - [`spiffe`]: trust domains and SPIFFE IDs.
//! - [`csr`], [`policy`], [`pki`], [`authority`]: checking CSRs and signing SVIDs (pure).
//! - [`keyset`], [`store`], [`audit`]: the CA's state on disk.
//! - [`tls`], [`svid`]: verifying SPIFFE peers, used by every meshedge component.
//! - [`server`], [`client`]: the HTTPS API and its client.
#![warn(missing_docs)]

pub mod api;
pub mod audit;
pub mod authority;
pub mod backend;
pub mod client;
pub mod csr;
pub mod fsutil;
pub mod keyset;
pub mod keystore;
pub mod metrics;
pub mod pki;
pub mod policy;
pub mod seal;
pub mod server;
pub mod spiffe;
pub mod store;
pub mod svid;
pub mod tls;

pub use authority::{Authority, IssuedSvid};
pub use spiffe::{SpiffeId, TrustDomain};
