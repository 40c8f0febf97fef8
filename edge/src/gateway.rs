//! The gateway process: loads the config, binds the listeners, reloads on SIGHUP and on
//! file changes (validate, then swap atomically; a bad config is refused and counted), and
//! drains on SIGTERM or `POST /drain`.

mod build;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch as tokio_watch};

pub use build::{BuildError, Material};

use crate::admin::{self, AdminState, MetricsRender};
use crate::config::{self, Config, ConfigError, IdentityConfig};
use crate::identity::{ClientCertResolver, Identity, ServerCertResolver, ServingCerts};
use crate::listener::{self, Lifecycle};
use crate::metrics as m;
use crate::proxy::{Proxy, Runtime};
use meshedge_agent::source::X509Source;
use rustls::pki_types::CertificateDer;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file it names is unusable.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A listener could not bind.
    #[error("{what}: cannot bind {addr}")]
    Bind {
        /// Which listener (`listener.address`, ...).
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS setup of the listener.
    #[error("listener tls setup")]
    Tls(#[from] rustls::Error),
    /// The HTTP/3 endpoint.
    #[error(transparent)]
    Quic(#[from] listener::quic::QuicError),
}

/// Why a reload was refused (the running config stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file it names is unusable.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A key that only takes effect at start changed.
    #[error("{key}: changing it needs a restart")]
    NeedsRestart {
        /// The key.
        key: &'static str,
    },
}

/// Addresses the gateway listens on (real ports when the config said port 0).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    /// HTTPS (TCP).
    pub https: SocketAddr,
    /// HTTP/3 (UDP), when on.
    pub http3: Option<SocketAddr>,
    /// Plain-HTTP redirect, when on.
    pub redirect: Option<SocketAddr>,
    /// Admin.
    pub admin: SocketAddr,
}

/// Readiness and the drain switches.
#[derive(Debug)]
pub struct Controls {
    ready: Arc<AtomicBool>,
    stop: tokio_watch::Sender<bool>,
    drain: tokio_watch::Sender<bool>,
}

impl Controls {
    /// Readiness false, listeners stop accepting, connections get GOAWAY / close.
    pub fn begin_drain(&self) {
        self.ready.store(false, Ordering::SeqCst);
        metrics::gauge!(m::READY).set(0.0);
        self.stop.send_replace(true);
        self.drain.send_replace(true);
    }
}

/// A running gateway.
pub struct Gateway {
    config_path: PathBuf,
    runtime: Arc<ArcSwap<Runtime>>,
    identity: ArcSwap<Identity>,
    server_certs: Arc<ServerCertResolver>,
    svid: Arc<ClientCertResolver>,
    controls: Arc<Controls>,
    open: mpsc::Receiver<()>,
    addrs: BoundAddrs,
    workload: Option<X509Source>,
    /// The watched files as they were when the running config was loaded.
    loaded_files: watch::Fingerprint,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, GatewayError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Bind { what, addr, source })
}

