//! Workload attestation from the peer credentials of a unix socket (SO_PEERCRED through
//! tokio): uid, gid, and pid -> `/proc/<pid>/exe` for the executable path.

use std::path::PathBuf;

use tokio::net::unix::UCred;

use crate::selector::Workload;

/// What the kernel says about the process at the other end of a connection.
pub fn workload_of(cred: &UCred) -> Workload {
    let pid = cred.pid();
    Workload {
        uid: cred.uid(),
        gid: cred.gid(),
        pid,
        path: pid.and_then(exe_path),
    }
}

/// The executable of `pid`, symlinks resolved; `None` when the process is gone or belongs to
/// someone the agent may not inspect.
fn exe_path(pid: i32) -> Option<PathBuf> {
    let link = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    // The kernel appends " (deleted)" when the binary was replaced since the process started.
    let text = link.to_str()?;
    Some(PathBuf::from(
        text.strip_suffix(" (deleted)").unwrap_or(text),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn attests_own_process() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let w = workload_of(&a.peer_cred().unwrap());
        assert_eq!(w.pid, Some(std::process::id() as i32));
        assert_eq!(w.path, Some(std::env::current_exe().unwrap()));
    }
}
