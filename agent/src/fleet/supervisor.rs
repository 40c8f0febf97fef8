//! Supervision of the local gateway: run it as a child, watch its readiness endpoint,
//! restart it on exit or failed readiness with capped backoff ([`restart`]), report crash
//! loops, drain it with SIGTERM on stop, and roll it to a new command (start the new one,
//! wait until it is ready, then drain the old one).

pub mod probe;
pub mod restart;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{error, info, info_span, warn, Instrument};

use command_fds::{CommandFdExt, FdMapping};

use super::fence;
use super::metrics as m;
use super::policy::GatewayState;
use restart::{RestartConfig, RestartPacer};

/// How to run a gateway and where to ask whether it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySpec {
    /// Program to run (e.g. the agent's own executable).
    pub program: PathBuf,
    /// Its arguments (e.g. `edge --config FILE`).
    pub args: Vec<String>,
    /// Admin address serving the readiness endpoint.
    pub ready_addr: SocketAddr,
    /// Readiness path, `/healthz/ready` for `meshedge edge`.
    pub ready_path: String,
}

/// Supervision settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// Restart backoff and crash-loop detection.
    pub restart: RestartConfig,
    /// Interval between readiness probes.
    pub probe_every: Duration,
    /// Timeout of one probe.
    pub probe_timeout: Duration,
    /// Consecutive failed probes of a ready gateway that cause a restart.
    pub unready_after: u32,
    /// A started gateway not ready within this time is restarted.
    pub start_timeout: Duration,
    /// After SIGTERM, how long to wait before SIGKILL.
    pub drain_timeout: Duration,
    /// Give every gateway a VIP fence device ([`super::fence`]).
    pub fence: bool,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            restart: RestartConfig::default(),
            probe_every: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(500),
            unready_after: 3,
            start_timeout: Duration::from_secs(15),
            drain_timeout: Duration::from_secs(10),
            fence: false,
        }
    }
}

/// What the supervisor reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorStatus {
    /// State of the gateway.
    pub state: GatewayState,
    /// Process id of the running gateway.
    pub pid: Option<u32>,
    /// Restarts since the supervisor started.
    pub restarts: u64,
    /// True while restarts happen faster than the crash-loop window allows.
    pub crashloop: bool,
    /// The last failure, for `meshedge status`.
    pub last_error: Option<String>,
    /// The running gateway's VIP fence device, if it has one.
    pub fence: Option<String>,
}

/// Why a supervisor call failed.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The gateway program could not be started.
    #[error("starting gateway {program}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A rolled-out gateway did not become ready; the old one keeps running.
    #[error("new gateway {program} not ready at {addr} within {timeout:?}; kept the old one")]
    RollNotReady {
        /// The new program.
        program: PathBuf,
        /// Its readiness address.
        addr: SocketAddr,
        /// The timeout.
        timeout: Duration,
    },
    /// The supervisor task is gone.
    #[error("gateway supervisor stopped")]
    Gone,
}

enum Control {
    Start(GatewaySpec),
    Stop(oneshot::Sender<()>),
    Roll(GatewaySpec, oneshot::Sender<Result<(), SupervisorError>>),
}

/// Handle of a supervisor task (clones control the same task).
#[derive(Debug, Clone)]
pub struct Supervisor {
    tx: mpsc::Sender<Control>,
    status: watch::Receiver<SupervisorStatus>,
}

// === impl Supervisor ===

impl Supervisor {
    /// Spawns the supervisor task (idle until [`Supervisor::start`]).
    pub fn spawn(config: SupervisorConfig) -> Self {
        let (tx, rx) = mpsc::channel(8);
        let (status_tx, status) = watch::channel(SupervisorStatus {
            state: GatewayState::Stopped,
            pid: None,
            restarts: 0,
            crashloop: false,
            last_error: None,
            fence: None,
        });
        let driver = Driver {
            config,
            spec: None,
            running: None,
            pacer: RestartPacer::new(config.restart),
            status: status_tx,
            restart_at: None,
        };
        tokio::spawn(driver.run(rx).instrument(info_span!("gateway_supervisor")));
        Self { tx, status }
    }

    /// Starts (and keeps running) the gateway described by `spec`.
    pub async fn start(&self, spec: GatewaySpec) -> Result<(), SupervisorError> {
        self.tx
            .send(Control::Start(spec))
            .await
            .map_err(|_| SupervisorError::Gone)
    }

    /// Drains the gateway (SIGTERM, then SIGKILL after the drain timeout) and keeps it
    /// stopped; returns once it has exited.
    pub async fn stop(&self) -> Result<(), SupervisorError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Control::Stop(done))
            .await
            .map_err(|_| SupervisorError::Gone)?;
        wait.await.map_err(|_| SupervisorError::Gone)
    }

    /// Rolls to `spec`: starts it, waits until it is ready, then drains the old gateway.
    /// On failure the old gateway keeps running.
    pub async fn roll(&self, spec: GatewaySpec) -> Result<(), SupervisorError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Control::Roll(spec, done))
            .await
            .map_err(|_| SupervisorError::Gone)?;
        wait.await.map_err(|_| SupervisorError::Gone)?
    }

    /// The status, updated on every change.
    pub fn status(&self) -> watch::Receiver<SupervisorStatus> {
        self.status.clone()
    }
}

