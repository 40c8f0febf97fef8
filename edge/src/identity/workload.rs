//! The gateway's SVID from the SPIFFE Workload API (the node agent's socket) instead of
//! files: `meshedge_agent::source::X509Source` follows rotations; each new context becomes
//! an [`Identity`] swapped in like a file change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshedge_agent::client::X509Context;
use meshedge_agent::source::X509Source;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::Identity;

/// How long the gateway waits for its first SVID at start.
pub const FIRST_SVID_TIMEOUT: Duration = Duration::from_secs(15);

/// The Workload API did not give a usable identity.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadIdentityError {
    /// Connecting or waiting for the first SVID failed.
    #[error("workload api at {socket}")]
    Source {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: meshedge_agent::source::SourceError,
    },
    /// The context holds no SVID.
    #[error("workload api at {socket}: no SVID for this process")]
    NoSvid {
        /// The socket.
        socket: PathBuf,
    },
    /// The SVID's key is unusable.
    #[error("workload api at {socket}: svid key unusable")]
    Key {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
}

/// Connects to the Workload API at `socket` and waits for the first SVID.
pub async fn connect(socket: &Path) -> Result<X509Source, WorkloadIdentityError> {
    X509Source::from_workload_api(socket, FIRST_SVID_TIMEOUT)
        .await
        .map_err(|source| WorkloadIdentityError::Source {
            socket: socket.to_owned(),
            source,
        })
}

/// The gateway identity in a Workload API context: its default SVID and the bundle.
pub fn identity_of(socket: &Path, ctx: &X509Context) -> Result<Identity, WorkloadIdentityError> {
    let svid = ctx
        .default_svid()
        .ok_or_else(|| WorkloadIdentityError::NoSvid {
            socket: socket.to_owned(),
        })?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(svid.key_pkcs8.clone()));
    let provider = rustls::crypto::ring::default_provider();
    let ck = CertifiedKey::from_der(svid.chain.clone(), key, &provider).map_err(|source| {
        WorkloadIdentityError::Key {
            socket: socket.to_owned(),
            source,
        }
    })?;
    Ok(Identity {
        svid: Arc::new(ck),
        roots: ctx.bundle.clone(),
    })
}
