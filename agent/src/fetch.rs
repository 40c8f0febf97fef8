//! `meshedge agent fetch`: the SVID as files for software that reads files (nginx, HAProxy):
//! `svid.pem` (chain), `svid.key` (0600) and `bundle.pem`, each written atomically, kept
//! rotated with `--watch`, with a command run after each write.

use std::path::{Path, PathBuf};
use std::time::Duration;

use meshedge_ca::fsutil::{create_private_dir, write_atomic};

use crate::client::X509Context;
use crate::source::{SourceError, SvidFiles, X509Source};
use crate::svid::certs_to_pem;

/// Writing the files failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The Workload API failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Write {
        /// The file or dir.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The rotation command could not be started.
    #[error("on-rotate command {command:?}: {source}")]
    Hook {
        /// The command.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What `agent fetch` does.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// The Workload API socket.
    pub socket: PathBuf,
    /// Where the files go.
    pub dir: PathBuf,
    /// Keep running and rewrite the files on every rotation.
    pub watch: bool,
    /// Run through `sh -c` after each write.
    pub on_rotate: Option<String>,
    /// How long to wait for the first SVID.
    pub timeout: Duration,
}

/// Writes the default SVID of `ctx` to `dir`: key first (0600), then chain, then bundle.
pub fn write_files(dir: &Path, ctx: &X509Context) -> Result<SvidFiles, FetchError> {
    let files = SvidFiles::in_dir(dir);
    let write = |path: &Path, text: String, mode| {
        write_atomic(path, text.as_bytes(), mode).map_err(|source| FetchError::Write {
            path: path.to_owned(),
            source,
        })
    };
    if let Some(svid) = ctx.default_svid() {
        write(&files.key, svid.key_pem(), 0o600)?;
        write(&files.cert, svid.chain_pem(), 0o644)?;
    }
    write(&files.bundle, certs_to_pem(&ctx.bundle), 0o644)?;
    Ok(files)
}

async fn run_hook(command: &str) -> Result<(), FetchError> {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .await
        .map_err(|source| FetchError::Hook {
            command: command.to_owned(),
            source,
        })?;
    if status.success() {
        tracing::info!(command, "on-rotate command ran");
    } else {
        tracing::warn!(command, %status, "on-rotate command failed");
    }
    Ok(())
}

/// Fetches once (or follows rotations with `watch`), writing the files each time.
/// `on_written` is called with the files after each write (the CLI prints them).
pub async fn run(
    cfg: FetchConfig,
    mut on_written: impl FnMut(&SvidFiles),
) -> Result<(), FetchError> {
    create_private_dir(&cfg.dir).map_err(|source| FetchError::Write {
        path: cfg.dir.clone(),
        source,
    })?;
    let source = X509Source::from_workload_api(cfg.socket.clone(), cfg.timeout).await?;
    let mut rx = source.subscribe();
    loop {
        let ctx = rx.borrow_and_update().clone();
        let files = write_files(&cfg.dir, &ctx)?;
        if let Some(svid) = ctx.default_svid() {
            tracing::info!(id = %svid.spiffe_id, serial = %svid.serial, dir = %cfg.dir.display(), "SVID files written");
        }
        on_written(&files);
        if let Some(cmd) = &cfg.on_rotate {
            run_hook(cmd).await?;
        }
        if !cfg.watch || rx.changed().await.is_err() {
            return Ok(());
        }
    }
}
