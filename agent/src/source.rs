//! [`X509Source`]: the current X.509 context of a service, kept up to date from the Workload
//! API (reconnecting with backoff) or from PEM files (re-read when they change). The rustls
//! configs of [`crate::tls`] read it on every handshake, so rotation needs no restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshedge_ca::tls::certs_from_pem;
use tokio::sync::watch;
use tokio_stream::StreamExt;

use crate::backoff::Backoff;
use crate::client::{WorkloadClient, WorkloadError, X509Context};
use crate::svid::{key_from_pem, Svid, SvidError};

/// An [`X509Source`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The Workload API failed.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// No SVID arrived in time.
    #[error("workload api socket {socket}: no SVID within {timeout:?}")]
    Timeout {
        /// The socket.
        socket: PathBuf,
        /// How long we waited.
        timeout: Duration,
    },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable SVID, key or bundle.
    #[error("{path}: unusable")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: SvidError,
    },
}

/// The three PEM files of an SVID, as `meshedge agent fetch` writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidFiles {
    /// Leaf then intermediates.
    pub cert: PathBuf,
    /// PKCS#8 private key.
    pub key: PathBuf,
    /// Trust bundle (roots).
    pub bundle: PathBuf,
}

impl SvidFiles {
    /// `svid.pem`, `svid.key` and `bundle.pem` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            cert: dir.join("svid.pem"),
            key: dir.join("svid.key"),
            bundle: dir.join("bundle.pem"),
        }
    }

    /// Reads the files into a context.
    pub fn load(&self) -> Result<X509Context, SourceError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| SourceError::Read {
                path: p.to_owned(),
                source,
            })
        };
        let file = |p: &Path| {
            let p = p.to_owned();
            move |source| SourceError::File { path: p, source }
        };
        let key = key_from_pem(&self.key.display().to_string(), &read(&self.key)?)
            .map_err(file(&self.key))?;
        let svid = Svid::from_pem(
            &self.cert.display().to_string(),
            &read(&self.cert)?,
            key,
            None,
        )
        .map_err(file(&self.cert))?;
        let bundle = certs_from_pem(&read(&self.bundle)?).map_err(|source| SourceError::File {
            path: self.bundle.clone(),
            source: SvidError::Pem {
                what: "bundle".into(),
                source,
            },
        })?;
        Ok(X509Context {
            svids: vec![svid],
            bundle,
            federated: Default::default(),
        })
    }

    fn mtimes(&self) -> [Option<SystemTime>; 3] {
        [&self.cert, &self.key, &self.bundle]
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The current X.509 context, updated in the background. Cheap to clone; the background
/// task stops when the last clone is dropped.
#[derive(Clone)]
pub struct X509Source {
    rx: watch::Receiver<Arc<X509Context>>,
    _task: Option<Arc<AbortOnDrop>>,
}

impl std::fmt::Debug for X509Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ctx = self.current();
        f.debug_struct("X509Source")
            .field("svids", &ctx.svids)
            .field("roots", &ctx.bundle.len())
            .finish()
    }
}

impl X509Source {
    /// Connects to the Workload API at `socket`, waits up to `timeout` for the first SVID,
    /// then follows rotations; a broken stream is reconnected with capped backoff, keeping
    /// the last context meanwhile. Must be called within a tokio runtime.
    pub async fn from_workload_api(
        socket: impl Into<PathBuf>,
        timeout: Duration,
    ) -> Result<Self, SourceError> {
        let socket = socket.into();
        let first = async {
            let mut stream = open_stream(&socket).await?;
            let ctx = stream.next().await.unwrap_or_else(|| {
                Err(WorkloadError::Ended {
                    socket: socket.clone(),
                })
            })?;
            Ok::<_, SourceError>((ctx, stream))
        };
        let (ctx, stream) =
            tokio::time::timeout(timeout, first)
                .await
                .map_err(|_| SourceError::Timeout {
                    socket: socket.clone(),
                    timeout,
                })??;
        let (tx, rx) = watch::channel(Arc::new(ctx));
        let task = tokio::spawn(follow(socket, stream, tx));
        Ok(Self {
            rx,
            _task: Some(Arc::new(AbortOnDrop(task))),
        })
    }

    /// Reads `files` now and, with `reload`, re-reads them whenever their modification times
    /// change (checked at that interval). Needs a tokio runtime when `reload` is set.
    pub fn from_files(files: SvidFiles, reload: Option<Duration>) -> Result<Self, SourceError> {
        let ctx = files.load()?;
        let (tx, rx) = watch::channel(Arc::new(ctx));
        let task = reload.map(|every| {
            Arc::new(AbortOnDrop(tokio::spawn(async move {
                let mut seen = files.mtimes();
                loop {
                    tokio::time::sleep(every).await;
                    let now = files.mtimes();
                    if now == seen {
                        continue;
                    }
                    match files.load() {
                        Ok(ctx) => {
                            seen = now;
                            tracing::info!(cert = %files.cert.display(), "SVID files changed; reloaded");
                            tx.send_replace(Arc::new(ctx));
                        }
                        // A writer may be between two files: try again next tick.
                        Err(e) => tracing::debug!(error = %e, "SVID files not reloadable yet"),
                    }
                }
            })))
        });
        Ok(Self { rx, _task: task })
    }

    /// A source that never changes (tests, tools).
    pub fn fixed(ctx: X509Context) -> Self {
        let (_, rx) = watch::channel(Arc::new(ctx));
        Self { rx, _task: None }
    }

    /// The current context.
    pub fn current(&self) -> Arc<X509Context> {
        self.rx.borrow().clone()
    }

    /// A receiver that sees every update (`changed().await` waits for a rotation).
    pub fn subscribe(&self) -> watch::Receiver<Arc<X509Context>> {
        self.rx.clone()
    }
}

type ContextStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<X509Context, WorkloadError>> + Send>>;

async fn open_stream(socket: &Path) -> Result<ContextStream, WorkloadError> {
    let mut client = WorkloadClient::connect(socket.to_owned()).await?;
    Ok(Box::pin(client.watch_x509_context().await?))
}

/// Publishes every context of `stream`; reconnects with capped backoff when it breaks.
async fn follow(socket: PathBuf, stream: ContextStream, tx: watch::Sender<Arc<X509Context>>) {
    let mut stream = Some(stream);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        if let Some(s) = stream.as_mut() {
            match s.next().await {
                Some(Ok(ctx)) => {
                    backoff.reset();
                    tracing::debug!(svids = ctx.svids.len(), "X.509 context updated");
                    tx.send_replace(Arc::new(ctx));
                    continue;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "workload api stream failed; reconnecting")
                }
                None => {
                    tracing::warn!(socket = %socket.display(), "workload api stream ended; reconnecting")
                }
            }
            stream = None;
        }
        tokio::time::sleep(backoff.next_delay(rand::random())).await;
        match open_stream(&socket).await {
            Ok(s) => stream = Some(s),
            Err(e) => tracing::warn!(error = %e, "workload api reconnect failed"),
        }
    }
}