impl Gateway {
    /// Loads `config_path`, binds every listener and starts serving.
    pub async fn start(config_path: &Path, metrics: MetricsRender) -> Result<Self, GatewayError> {
        m::describe();
        let config_file = [config_path.to_owned()];
        let config_before = watch::Fingerprint::of(&config_file);
        let config = Arc::new(config::load(config_path)?);
        // Taken now, not when serving starts: a file changed after this is seen by the
        // watch. A config file changed while it was being loaded makes the first tick reload.
        let loaded_files = if watch::Fingerprint::of(&config_file) == config_before {
            watch::Fingerprint::of(&watch::watched_files(config_path, &config))
        } else {
            watch::Fingerprint::CHANGED
        };
        let workload = match &config.identity {
            IdentityConfig::WorkloadApi { socket } => Some(
                crate::identity::workload::connect(socket)
                    .await
                    .map_err(BuildError::from)?,
            ),
            IdentityConfig::Files { .. } => None,
        };
        let material = Material::load(&config, workload.as_ref())?;
        let svid = ClientCertResolver::new(material.identity.svid.clone());
        let rt = build::runtime(config.clone(), &material, &svid, None)?;
        set_expiry_gauges(&material.serving, &material.identity.svid.cert[0]);
        let server_certs = ServerCertResolver::new(material.serving);
        let runtime = Arc::new(ArcSwap::from_pointee(rt));

        let https = bind("listener.address", config.listener.address).await?;
        let https_addr = https.local_addr().map_err(|source| GatewayError::Bind {
            what: "listener.address",
            addr: config.listener.address,
            source,
        })?;
        let admin_listener = bind("admin.address", config.admin.address).await?;
        let admin_addr = admin_listener.local_addr().unwrap_or(config.admin.address);
        let redirect = match &config.redirect {
            Some(r) => Some(bind("redirect.address", r.address).await?),
            None => None,
        };

        let (stop_tx, stop_rx) = tokio_watch::channel(false);
        let (drain_tx, drain_rx) = tokio_watch::channel(false);
        let (open_tx, open_rx) = mpsc::channel(1);
        let life = Lifecycle {
            stop_accepting: stop_rx.clone(),
            drain: drain_rx,
            open: open_tx,
        };
        let ready = Arc::new(AtomicBool::new(true));
        let controls = Arc::new(Controls {
            ready: ready.clone(),
            stop: stop_tx,
            drain: drain_tx,
        });

        let quic = if config.listener.http3 {
            let addr = SocketAddr::new(config.listener.address.ip(), https_addr.port());
            Some(listener::quic::bind(
                addr,
                server_certs.clone(),
                &config.listener.limits,
            )?)
        } else {
            None
        };
        let http3_addr = quic.as_ref().and_then(|q| q.local_addr().ok());
        let alt_svc = http3_addr.and_then(|a| {
            let v = format!(
                "h3=\":{}\"; ma={}",
                a.port(),
                config.listener.alt_svc_max_age.as_secs()
            );
            http::HeaderValue::from_str(&v).ok()
        });
        let proxy = Arc::new(Proxy::new(runtime.clone(), alt_svc));
        if let Some(endpoint) = quic {
            let limits_rt = runtime.clone();
            tokio::spawn(listener::quic::serve(
                endpoint,
                proxy.clone(),
                move || limits_rt.load().config.listener.limits,
                life.clone(),
            ));
        }
        let tls = listener::tls::server_tls(server_certs.clone())?;
        let limits_rt = runtime.clone();
        tokio::spawn(listener::tls::serve(
            https,
            tls,
            proxy.clone(),
            move || limits_rt.load().config.listener.limits,
            life.clone(),
        ));
        let redirect_addr = match redirect {
            Some(l) => {
                let addr = l.local_addr().ok();
                let port = config
                    .redirect
                    .map(|r| r.https_port)
                    .filter(|p| *p != 0)
                    .unwrap_or(https_addr.port());
                tokio::spawn(listener::redirect::serve(l, port, life.clone()));
                addr
            }
            None => None,
        };
        let admin_state = AdminState {
            ready,
            metrics,
            runtime: runtime.clone(),
            controls: controls.clone(),
        };
        tokio::spawn(admin::serve(admin_listener, admin_state));
        drop(life);
        metrics::gauge!(m::READY).set(1.0);
        tracing::info!(name = %config.gateway.name, %https_addr, %admin_addr, "edge gateway started");
        Ok(Self {
            config_path: config_path.to_owned(),
            runtime,
            identity: ArcSwap::from_pointee(material.identity),
            server_certs,
            svid,
            controls,
            open: open_rx,
            workload,
            loaded_files,
            addrs: BoundAddrs {
                https: https_addr,
                http3: http3_addr,
                redirect: redirect_addr,
                admin: admin_addr,
            },
        })
    }

    /// Where it listens.
    pub fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// The running config.
    pub fn config(&self) -> Arc<Config> {
        self.runtime.load().config.clone()
    }

