//! The audit log: one JSON line per issuance and per denial.
//!
//! Each record is appended with a single `write` to an `O_APPEND` file before the answer
//! leaves the CA, so a crash of the process (kill -9) never loses a record of an SVID that
//! was handed out, and never leaves half a line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// Unix seconds.
    pub ts: i64,
    /// `issued` or `denied`.
    pub event: &'static str,
    /// API operation: `enroll`, `renew`, `workload`.
    pub op: &'static str,
    /// Who asked: the caller's SPIFFE ID, or `token:<node>` for enrollments.
    pub caller: String,
    /// The client's socket address.
    pub remote: String,
    /// The SPIFFE ID asked for, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// Serial of the issued SVID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Expiry of the issued SVID, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Why it was denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Handle to the audit log; cloning shares the same file.
#[derive(Clone)]
pub struct AuditLog {
    path: Arc<PathBuf>,
    file: Arc<Mutex<File>>,
}

impl AuditLog {
    /// Opens `dir/audit.log` for appending (mode 0600).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("audit.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Self {
            path: Arc::new(path),
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Appends one record.
    pub fn record(&self, event: AuditEvent) {
        let mut line = serde_json::to_vec(&event).expect("audit event serializes");
        line.push(b'\n');
        let mut file = self.file.lock().expect("audit mutex poisoned");
        if let Err(err) = file.write_all(&line) {
            tracing::error!(path = %self.path.display(), %err, "audit write failed");
        }
    }
}
