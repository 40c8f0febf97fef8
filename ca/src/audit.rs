//! The audit log: one JSON line per issuance and per denial, appended by a writer thread so
//! that request handlers never wait on the disk.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

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

/// Handle to the audit writer; cloning shares the same file.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<AuditEvent>,
}

impl AuditLog {
    /// Opens `dir/audit.log` for appending and starts the writer thread.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join("audit.log");
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let (tx, rx) = mpsc::channel::<AuditEvent>();
        std::thread::Builder::new()
            .name("meshedge-audit".into())
            .spawn(move || write_loop(path, BufWriter::new(file), rx))?;
        Ok(Self { tx })
    }

    /// Queues one record.
    pub fn record(&self, event: AuditEvent) {
        if self.tx.send(event).is_err() {
            tracing::error!("audit writer stopped; record lost");
        }
    }
}

fn write_loop(path: PathBuf, mut out: BufWriter<std::fs::File>, rx: mpsc::Receiver<AuditEvent>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        for ev in batch {
            let mut line = serde_json::to_vec(&ev).expect("audit event serializes");
            line.push(b'\n');
            if let Err(err) = out.write_all(&line) {
                tracing::error!(path = %path.display(), %err, "audit write failed");
            }
        }
        if let Err(err) = out.flush() {
            tracing::error!(path = %path.display(), %err, "audit flush failed");
        }
    }
}
