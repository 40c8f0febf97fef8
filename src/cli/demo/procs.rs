//! The demo's child processes: each a `meshedge` subcommand with its own log file and pid
//! file, started in order, waited for until it prints its "listening" line, and stopped
//! (SIGTERM, then SIGKILL) when the demo ends.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One running component.
pub struct Proc {
    /// Name shown to the user, e.g. `echo-zone-a-1`.
    pub name: String,
    child: Child,
}

/// Every component the demo started, stopped in reverse order on drop.
pub struct Procs {
    dir: PathBuf,
    procs: Vec<Proc>,
}

impl Procs {
    /// Logs go to `dir/logs`, pid files to `dir/pids`.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("logs"))?;
        std::fs::create_dir_all(dir.join("pids"))?;
        Ok(Self {
            dir: dir.to_owned(),
            procs: Vec::new(),
        })
    }

    /// Starts `meshedge ARGS` as `name` without waiting for it.
    pub fn start_unmarked(&mut self, name: &str, args: &[String]) -> anyhow::Result<()> {
        self.spawn(name, args, None).map(|_| ())
    }

    /// Starts `meshedge ARGS` as `name` and waits (up to 30 s) for a stdout line containing
    /// `ready_marker`; returns that line.
    pub fn start(
        &mut self,
        name: &str,
        args: &[String],
        ready_marker: &str,
    ) -> anyhow::Result<String> {
        self.spawn(name, args, Some(ready_marker))
            .map(|line| line.unwrap_or_default())
    }

    fn spawn(
        &mut self,
        name: &str,
        args: &[String],
        ready_marker: Option<&str>,
    ) -> anyhow::Result<Option<String>> {
        let exe = std::env::current_exe().context("locating the meshedge binary")?;
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
        let mut child = Command::new(exe)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file.try_clone()?)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        let marker = ready_marker.unwrap_or("\0").to_owned();
        let mut out = log_file;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(out, "{line}");
                if line.contains(&marker) {
                    let _ = tx.send(line);
                }
            }
        });
        std::fs::write(
            self.dir.join("pids").join(format!("{name}.pid")),
            format!("{}\n", child.id()),
        )?;
        if ready_marker.is_none() {
            self.procs.push(Proc {
                name: name.to_owned(),
                child,
            });
            return Ok(None);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let line = loop {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                break line;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{name} exited ({status}) before it was ready; see {}",
                    log.display()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("{name} was not ready within 30 s; see {}", log.display());
            }
        };
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
        });
        Ok(Some(line))
    }

    /// Names of components that exited, with their status.
    pub fn exited(&mut self) -> Vec<(String, String)> {
        self.procs
            .iter_mut()
            .filter_map(|p| match p.child.try_wait() {
                Ok(Some(status)) => Some((p.name.clone(), status.to_string())),
                _ => None,
            })
            .collect()
    }

    /// Stops everything: SIGTERM in reverse start order, SIGKILL after 5 s.
    pub fn stop_all(&mut self) {
        for p in self.procs.iter().rev() {
            let _ = kill(Pid::from_raw(p.child.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for p in self.procs.iter_mut().rev() {
            while Instant::now() < deadline {
                if matches!(p.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        self.procs.clear();
    }
}

/// Stops what a previous demo in `dir` left running (e.g. after `kill -9` of the demo):
/// every pid file whose process still runs with `dir` on its command line gets SIGTERM,
/// then SIGKILL after 3 s. Processes that merely reuse a recorded pid are left alone.
pub fn stop_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir.join("pids")) else {
        return;
    };
    let needle = dir.display().to_string();
    let pids: Vec<Pid> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| t.trim().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .map(Pid::from_raw)
        .collect();
    if pids.is_empty() {
        return;
    }
    eprintln!(
        "  [demo] stopping {} processes left by a previous run",
        pids.len()
    );
    for pid in &pids {
        let _ = kill(*pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && pids.iter().any(|p| kill(*p, None).is_ok()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in &pids {
        let _ = kill(*pid, Signal::SIGKILL);
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_all();
    }
}
