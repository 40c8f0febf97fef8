//! Client-facing listeners: TLS over TCP with HTTP/1.1 and HTTP/2 ([`tls`]), HTTP/3 over
//! QUIC ([`quic`]), and the optional plain-HTTP redirect ([`redirect`]). All of them stop
//! accepting when told to, and drain their connections (GOAWAY / `connection: close`).

pub mod deadline;
pub mod h1;
pub mod quic;
pub mod redirect;
pub mod tls;

use tokio::sync::{mpsc, watch};

/// Signals shared by listeners and their connections.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// Becomes true when listeners must stop accepting.
    pub stop_accepting: watch::Receiver<bool>,
    /// Becomes true when open connections must finish in-flight requests and close.
    pub drain: watch::Receiver<bool>,
    /// Held by every connection task; the gateway waits for all clones to be dropped.
    pub open: mpsc::Sender<()>,
}

/// Resolves when `rx` holds `true` (or its sender is gone).
pub async fn wait_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
