//! `GET /probe`: one mTLS handshake per cluster and zone, made by the gateway with its own
//! SVID and the cluster's verification, reporting what the endpoint presented. The
//! "mTLS handshake per zone" step of `meshedge doctor` reads it; nothing is sent on the
//! connection and it is closed right after.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Instant;

use serde::Serialize;

use super::Cluster;

/// The outcome of one probe handshake.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    /// The cluster.
    pub cluster: String,
    /// The zone of the endpoint probed.
    pub zone: Option<String>,
    /// The endpoint probed (the first of its zone).
    pub endpoint: SocketAddr,
    /// The handshake completed and the endpoint's identity is allowed.
    pub ok: bool,
    /// What the endpoint presented: its SPIFFE ID, or the DNS name it was verified for.
    pub presented: Option<String>,
    /// Why the handshake failed.
    pub error: Option<String>,
    /// How long TCP + TLS took.
    pub millis: f64,
}

impl Cluster {
    /// Probes the first endpoint of every zone of this cluster, concurrently.
    pub async fn probe(&self) -> Vec<ProbeResult> {
        let table = self.shared.states();
        let mut zones = BTreeSet::new();
        let picks: Vec<(Option<String>, SocketAddr)> = table
            .states
            .iter()
            .filter(|s| zones.insert(s.endpoint.zone.clone()))
            .map(|s| (s.endpoint.zone.clone(), s.endpoint.address))
            .collect();
        let probes = picks.into_iter().map(|(zone, endpoint)| async move {
            let started = Instant::now();
            let outcome = self.shared.client.probe(endpoint).await;
            let millis = started.elapsed().as_secs_f64() * 1000.0;
            let (ok, presented, error) = match outcome {
                Ok(presented) => (true, Some(presented), None),
                Err((presented, error)) => (false, presented, Some(error)),
            };
            ProbeResult {
                cluster: self.name().to_owned(),
                zone,
                endpoint,
                ok,
                presented,
                error,
                millis,
            }
        });
        futures_util::future::join_all(probes).await
    }
}
