//! The SPIFFE Workload API server: `FetchX509SVID` and `FetchX509Bundles` over gRPC on a unix
//! socket, with the `workload.spiffe.io: true` header check and attestation of the caller by
//! its peer credentials against the node's registration entries.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::attest::workload_of;
use crate::cache::{Snapshot, SvidCache};
use crate::metrics as m;
use crate::proto::service::spiffe_workload_a_p_i_server::SpiffeWorkloadAPI;
use crate::proto::{
    X509BundlesRequest, X509BundlesResponse, X509Svid, X509SvidRequest, X509SvidResponse,
    SECURITY_HEADER,
};
use crate::selector::Workload;
use crate::svid::concat_der;
use crate::uds::PeerCred;

/// How long a call with no matching entry waits for a fresh entry sync before it is denied.
pub const SYNC_WAIT: Duration = Duration::from_secs(3);

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// The Workload API service over an [`SvidCache`].
#[derive(Clone)]
pub struct WorkloadApi {
    cache: Arc<SvidCache>,
}

impl WorkloadApi {
    /// A service answering from `cache`.
    pub fn new(cache: Arc<SvidCache>) -> Self {
        Self { cache }
    }

    /// Checks the header and attests the caller; the workload and the snapshot it matched.
    async fn admit<T>(
        &self,
        method: &'static str,
        req: &Request<T>,
    ) -> Result<(Workload, Arc<Snapshot>), Status> {
        let deny = |code: &'static str, status: Status| {
            metrics::counter!(m::API_REQUESTS_TOTAL, "method" => method, "code" => code)
                .increment(1);
            Err(status)
        };
        if req
            .metadata()
            .get(SECURITY_HEADER)
            .and_then(|v| v.to_str().ok())
            != Some("true")
        {
            return deny(
                "invalid_argument",
                Status::invalid_argument("security header missing from request"),
            );
        }
        let Some(cred) = req.extensions().get::<PeerCred>().and_then(|c| c.0) else {
            metrics::counter!(m::ATTESTATION_DENIALS_TOTAL, "reason" => "no_peer_credentials")
                .increment(1);
            return deny(
                "permission_denied",
                Status::permission_denied("no peer credentials on the connection"),
            );
        };
        let workload = workload_of(&cred);
        let mut snap = self.cache.snapshot();
        if workload.matching(&snap.entries).next().is_none() {
            // The entry may be newer than the last sync: ask the CA once before denying.
            snap = self.cache.sync_now(SYNC_WAIT).await;
        }
        if workload.matching(&snap.entries).next().is_none() {
            metrics::counter!(m::ATTESTATION_DENIALS_TOTAL, "reason" => "no_entry").increment(1);
            tracing::info!(uid = workload.uid, gid = workload.gid, pid = ?workload.pid, path = ?workload.path, "workload attestation denied: no registration entry matches");
            return deny(
                "permission_denied",
                Status::permission_denied("no identity issued"),
            );
        }
        metrics::counter!(m::API_REQUESTS_TOTAL, "method" => method, "code" => "ok").increment(1);
        Ok((workload, snap))
    }
}

/// The SVIDs `workload` is entitled to in `snap`, in entry order, and a key that changes on
/// every rotation or bundle change.
fn svid_response(workload: &Workload, snap: &Snapshot) -> (X509SvidResponse, Version) {
    let bundle = concat_der(&snap.bundle);
    let mut serials = Vec::new();
    let svids = workload
        .matching(&snap.entries)
        .filter_map(|e| snap.svids.get(&e.id))
        .map(|w| {
            serials.push(w.svid.serial.clone());
            X509Svid {
                spiffe_id: w.svid.spiffe_id.to_string(),
                x509_svid: w.svid.chain_der(),
                x509_svid_key: w.svid.key_pkcs8.clone(),
                bundle: bundle.clone(),
                hint: String::new(),
            }
        })
        .collect();
    (
        X509SvidResponse {
            svids,
            ..Default::default()
        },
        (serials, snap.bundle.clone()),
    )
}

/// What a stream last sent: SVID serials and the bundle.
type Version = (
    Vec<String>,
    Arc<Vec<rustls::pki_types::CertificateDer<'static>>>,
);

fn bundles_response(snap: &Snapshot, td_id: &str) -> X509BundlesResponse {
    X509BundlesResponse {
        crl: vec![],
        bundles: HashMap::from([(td_id.to_owned(), concat_der(&snap.bundle))]),
    }
}

/// Counts an open stream while alive.
struct StreamGauge;

impl StreamGauge {
    fn open() -> Self {
        metrics::gauge!(m::API_STREAMS).increment(1.0);
        Self
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        metrics::gauge!(m::API_STREAMS).decrement(1.0);
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadAPI for WorkloadApi {
    type FetchX509SVIDStream = Stream<X509SvidResponse>;
    type FetchX509BundlesStream = Stream<X509BundlesResponse>;

    async fn fetch_x509_svid(
        &self,
        req: Request<X509SvidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let started = Instant::now();
        let (workload, _) = self.admit("FetchX509SVID", &req).await?;
        let span = tracing::info_span!("fetch_x509_svid", uid = workload.uid, pid = ?workload.pid);
        let mut rx = self.cache.subscribe();
        let (tx, out) = mpsc::channel(4);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let _gauge = StreamGauge::open();
                let mut last: Option<Version> = None;
                loop {
                    let snap = rx.borrow_and_update().clone();
                    if workload.matching(&snap.entries).next().is_none() {
                        let _ = tx
                            .send(Err(Status::permission_denied("no identity issued")))
                            .await;
                        return;
                    }
                    let (resp, version) = svid_response(&workload, &snap);
                    if !resp.svids.is_empty() && last.as_ref() != Some(&version) {
                        if last.is_none() {
                            metrics::histogram!(m::FIRST_SVID_SECONDS)
                                .record(started.elapsed().as_secs_f64());
                        } else {
                            metrics::counter!(m::API_ROTATIONS_PUSHED_TOTAL).increment(1);
                            tracing::debug!("pushing rotated SVIDs");
                        }
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                        last = Some(version);
                    }
                    tokio::select! {
                        changed = rx.changed() => if changed.is_err() { return },
                        _ = tx.closed() => return,
                    }
                }
            },
            span,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let (workload, _) = self.admit("FetchX509Bundles", &req).await?;
        let td_id = self.cache.node().trust_domain().id_string();
        let mut rx = self.cache.subscribe();
        let (tx, out) = mpsc::channel(4);
        tokio::spawn(async move {
            let _gauge = StreamGauge::open();
            let mut last = None;
            loop {
                let snap = rx.borrow_and_update().clone();
                if workload.matching(&snap.entries).next().is_none() {
                    let _ = tx
                        .send(Err(Status::permission_denied("no identity issued")))
                        .await;
                    return;
                }
                if !snap.bundle.is_empty() && last.as_ref() != Some(&snap.bundle) {
                    if tx.send(Ok(bundles_response(&snap, &td_id))).await.is_err() {
                        return;
                    }
                    last = Some(snap.bundle.clone());
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}
