//! The admin listener (plain HTTP, loopback by default): liveness, readiness, Prometheus
//! metrics, clusters, the running config (redacted), `GET /probe` (one mTLS handshake per
//! cluster and zone) and `POST /drain`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::config::redacted_json;
use crate::proxy::{full, ProxyBody, Runtime};

/// Renders the Prometheus text exposition.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// What the admin endpoints read and control.
#[derive(Clone)]
pub struct AdminState {
    /// False while draining.
    pub ready: Arc<AtomicBool>,
    /// Metrics renderer.
    pub metrics: MetricsRender,
    /// The running config and clusters.
    pub runtime: Arc<ArcSwap<Runtime>>,
    /// Drain switches (`POST /drain`).
    pub controls: Arc<crate::gateway::Controls>,
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json(value: &impl serde::Serialize) -> Response<ProxyBody> {
    match serde_json::to_string_pretty(value) {
        Ok(s) => reply(StatusCode::OK, "application/json", s + "\n"),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string(),
        ),
    }
}

/// The dashboard served at `GET /` (one self-contained file: HTML, CSS and JS, no external
/// assets); it polls `/clusters`, `/config`, `/metrics` and `/fleet`.
const DASHBOARD_HTML: &str = include_str!("admin/dashboard.html");

/// Answers one admin request.
pub async fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<ProxyBody> {
    const TEXT: &str = "text/plain; charset=utf-8";
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/probe") => {
            let rt = state.runtime.load_full();
            let probes = rt.clusters.values().map(|c| c.probe());
            let results: Vec<_> = futures_util::future::join_all(probes)
                .await
                .into_iter()
                .flatten()
                .collect();
            json(&serde_json::json!({ "probes": results }))
        }
        (&Method::GET, "/") => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            DASHBOARD_HTML.into(),
        ),
        (&Method::GET, "/healthz/live") => reply(StatusCode::OK, TEXT, "live\n".into()),
        (&Method::GET, "/healthz/ready") => {
            if state.ready.load(Ordering::SeqCst) {
                reply(StatusCode::OK, TEXT, "ready\n".into())
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, "draining\n".into())
            }
        }
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            (state.metrics)(),
        ),
        (&Method::GET, "/clusters") => {
            let rt = state.runtime.load();
            let clusters: Vec<_> = rt.clusters.values().map(|c| c.status()).collect();
            json(&serde_json::json!({ "clusters": clusters }))
        }
        (&Method::GET, "/fleet") => fleet(state),
        (&Method::GET, "/config") => {
            let rt = state.runtime.load();
            json(&redacted_json(&rt.config))
        }
        (&Method::POST, "/drain") => {
            state.controls.begin_drain();
            tracing::info!("drain requested on the admin listener");
            reply(StatusCode::OK, TEXT, "draining\n".into())
        }
        (
            _,
            "/healthz/live" | "/healthz/ready" | "/metrics" | "/clusters" | "/config" | "/drain"
            | "/probe" | "/fleet",
        ) => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "method not allowed\n".into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
    }
}

/// A written fleet status older than this is reported stale (the agent rewrites it at
/// least every 10 s).
const FLEET_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// `GET /fleet`: the supervising agent's fleet status file, with its age; 404 when no file
/// is configured, 503 when it cannot be read.
fn fleet(state: &AdminState) -> Response<ProxyBody> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let rt = state.runtime.load();
    let Some(path) = rt.config.admin.fleet_status_file.clone() else {
        return reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "no fleet: [admin] fleet_status_file is not set\n".into(),
        );
    };
    let read = std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            serde_json::from_str::<serde_json::Value>(&text).map_err(|e| e.to_string())
        });
    match read {
        Ok(mut doc) => {
            let age = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            doc["age_seconds"] = serde_json::Value::from(age.as_secs_f64());
            doc["stale"] = serde_json::Value::from(age > FLEET_STALE_AFTER);
            json(&doc)
        }
        Err(e) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            format!("fleet status file {}: {e}\n", path.display()),
        ),
    }
}

/// Serves the admin API on `listener` for the life of the process (it stays up while
/// draining, so readiness can be watched).
pub async fn serve(listener: TcpListener, state: AdminState) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, &req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
