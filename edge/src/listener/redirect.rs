//! The optional plain-HTTP listener: every request gets `308 Permanent Redirect` to the
//! same host and path over HTTPS.

use std::convert::Infallible;

use http::header::{HOST, LOCATION};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::{wait_true, Lifecycle};
use crate::proxy::{full, ProxyBody};
use crate::route::normalize_host;

/// The `Location` for a request to `host` + `path_and_query` on HTTPS port `port`.
pub fn location(host: &str, path_and_query: &str, port: u16) -> String {
    let host = normalize_host(host);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.into_owned()
    };
    if port == 443 {
        format!("https://{host}{path_and_query}")
    } else {
        format!("https://{host}:{port}{path_and_query}")
    }
}

fn redirect(req: &Request<Incoming>, port: u16) -> Response<ProxyBody> {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut resp = Response::new(full(""));
    match host.and_then(|h| HeaderValue::from_str(&location(&h, pq, port)).ok()) {
        Some(loc) => {
            *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
            resp.headers_mut().insert(LOCATION, loc);
        }
        None => *resp.status_mut() = StatusCode::BAD_REQUEST,
    }
    resp
}

/// Serves redirects on `listener` until `life.stop_accepting`.
pub async fn serve(listener: TcpListener, https_port: u16, life: Lifecycle) {
    let mut stop = life.stop_accepting.clone();
    loop {
        let (tcp, _) = tokio::select! {
            _ = wait_true(&mut stop) => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let mut life = life.clone();
        tokio::spawn(async move {
            let svc =
                service_fn(
                    move |req| async move { Ok::<_, Infallible>(redirect(&req, https_port)) },
                );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = wait_true(&mut life.drain) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn locations() {
        assert_eq!(
            super::location("Example.org:80", "/a?b", 443),
            "https://example.org/a?b"
        );
        assert_eq!(
            super::location("example.org", "/", 8443),
            "https://example.org:8443/"
        );
        assert_eq!(
            super::location("[::1]:80", "/", 8443),
            "https://[::1]:8443/"
        );
    }
}
