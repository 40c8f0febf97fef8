//! A client of the SPIFFE Workload API on a unix socket: the X.509 context (SVIDs and
//! bundles) once, or as a stream with a new context on every rotation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

use crate::proto::service::spiffe_workload_a_p_i_client::SpiffeWorkloadAPIClient;
use crate::proto::{X509BundlesRequest, X509SvidRequest, X509SvidResponse, SECURITY_HEADER};
use crate::svid::{split_der, Svid};

/// The environment variable naming the Workload API socket (`unix:///path`).
pub const ENDPOINT_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// A Workload API call failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The socket address is not `unix:///abs/path` or an absolute path.
    #[error("workload api address {addr:?}: expected unix:///absolute/path")]
    BadAddress {
        /// The address.
        addr: String,
    },
    /// Could not connect.
    #[error("workload api socket {socket}: {source}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The agent answered with an error (e.g. PermissionDenied: no entry matches).
    #[error("workload api socket {socket}: {} {}", .status.code(), .status.message())]
    Status {
        /// The socket.
        socket: PathBuf,
        /// The gRPC status.
        status: tonic::Status,
    },
    /// The agent's answer is unusable.
    #[error("workload api socket {socket}: bad answer: {detail}")]
    BadAnswer {
        /// The socket.
        socket: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The stream ended.
    #[error("workload api socket {socket}: stream ended")]
    Ended {
        /// The socket.
        socket: PathBuf,
    },
}

impl WorkloadError {
    /// The gRPC status code, when the agent answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Status { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

/// What the Workload API says at one moment: the caller's SVIDs and trust bundles.
#[derive(Debug, Clone)]
pub struct X509Context {
    /// The SVIDs; the first is the default identity.
    pub svids: Vec<Svid>,
    /// The roots of the own trust domain.
    pub bundle: Vec<CertificateDer<'static>>,
    /// Federated bundles, by trust domain ID.
    pub federated: HashMap<String, Vec<CertificateDer<'static>>>,
}

impl X509Context {
    /// The default SVID.
    pub fn default_svid(&self) -> Option<&Svid> {
        self.svids.first()
    }

    fn from_response(socket: &Path, resp: X509SvidResponse) -> Result<Self, WorkloadError> {
        let bad = |detail: String| WorkloadError::BadAnswer {
            socket: socket.to_owned(),
            detail,
        };
        if resp.svids.is_empty() {
            return Err(bad("no SVID in the answer".into()));
        }
        let mut svids = Vec::with_capacity(resp.svids.len());
        let mut bundle = Vec::new();
        for (i, s) in resp.svids.into_iter().enumerate() {
            let chain = split_der(&s.x509_svid).map_err(|e| bad(format!("svid {i}: {e}")))?;
            let svid = Svid::from_chain(&s.spiffe_id, chain, s.x509_svid_key, None)
                .map_err(|e| bad(e.to_string()))?;
            if i == 0 {
                bundle = split_der(&s.bundle).map_err(|e| bad(format!("bundle: {e}")))?;
            }
            svids.push(svid);
        }
        let federated = resp
            .federated_bundles
            .into_iter()
            .map(|(td, der)| split_der(&der).map(|c| (td, c)))
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("federated bundle: {e}")))?;
        Ok(Self {
            svids,
            bundle,
            federated,
        })
    }
}

/// The socket path of a Workload API address: `unix:///path`, `unix:/path` or `/path`.
pub fn socket_path(addr: &str) -> Result<PathBuf, WorkloadError> {
    let path = addr
        .strip_prefix("unix://")
        .or_else(|| addr.strip_prefix("unix:"))
        .unwrap_or(addr);
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(WorkloadError::BadAddress {
            addr: addr.to_owned(),
        })
    }
}

/// A connection to the agent.
#[derive(Debug, Clone)]
pub struct WorkloadClient {
    inner: SpiffeWorkloadAPIClient<Channel>,
    socket: PathBuf,
}

fn with_header<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        SECURITY_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    req
}

impl WorkloadClient {
    /// Connects to the agent's socket.
    pub async fn connect(socket: impl Into<PathBuf>) -> Result<Self, WorkloadError> {
        let socket = socket.into();
        let path = socket.clone();
        let channel = Endpoint::from_static("http://workload.api.localhost")
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|source| WorkloadError::Connect {
                socket: socket.clone(),
                source,
            })?;
        Ok(Self {
            inner: SpiffeWorkloadAPIClient::new(channel),
            socket,
        })
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn status(&self, status: tonic::Status) -> WorkloadError {
        WorkloadError::Status {
            socket: self.socket.clone(),
            status,
        }
    }

    /// Follows `FetchX509SVID`: one context now and one after every rotation.
    pub async fn watch_x509_context(
        &mut self,
    ) -> Result<
        impl tokio_stream::Stream<Item = Result<X509Context, WorkloadError>> + Send + 'static,
        WorkloadError,
    > {
        let stream = self
            .inner
            .fetch_x509_svid(with_header(X509SvidRequest {}))
            .await
            .map_err(|s| self.status(s))?
            .into_inner();
        let socket = self.socket.clone();
        Ok(stream.map(move |item| match item {
            Ok(resp) => X509Context::from_response(&socket, resp),
            Err(status) => Err(WorkloadError::Status {
                socket: socket.clone(),
                status,
            }),
        }))
    }

    /// The current X.509 context.
    pub async fn fetch_x509_context(&mut self) -> Result<X509Context, WorkloadError> {
        let mut stream = Box::pin(self.watch_x509_context().await?);
        stream.next().await.unwrap_or_else(|| {
            Err(WorkloadError::Ended {
                socket: self.socket.clone(),
            })
        })
    }

    /// The current trust bundles, by trust domain ID.
    pub async fn fetch_x509_bundles(
        &mut self,
    ) -> Result<HashMap<String, Vec<CertificateDer<'static>>>, WorkloadError> {
        let mut stream = self
            .inner
            .fetch_x509_bundles(with_header(X509BundlesRequest {}))
            .await
            .map_err(|s| self.status(s))?
            .into_inner();
        let resp = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(WorkloadError::Ended {
                    socket: self.socket.clone(),
                })
            }
            Err(s) => return Err(self.status(s)),
        };
        resp.bundles
            .into_iter()
            .map(|(td, der)| split_der(&der).map(|c| (td, c)))
            .collect::<Result<_, _>>()
            .map_err(|detail| WorkloadError::BadAnswer {
                socket: self.socket.clone(),
                detail,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses() {
        assert_eq!(
            socket_path("unix:///run/a.sock").unwrap(),
            PathBuf::from("/run/a.sock")
        );
        assert_eq!(
            socket_path("unix:/run/a.sock").unwrap(),
            PathBuf::from("/run/a.sock")
        );
        assert_eq!(
            socket_path("/run/a.sock").unwrap(),
            PathBuf::from("/run/a.sock")
        );
        assert!(socket_path("tcp://1.2.3.4:5").is_err());
        assert!(socket_path("rel.sock").is_err());
    }
}
