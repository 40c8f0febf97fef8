//! The agent process: node identity, workload SVID cache and the Workload API socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use meshedge_ca::tls::certs_from_pem;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;

use crate::uds::WorkloadConn;

use crate::api::WorkloadApi;
use crate::cache::{CacheConfig, SvidCache};
use crate::config::AgentConfig;
use crate::node::{NodeConfig, NodeError, NodeIdentity};
use crate::proto::service::spiffe_workload_a_p_i_server::SpiffeWorkloadAPIServer;

/// The agent could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The CA bundle file is unreadable or holds no certificate.
    #[error("ca bundle {path}: {detail}")]
    Bundle {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The node identity could not be established.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The Workload API socket could not be bound.
    #[error("workload api socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("workload api socket {path}: {source}")]
    Serve {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
}

/// A started agent: identity established, socket bound.
pub struct Agent {
    cache: Arc<SvidCache>,
    listener: UnixListener,
    socket: PathBuf,
}

impl Agent {
    /// Loads or enrolls the node identity and binds the Workload API socket (mode 0777: any
    /// local process may call, attestation decides what it gets).
    pub async fn start(cfg: AgentConfig) -> Result<Self, AgentError> {
        let bundle_err = |detail: String| AgentError::Bundle {
            path: cfg.ca_bundle.clone(),
            detail,
        };
        let text =
            std::fs::read_to_string(&cfg.ca_bundle).map_err(|e| bundle_err(e.to_string()))?;
        let ca_bundle = certs_from_pem(&text).map_err(|e| bundle_err(e.to_string()))?;
        if ca_bundle.is_empty() {
            return Err(bundle_err("no certificate".into()));
        }
        let node = NodeIdentity::start(NodeConfig {
            ca_addrs: cfg.ca_addrs.clone(),
            ca_bundle,
            node: cfg.node.clone(),
            state_dir: cfg.state_dir.clone(),
            join_token: cfg.join_token.clone(),
            node_ttl: cfg.node_ttl,
        })
        .await?;
        let cache = SvidCache::new(
            node,
            CacheConfig {
                entry_refresh: cfg.entry_refresh,
                workload_ttl: cfg.workload_ttl,
            },
        );
        let listener = bind(&cfg.socket)?;
        Ok(Self {
            cache,
            listener,
            socket: cfg.socket,
        })
    }

    /// The workload SVID cache.
    pub fn cache(&self) -> &Arc<SvidCache> {
        &self.cache
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Runs node renewal, the SVID cache and the Workload API until `shutdown` completes.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), AgentError> {
        let node = tokio::spawn(self.cache.node().clone().run());
        let cache = tokio::spawn(self.cache.clone().run());
        tracing::info!(socket = %self.socket.display(), "workload api listening");
        let result = tonic::transport::Server::builder()
            .add_service(SpiffeWorkloadAPIServer::new(WorkloadApi::new(
                self.cache.clone(),
            )))
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(self.listener).map(|c| c.map(WorkloadConn::accept)),
                shutdown,
            )
            .await
            .map_err(|source| AgentError::Serve {
                path: self.socket.clone(),
                source,
            });
        node.abort();
        cache.abort();
        let _ = std::fs::remove_file(&self.socket);
        result
    }
}

/// Binds `path`, replacing a stale socket file left by a previous run.
fn bind(path: &Path) -> Result<UnixListener, AgentError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let err = |source| AgentError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).map_err(err)?;
    Ok(listener)
}
