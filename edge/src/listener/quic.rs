//! HTTP/3 over QUIC (quinn + h3) on the listener's port, UDP. Same certificates (SNI), same
//! [`Proxy`]; QUIC connections and per-connection request streams are bounded; on drain
//! each connection gets an HTTP/3 GOAWAY and finishes its requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tracing::Instrument;

use super::{wait_true, Lifecycle};
use crate::config::ListenerLimits;
use crate::identity::ServerCertResolver;
use crate::metrics as m;
use crate::proxy::{ConnInfo, Proxy, ProxyBody};
use crate::upstream::BoxError;

/// Why the QUIC endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// TLS configuration.
    #[error("http/3 tls setup")]
    Tls(#[from] rustls::Error),
    /// The TLS config does not suit QUIC (a bug).
    #[error("http/3 tls config unusable for quic")]
    Crypto(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// Binding the UDP socket.
    #[error("cannot bind udp {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Largest UDP payload the endpoint accepts (advertised as `max_udp_payload_size`): an
/// Ethernet frame's (1500 - 20 IPv4 - 8 UDP). quinn's default, 65527, sizes its receive
/// buffers for 64 KiB datagrams (3 MB for one endpoint here) that no Ethernet path carries.
const MAX_UDP_PAYLOAD_BYTES: u16 = 1472;

/// Binds the QUIC endpoint on `addr` (UDP) with the listener's certificates.
pub fn bind(
    addr: SocketAddr,
    resolver: Arc<ServerCertResolver>,
    limits: &ListenerLimits,
) -> Result<quinn::Endpoint, QuicError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(limits.quic_max_concurrent_streams.into())
        .max_concurrent_uni_streams(8u32.into())
        .max_idle_timeout(Duration::from_secs(60).try_into().ok());
    cfg.transport_config(Arc::new(transport));
    let socket =
        std::net::UdpSocket::bind(addr).map_err(|source| QuicError::Bind { addr, source })?;
    let mut endpoint = quinn::EndpointConfig::default();
    endpoint
        .max_udp_payload_size(MAX_UDP_PAYLOAD_BYTES)
        .expect("within QUIC's 1200..=65527");
    quinn::Endpoint::new(endpoint, Some(cfg), socket, Arc::new(quinn::TokioRuntime))
        .map_err(|source| QuicError::Bind { addr, source })
}

/// Accepts QUIC connections until `life.stop_accepting`, at most `max_connections` open.
pub async fn serve(
    endpoint: quinn::Endpoint,
    proxy: Arc<Proxy>,
    limits: impl Fn() -> ListenerLimits + Send + 'static,
    life: Lifecycle,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut stop = life.stop_accepting.clone();
    loop {
        let incoming = tokio::select! {
            _ = wait_true(&mut stop) => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let limits = limits();
        if open.load(Ordering::SeqCst) >= limits.quic_max_connections {
            metrics::counter!(m::REQUESTS_REFUSED_TOTAL, "reason" => "quic_connection_limit")
                .increment(1);
            incoming.refuse();
            continue;
        }
        let peer = incoming.remote_address();
        open.fetch_add(1, Ordering::SeqCst);
        metrics::counter!(m::CONNECTIONS_TOTAL, "protocol" => "quic").increment(1);
        let (proxy, life, open) = (proxy.clone(), life.clone(), open.clone());
        let span = tracing::info_span!("connection", client = %peer, protocol = "h3");
        tokio::spawn(
            async move {
                metrics::gauge!(m::CONNECTIONS_OPEN, "protocol" => "quic").increment(1.0);
                if let Err(e) = connection(incoming, peer, proxy, limits, life).await {
                    tracing::debug!(error = %e, "http/3 connection ended");
                }
                metrics::gauge!(m::CONNECTIONS_OPEN, "protocol" => "quic").decrement(1.0);
                open.fetch_sub(1, Ordering::SeqCst);
            }
            .instrument(span),
        );
    }
    tracing::info!("http/3 listener stopped accepting");
}

async fn connection(
    incoming: quinn::Incoming,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    limits: ListenerLimits,
    mut life: Lifecycle,
) -> Result<(), BoxError> {
    let conn = match tokio::time::timeout(limits.header_read_timeout, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            metrics::counter!(m::TLS_HANDSHAKES_TOTAL, "result" => "error").increment(1);
            return Err(e.into());
        }
        Err(_) => {
            metrics::counter!(m::TLS_HANDSHAKES_TOTAL, "result" => "timeout").increment(1);
            return Ok(());
        }
    };
    metrics::counter!(m::TLS_HANDSHAKES_TOTAL, "result" => "ok").increment(1);
    let mut h3 = h3::server::builder()
        .max_field_section_size(u64::from(limits.max_header_bytes))
        .build::<_, Bytes>(h3_quinn::Connection::new(conn))
        .await?;
    let info = ConnInfo {
        client: peer,
        protocol: "h3",
    };
    let mut draining = false;
    loop {
        let next = tokio::select! {
            r = h3.accept() => r,
            _ = wait_true(&mut life.drain), if !draining => {
                draining = true;
                h3.shutdown(0).await?;
                continue;
            }
        };
        match next {
            Ok(Some(resolver)) => {
                let proxy = proxy.clone();
                let open = life.open.clone();
                tokio::spawn(async move {
                    let _open = open;
                    match resolver.resolve_request().await {
                        Ok((req, stream)) => {
                            if let Err(e) = request(req, stream, &proxy, info).await {
                                tracing::debug!(error = %e, "http/3 request stream failed");
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "bad http/3 request"),
                    }
                });
            }
            Ok(None) => return Ok(()),
            Err(e) if e.is_h3_no_error() => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

type Stream<S> = h3::server::RequestStream<S, Bytes>;

async fn request<S>(
    req: Request<()>,
    stream: Stream<S>,
    proxy: &Proxy,
    info: ConnInfo,
) -> Result<(), BoxError>
where
    S: h3::quic::BidiStream<Bytes> + Send + 'static,
    S::RecvStream: Send + 'static,
    S::SendStream: Send,
{
    let (mut send, recv) = stream.split();
    let body = StreamBody::new(Box::pin(futures_util::stream::unfold(
        Some(recv),
        |recv| async move {
            let mut recv = recv?;
            match recv.recv_data().await {
                Ok(Some(mut chunk)) => {
                    let bytes = chunk.copy_to_bytes(chunk.remaining());
                    Some((Ok::<_, BoxError>(Frame::data(bytes)), Some(recv)))
                }
                Ok(None) => None,
                Err(e) => Some((Err(e.into()), None)),
            }
        },
    )));
    let resp: Response<ProxyBody> = proxy.handle(req.map(|()| body), info).await;
    let (parts, mut body) = resp.into_parts();
    send.send_response(Response::from_parts(parts, ())).await?;
    while let Some(frame) = body.frame().await {
        match frame?.into_data() {
            Ok(data) => send.send_data(data).await?,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.send_trailers(trailers).await?;
                }
            }
        }
    }
    send.finish().await?;
    Ok(())
}
