//! The TLS listener: accepts TCP, completes the TLS handshake (SNI picks the certificate,
//! ALPN picks h2 or http/1.1), then serves the connection under the listener's limits
//! (request-head timeout and size, HTTP/2 stream and reset limits): HTTP/1.1 on the fast
//! path of [`super::h1`] until a request needs hyper, HTTP/2 with hyper.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::deadline::{HeadDeadline, InFlight, InFlightGuard};
use super::h1::{self, Ended, H1Limits};
use super::{wait_true, Lifecycle};
use crate::config::ListenerLimits;
use crate::identity::ServerCertResolver;
use crate::metrics as m;
use crate::proxy::{ConnInfo, Proxy, ProxyBody};
use crate::tcp::TcpIo;

/// The rustls server config of the listener: certificates from `resolver`, ALPN h2 then
/// http/1.1, TLS 1.2 and 1.3.
pub fn server_tls(
    resolver: Arc<ServerCertResolver>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Accepts connections on `listener` until `life.stop_accepting`; `limits` is read for
/// every new connection so reloads apply to new connections.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    proxy: Arc<Proxy>,
    limits: impl Fn() -> ListenerLimits + Send + 'static,
    life: Lifecycle,
) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(limits().max_connections));
    let mut stop = life.stop_accepting.clone();
    loop {
        let permit = tokio::select! {
            _ = wait_true(&mut stop) => break,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            _ = wait_true(&mut stop) => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        metrics::counter!(m::CONNECTIONS_TOTAL, "protocol" => "tcp").increment(1);
        let conn_life = life.clone();
        let span =
            tracing::info_span!("connection", client = %peer, protocol = tracing::field::Empty);
        let (acceptor, proxy, limits) = (acceptor.clone(), proxy.clone(), limits());
        // One clock reading per poll of the connection's task: see `crate::clock`.
        tokio::spawn(crate::clock::PerPoll::new(
            async move {
                let _permit = permit;
                metrics::gauge!(m::CONNECTIONS_OPEN, "protocol" => "tcp").increment(1.0);
                connection(tcp, peer, acceptor, proxy, limits, conn_life).await;
                metrics::gauge!(m::CONNECTIONS_OPEN, "protocol" => "tcp").decrement(1.0);
            }
            .instrument(span),
        ));
    }
    drop(listener);
    tracing::info!("tls listener stopped accepting");
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    proxy: Arc<Proxy>,
    limits: ListenerLimits,
    mut life: Lifecycle,
) {
    let _ = tcp.set_nodelay(true);
    let handshake = acceptor.accept(TcpIo::new(tcp));
    let mut tls = match tokio::time::timeout(limits.header_read_timeout, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            metrics::counter!(m::TLS_HANDSHAKES_TOTAL, "result" => "error").increment(1);
            tracing::debug!(error = %e, "tls handshake failed");
            return;
        }
        Err(_) => {
            metrics::counter!(m::TLS_HANDSHAKES_TOTAL, "result" => "timeout").increment(1);
            return;
        }
    };
    metrics::counter!(m::TLS_HANDSHAKES_TOTAL, "result" => "ok").increment(1);
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let protocol = if h2 { "h2" } else { "h1" };
    tracing::Span::current().record("protocol", protocol);
    let info = ConnInfo {
        client: peer,
        protocol,
    };

    let mut replay = BytesMut::new();
    if !h2 {
        let h1_limits = H1Limits {
            header_read_timeout: limits.header_read_timeout,
            max_head_bytes: limits.max_header_bytes as usize,
        };
        let handler = |req, fields| proxy.reply(req, fields, info);
        match h1::serve(&mut tls, h1_limits, handler, &mut life.drain).await {
            Ended::Closed => return,
            Ended::HandOff(unparsed) => replay = unparsed,
        }
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes as usize);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.h2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams)
        .max_header_list_size(limits.max_header_bytes);
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let in_flight = InFlight::default();
    let flight = in_flight.clone();
    let svc = service_fn(move |req: hyper::Request<Incoming>| {
        let (proxy, guard) = (proxy.clone(), flight.start());
        async move {
            let resp = proxy.handle(req, info).await;
            Ok::<_, Infallible>(resp.map(|b| guarded(b, guard)))
        }
    });
    let timeout = (!h2).then_some(limits.header_read_timeout);
    let io = HeadDeadline::new(tls, replay, timeout, in_flight);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = wait_true(&mut life.drain) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Keeps `guard` (the request counted in flight) until the response body is done.
fn guarded(body: ProxyBody, guard: InFlightGuard) -> ProxyBody {
    use http_body_util::BodyExt;
    body.map_frame(move |f| {
        let _ = &guard;
        f
    })
    .boxed_unsync()
}