struct Running {
    child: Child,
    pid: Option<u32>,
    spec: GatewaySpec,
    started: Instant,
    ready_since: Option<Instant>,
    failed_probes: u32,
    fence: Option<String>,
}

struct Driver {
    config: SupervisorConfig,
    spec: Option<GatewaySpec>,
    running: Option<Running>,
    pacer: RestartPacer,
    status: watch::Sender<SupervisorStatus>,
    restart_at: Option<Instant>,
}

// === impl Driver ===

impl Driver {
    async fn run(mut self, mut rx: mpsc::Receiver<Control>) {
        let mut probe_timer = tokio::time::interval(self.config.probe_every);
        probe_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.running.is_none() && self.spec.is_some() {
                let at = self.restart_at.unwrap_or_else(Instant::now);
                if Instant::now() >= at {
                    self.spawn_current();
                }
            }
            let restart_at = self.restart_at;
            tokio::select! {
                ctl = rx.recv() => match ctl {
                    None => {
                        self.drain().await;
                        return;
                    }
                    Some(ctl) => self.control(ctl).await,
                },
                status = wait_child(&mut self.running) => self.on_exit(status),
                _ = probe_timer.tick(), if self.running.is_some() => self.on_probe().await,
                _ = sleep_until(restart_at), if self.running.is_none() && self.spec.is_some() => {}
            }
        }
    }

    async fn control(&mut self, ctl: Control) {
        match ctl {
            Control::Start(spec) => {
                self.spec = Some(spec);
                self.restart_at = None;
            }
            Control::Stop(done) => {
                self.spec = None;
                self.drain().await;
                let _ = done.send(());
            }
            Control::Roll(spec, done) => {
                let _ = done.send(self.roll(spec).await);
            }
        }
    }

    fn spawn_current(&mut self) {
        let Some(spec) = self.spec.clone() else {
            return;
        };
        match spawn(&spec, self.config.fence) {
            Ok((child, fence)) => {
                let pid = child.id();
                info!(program = %spec.program.display(), pid, ?fence, "gateway started");
                self.running = Some(Running {
                    child,
                    pid,
                    spec,
                    started: Instant::now(),
                    ready_since: None,
                    failed_probes: 0,
                    fence,
                });
                self.restart_at = None;
                self.publish(GatewayState::Starting, None);
            }
            Err(e) => {
                error!(error = %e, "gateway failed to start");
                self.failed("spawn", e.to_string());
            }
        }
    }

    fn on_exit(&mut self, status: std::io::Result<ExitStatus>) {
        let Some(running) = self.running.take() else {
            return;
        };
        let what = match status {
            Ok(s) => format!("gateway pid {:?} exited: {s}", running.pid),
            Err(e) => format!("gateway pid {:?} could not be waited for: {e}", running.pid),
        };
        warn!(%what, "gateway exited");
        self.failed("exit", what);
    }

    async fn on_probe(&mut self) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        let now = Instant::now();
        let spec = &running.spec;
        let result =
            probe::probe(spec.ready_addr, &spec.ready_path, self.config.probe_timeout).await;
        match result {
            Ok(()) => {
                running.failed_probes = 0;
                let since = *running.ready_since.get_or_insert(now);
                self.pacer.record_ready(now.into_std(), since.into_std());
                let crashloop = self.pacer.is_crashloop(now.into_std());
                self.status.send_if_modified(|s| {
                    let changed = s.state != GatewayState::Ready || s.crashloop != crashloop;
                    s.state = GatewayState::Ready;
                    s.crashloop = crashloop;
                    changed
                });
                metrics::gauge!(m::GATEWAY_STATE).set(GatewayState::Ready.as_gauge());
                metrics::gauge!(m::GATEWAY_CRASHLOOP).set(if crashloop { 1.0 } else { 0.0 });
            }
            Err(e) if running.ready_since.is_some() => {
                running.failed_probes += 1;
                if running.failed_probes >= self.config.unready_after {
                    warn!(error = %e, "gateway failed readiness; restarting");
                    self.restart("unready", e.to_string()).await;
                }
            }
            Err(e) if now.duration_since(running.started) >= self.config.start_timeout => {
                warn!(error = %e, "gateway not ready within the start timeout; restarting");
                self.restart("unready", e.to_string()).await;
            }
            Err(_) => {}
        }
    }

    async fn restart(&mut self, reason: &'static str, what: String) {
        if let Some(running) = self.running.take() {
            terminate(running, self.config.drain_timeout).await;
        }
        self.failed(reason, what);
    }

    /// Records a failure: counts it, schedules the restart, reports a crash loop.
    fn failed(&mut self, reason: &'static str, what: String) {
        let now = Instant::now();
        let delay = self.pacer.record_failure(now.into_std());
        self.restart_at = Some(now + delay);
        metrics::counter!(m::GATEWAY_RESTARTS_TOTAL, "reason" => reason).increment(1);
        let crashloop = self.pacer.is_crashloop(now.into_std());
        metrics::gauge!(m::GATEWAY_CRASHLOOP).set(if crashloop { 1.0 } else { 0.0 });
        let state = if crashloop {
            error!(
                failures = self.pacer.recent_failures(),
                ?delay,
                last = %what,
                "gateway is crash-looping; retrying with backoff"
            );
            GatewayState::Down
        } else {
            info!(?delay, reason, "gateway restart scheduled");
            GatewayState::Starting
        };
        self.status.send_modify(|s| {
            s.restarts += 1;
            s.crashloop = crashloop;
            s.last_error = Some(what);
        });
        self.publish(state, None);
    }

    async fn drain(&mut self) {
        if let Some(running) = self.running.take() {
            self.publish(GatewayState::Draining, running.pid);
            terminate(running, self.config.drain_timeout).await;
        }
        self.restart_at = None;
        self.publish(GatewayState::Stopped, None);
    }

    async fn roll(&mut self, spec: GatewaySpec) -> Result<(), SupervisorError> {
        info!(program = %spec.program.display(), "rolling the gateway");
        let (mut child, fence) = spawn(&spec, self.config.fence)?;
        let deadline = Instant::now() + self.config.start_timeout;
        let timeout = self.config.probe_timeout;
        loop {
            if probe::probe(spec.ready_addr, &spec.ready_path, timeout)
                .await
                .is_ok()
            {
                break;
            }
            let exited = matches!(child.try_wait(), Ok(Some(_)) | Err(_));
            if exited || Instant::now() >= deadline {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(SupervisorError::RollNotReady {
                    program: spec.program.clone(),
                    addr: spec.ready_addr,
                    timeout: self.config.start_timeout,
                });
            }
            tokio::time::sleep(self.config.probe_every).await;
        }
        let now = Instant::now();
        let new = Running {
            pid: child.id(),
            child,
            spec: spec.clone(),
            started: now,
            ready_since: Some(now),
            failed_probes: 0,
            fence,
        };
        info!(pid = new.pid, "new gateway ready; draining the old one");
        if let (Some(from), Some(to)) = (
            self.running.as_ref().and_then(|r| r.fence.as_deref()),
            new.fence.as_deref(),
        ) {
            if let Err(e) = fence::carry(from, to).await {
                warn!(error = %e, from, to, "moving VIPs to the new gateway's fence failed");
            }
        }
        if let Some(old) = self.running.replace(new) {
            terminate(old, self.config.drain_timeout).await;
        }
        self.spec = Some(spec);
        let pid = self.running.as_ref().and_then(|r| r.pid);
        self.publish(GatewayState::Ready, pid);
        Ok(())
    }

    fn publish(&self, state: GatewayState, pid: Option<u32>) {
        let pid = pid.or_else(|| self.running.as_ref().and_then(|r| r.pid));
        let fence = self.running.as_ref().and_then(|r| r.fence.clone());
        metrics::gauge!(m::GATEWAY_STATE).set(state.as_gauge());
        self.status.send_if_modified(|s| {
            let changed = s.state != state || s.pid != pid || s.fence != fence;
            s.state = state;
            s.pid = pid;
            s.fence = fence;
            changed
        });
    }
}