    /// Validates the config file again and swaps it in; refused configs leave the running
    /// one untouched. Counted in `meshedge_edge_config_reloads_total{result}`.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let result = self.try_reload();
        match &result {
            Ok(()) => {
                metrics::counter!(m::CONFIG_RELOADS_TOTAL, "result" => "applied").increment(1);
                tracing::info!(path = %self.config_path.display(), "config reloaded");
            }
            Err(e) => {
                metrics::counter!(m::CONFIG_RELOADS_TOTAL, "result" => "rejected").increment(1);
                tracing::error!(path = %self.config_path.display(), "config reload rejected, the running config stays: {e}");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<(), ReloadError> {
        let config = config::load(&self.config_path)?;
        let old = self.runtime.load_full();
        let o = &old.config;
        let fixed = [
            (
                "listener.address",
                o.listener.address == config.listener.address,
            ),
            ("listener.http3", o.listener.http3 == config.listener.http3),
            ("admin.address", o.admin.address == config.admin.address),
            (
                "redirect.address",
                o.redirect.map(|r| r.address) == config.redirect.map(|r| r.address),
            ),
        ];
        if let Some((key, _)) = fixed.iter().find(|(_, same)| !same) {
            return Err(ReloadError::NeedsRestart { key });
        }
        let socket = |c: &Config| match &c.identity {
            IdentityConfig::WorkloadApi { socket } => Some(socket.clone()),
            IdentityConfig::Files { .. } => None,
        };
        if socket(o) != socket(&config) {
            return Err(ReloadError::NeedsRestart {
                key: "identity.workload_api_socket",
            });
        }
        let material = Material::load(&config, self.workload.as_ref())?;
        let old_identity = self.identity.load_full();
        let rt = build::runtime(
            Arc::new(config),
            &material,
            &self.svid,
            Some((&old, &old_identity)),
        )?;
        set_expiry_gauges(&material.serving, &material.identity.svid.cert[0]);
        self.server_certs.swap(material.serving);
        self.svid.swap(material.identity.svid.clone());
        self.identity.store(Arc::new(material.identity));
        self.runtime.store(Arc::new(rt));
        Ok(())
    }

    /// Serves until SIGTERM/SIGINT, reloading on SIGHUP and on file changes; then drains
    /// (up to `gateway.drain_timeout`) and returns.
    pub async fn run(mut self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // Each fingerprint is taken before the reload it triggers, so a file written during a
        // reload is seen at the next tick (at worst one more reload), never missed.
        let mut files = self.loaded_files;
        let mut svid_updates = self.workload.as_ref().map(X509Source::subscribe);
        let mut tick = tokio::time::interval(self.config().gateway.watch_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    files = watch::Fingerprint::of(&watch::watched_files(&self.config_path, &self.config()));
                    let _ = self.reload();
                }
                _ = tick.tick() => {
                    // The gauges count down: a certificate that stopped rotating shows it.
                    set_expiry_gauges(&self.server_certs.current(), &self.identity.load().svid.cert[0]);
                    let now = watch::Fingerprint::of(&watch::watched_files(&self.config_path, &self.config()));
                    if now != files {
                        tracing::info!("config or certificate files changed: reloading");
                        files = now;
                        let _ = self.reload();
                    }
                }
                Some(Ok(())) = async {
                    match svid_updates.as_mut() {
                        Some(rx) => Some(rx.changed().await),
                        None => std::future::pending().await,
                    }
                } => {
                    tracing::info!("new SVID or bundle from the Workload API: applying");
                    let _ = self.reload();
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        let timeout = self.config().gateway.drain_timeout;
        tracing::info!(?timeout, "shutting down: draining connections");
        self.controls.begin_drain();
        match tokio::time::timeout(timeout, self.open.recv()).await {
            Ok(_) => tracing::info!("drained"),
            Err(_) => tracing::warn!("drain timeout reached with connections still open"),
        }
        Ok(())
    }
}

/// `meshedge_edge_cert_expiry_seconds` of the serving certificates and the gateway's SVID,
/// as of now (set at every load and every watch tick).
fn set_expiry_gauges(serving: &ServingCerts, svid_leaf: &CertificateDer<'_>) {
    let now = time::OffsetDateTime::now_utc();
    let secs = |c| crate::identity::not_after(c).map(|t| (t - now).as_seconds_f64());
    for (i, leaf) in serving.leaves().enumerate() {
        if let Some(s) = secs(leaf) {
            metrics::gauge!(m::CERT_EXPIRY_SECONDS, "kind" => "serving", "index" => i.to_string())
                .set(s);
        }
    }
    if let Some(s) = secs(svid_leaf) {
        metrics::gauge!(m::CERT_EXPIRY_SECONDS, "kind" => "identity", "index" => "0").set(s);
    }
}