/// Starts the gateway; with `fence`, it inherits a new fence device as fd
/// [`fence::FENCE_FD`] (named in `MESHEDGE_VIP_FENCE_FD`) and holds its only descriptor.
/// A fence that cannot be created is logged and counted; the gateway starts without one.
fn spawn(spec: &GatewaySpec, fence: bool) -> Result<(Child, Option<String>), SupervisorError> {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let mut device = None;
    if fence {
        match fence::create() {
            Ok(f) => {
                let mapping = FdMapping {
                    parent_fd: f.descriptor,
                    child_fd: fence::FENCE_FD,
                };
                if command.fd_mappings(vec![mapping]).is_ok() {
                    command.env("MESHEDGE_VIP_FENCE_FD", fence::FENCE_FD.to_string());
                    device = Some(f.device);
                }
            }
            Err(e) => {
                error!(error = %e, "creating the VIP fence device failed; a killed gateway will leave its VIPs behind");
                metrics::counter!(m::FENCE_FAILURES_TOTAL).increment(1);
            }
        }
    }
    let child = command.spawn().map_err(|source| SupervisorError::Spawn {
        program: spec.program.clone(),
        source,
    })?;
    Ok((child, device))
}

/// SIGTERM, wait up to `drain_timeout`, then SIGKILL.
async fn terminate(mut running: Running, drain_timeout: Duration) {
    if let Some(pid) = running.pid.and_then(|p| i32::try_from(p).ok()) {
        if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
            warn!(pid, error = %e, "SIGTERM to gateway failed");
        }
    }
    if tokio::time::timeout(drain_timeout, running.child.wait())
        .await
        .is_err()
    {
        warn!(
            pid = running.pid,
            "gateway did not exit after SIGTERM; killing it"
        );
        let _ = running.child.kill().await;
    }
}

async fn wait_child(running: &mut Option<Running>) -> std::io::Result<ExitStatus> {
    match running {
        Some(r) => r.child.wait().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
