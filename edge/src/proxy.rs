//! The request path: route -> headers -> cluster pick -> upstream call -> report -> response.
//! Every listener (h1/h2 over TLS, HTTP/3) hands requests to [`Proxy::handle`]; the
//! HTTP/1.1 fast path to [`Proxy::reply`], with the header fields as received.

mod attempt;
mod body;
mod limit;
mod request_metrics;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

pub use body::{full, ProxyBody};

use crate::access_log::{AccessEntry, AccessLog};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::headers::{self, RequestFields, X_REQUEST_ID};
use crate::metrics as m;
use crate::resilience::breaker::{CircuitOpen, OVERFLOW_HEADER};
use crate::route::{normalize_host, RequestInfo};
use crate::upstream::{BoxError, RawHead, RequestHead};
use attempt::{Answer, ReqBody};
use limit::RouteLimits;
use request_metrics::RequestMetrics;

thread_local! {
    /// Request ids, trace ids and canary rolls: a fast per-thread generator seeded from the
    /// operating system (as Envoy's per-thread generator for request ids). Ids must not
    /// repeat, not be secret; ChaCha cost about 1,000 instructions per request.
    static ID_RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

/// Request bodies up to this size (by `content-length`) are read before the first try so
/// that a failed try can be replayed; larger or streamed bodies get one try.
pub const REPLAY_MAX_BODY_BYTES: u64 = 64 * 1024;

/// Everything a request needs; swapped as a whole on reload, so a request runs on one
/// consistent config from start to end.
#[derive(Debug)]
pub struct Runtime {
    /// The config.
    pub config: Arc<Config>,
    /// Clusters by name.
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// Access log.
    pub access_log: Arc<AccessLog>,
}

/// About the client connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// Client address.
    pub client: SocketAddr,
    /// `h1`, `h2` or `h3`.
    pub protocol: &'static str,
}

/// The request handler shared by all listeners.
#[derive(Debug)]
pub struct Proxy {
    runtime: Arc<ArcSwap<Runtime>>,
    alt_svc: Option<HeaderValue>,
    limits: RouteLimits,
    request_metrics: RequestMetrics,
}

/// What the gateway answers: a response and, when it came from the in-task HTTP/1.1
/// client, the upstream's header fields as received, to be sent after the response's own
/// headers. The upstream's hop-by-hop fields and the ones the gateway replaces are out of
/// them; the gateway's own (`x-request-id`, `alt-svc`) are among them, first.
#[derive(Debug)]
pub struct Reply {
    /// Status, the headers that are not in `upstream_fields`, body.
    pub response: Response<ProxyBody>,
    /// The upstream's header fields, when they are not in `response`'s map.
    pub upstream_fields: Option<RawHead>,
}

impl Reply {
    /// One response with every header in its map, for the listeners that need one
    /// (HTTP/2, HTTP/3, hyper's HTTP/1.1).
    pub fn into_response(self) -> Response<ProxyBody> {
        let mut response = self.response;
        if let Some(fields) = self.upstream_fields {
            fields.append_to(response.headers_mut());
        }
        response
    }
}

impl From<Response<ProxyBody>> for Reply {
    fn from(response: Response<ProxyBody>) -> Self {
        Self {
            response,
            upstream_fields: None,
        }
    }
}

/// The headers the gateway sets on an upstream's response, replacing the upstream's.
struct ResponseOwn<'a> {
    /// `x-request-id`.
    request_id: &'a HeaderValue,
    /// `alt-svc`, on TCP listeners with HTTP/3 on.
    alt_svc: Option<&'a HeaderValue>,
}

/// The `x-meshedge-error` header: why the gateway answered a request itself.
pub const X_MESHEDGE_ERROR: http::HeaderName = http::HeaderName::from_static("x-meshedge-error");

impl Proxy {
    /// A handler over `runtime`; `alt_svc` is added to responses on TCP listeners.
    pub fn new(runtime: Arc<ArcSwap<Runtime>>, alt_svc: Option<HeaderValue>) -> Self {
        Self {
            runtime,
            alt_svc,
            limits: RouteLimits::default(),
            request_metrics: RequestMetrics::default(),
        }
    }

    /// The current runtime.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Handles one request; every header is in the response's map.
    pub async fn handle<B>(&self, req: Request<B>, conn: ConnInfo) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        self.reply(req, None, conn).await.into_response()
    }

    /// Handles one request whose header fields are in `fields` when they came as received
    /// (the HTTP/1.1 fast path; the request's map is then empty, and a `connection` field
    /// naming other fields is not among them). Header fields stay as they arrived both ways
    /// where the other side is HTTP/1.1 too.
    pub async fn reply<B>(&self, req: Request<B>, fields: Option<RawHead>, conn: ConnInfo) -> Reply
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let mut upstream_fields = None;
        let mut response = self.route(req, fields, conn, &mut upstream_fields).await;
        // With the upstream's fields kept raw, `forward` added `alt-svc` to them.
        if upstream_fields.is_none() {
            if let Some(v) = self.alt_svc_for(conn) {
                response
                    .headers_mut()
                    .insert(http::header::ALT_SVC, v.clone());
            }
        }
        Reply {
            response,
            upstream_fields,
        }
    }

    /// The `alt-svc` value responses on `conn` get (TCP listeners, HTTP/3 on).
    fn alt_svc_for(&self, conn: ConnInfo) -> Option<&HeaderValue> {
        self.alt_svc.as_ref().filter(|_| conn.protocol != "h3")
    }

    /// Routes and answers one request, its header fields in `client_fields` when they came
    /// as received. The upstream's header fields go to `upstream_fields` when its response
    /// came from the in-task HTTP/1.1 client.
    async fn route<B>(
        &self,
        req: Request<B>,
        mut client_fields: Option<RawHead>,
        conn: ConnInfo,
        upstream_fields: &mut Option<RawHead>,
    ) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let started = crate::clock::now();
        let rt = self.runtime.load_full();
        let (mut parts, body) = req.into_parts();
        // The authority (HTTP/2, HTTP/3, absolute-form HTTP/1.1) or the Host header; a
        // shared copy, not a string.
        let authority = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        let from_authority = authority.is_some();
        let host_value = authority.or_else(|| match &client_fields {
            Some(f) => f
                .received_value(b"host")
                .and_then(|v| HeaderValue::from_maybe_shared(v).ok()),
            None => parts.headers.get(HOST).cloned(),
        });
        let host_raw = host_value
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let host = normalize_host(host_raw);
        // The text fields only serve the access log: not built when it is off.
        let logging = rt.access_log.enabled();
        let mut entry = AccessEntry {
            client: Some(conn.client),
            protocol: conn.protocol,
            request_bytes: RequestFields::of(client_fields.as_ref(), &parts.headers)
                .first(CONTENT_LENGTH.as_str())
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()),
            ..Default::default()
        };
        if logging {
            entry.method = parts.method.to_string();
            entry.host = host.clone().into_owned();
            entry.path = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
        }
        let (request_id, roll) = ID_RNG.with_borrow_mut(|rng| {
            let id = match client_fields.as_mut() {
                Some(f) => headers::prepare_request_fields(f, conn.client.ip(), rng),
                None => headers::prepare_request(&mut parts.headers, conn.client.ip(), rng),
            };
            (id, rng.random::<u32>())
        });
        if logging {
            entry.request_id = request_id.to_str().unwrap_or_default().to_owned();
        }
        let info = RequestInfo {
            host: &host,
            path: parts.uri.path(),
            method: &parts.method,
            headers: RequestFields::of(client_fields.as_ref(), &parts.headers),
        };
        let Some(route) = rt.config.routes.find(&info) else {
            metrics::counter!(m::NO_ROUTE_TOTAL).increment(1);
            return self.local(
                &rt,
                entry,
                started,
                StatusCode::NOT_FOUND,
                "no_route",
                &request_id,
            );
        };
        entry.route = route.name.clone();
        if entry
            .request_bytes
            .is_some_and(|n| n > route.max_request_body_bytes)
        {
            metrics::counter!(m::REQUESTS_REFUSED_TOTAL, "reason" => "body_too_large").increment(1);
            return self.local(
                &rt,
                entry,
                started,
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &request_id,
            );
        }
        let cluster_name = route.pick_cluster(roll);
        entry.cluster = cluster_name.clone();
        let Some(cluster) = rt.clusters.get(&**cluster_name) else {
            return self.local(
                &rt,
                entry,
                started,
                StatusCode::SERVICE_UNAVAILABLE,
                "no_cluster",
                &request_id,
            );
        };
        if let Some(limit) = &route.rate_limit {
            let d = self.limits.check(
                &route.name,
                limit,
                conn.client.ip(),
                RequestFields::of(client_fields.as_ref(), &parts.headers),
                None,
            );
            if !d.allowed {
                let mut resp = self.local(
                    &rt,
                    entry,
                    started,
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    &request_id,
                );
                for (name, value) in d.headers() {
                    if let Ok(v) = HeaderValue::from_str(&value) {
                        resp.headers_mut().insert(name, v);
                    }
                }
                return resp;
            }
        }
        let _admission = match cluster.admit() {
            Ok(a) => a,
            Err(open) => return self.circuit_open(&rt, entry, started, open, &request_id),
        };

        // An authority the request had no Host header for becomes one.
        if let Some(v) = host_value
            .clone()
            .filter(|_| from_authority && !host_raw.is_empty())
        {
            match client_fields.as_mut() {
                Some(f) if !f.contains(b"host") => f.add(HOST, v),
                None if !parts.headers.contains_key(HOST) => {
                    parts.headers.insert(HOST, v);
                }
                _ => {}
            }
        }
        // Only a rewritten path makes a new URI; the upstream client takes the path and
        // query of this one and sets scheme and authority itself.
        if route.rewrite.is_some() {
            let pq = route.rewrite_path(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
            parts.uri = match pq.parse() {
                Ok(u) => u,
                Err(_) => {
                    return self.local(
                        &rt,
                        entry,
                        started,
                        StatusCode::BAD_REQUEST,
                        "bad_path",
                        &request_id,
                    )
                }
            };
        }
        let limit = usize::try_from(route.max_request_body_bytes).unwrap_or(usize::MAX);
        // A GET or HEAD without content-length carries no body in practice, but only its
        // end says so (HTTP/3 streams, chunked HTTP/1.1): read it, so that the request can
        // be retried and hedged like any other GET.
        let empty = body.is_end_stream();
        let small = empty
            || entry
                .request_bytes
                .is_some_and(|n| n <= REPLAY_MAX_BODY_BYTES)
            || (entry.request_bytes.is_none()
                && matches!(parts.method, http::Method::GET | http::Method::HEAD));
        // The limit error does not always surface through the client (an HTTP/2 upstream
        // just sees a reset stream), so a body that can hit it remembers that it did.
        let over_limit = (!empty).then(|| Arc::new(AtomicBool::new(false)));
        let limited = |body: B, flag: Arc<AtomicBool>| {
            Limited::new(body.map_err(Into::into), limit)
                .map_err(move |e| {
                    if e.is::<LengthLimitError>() {
                        flag.store(true, Ordering::SeqCst);
                    }
                    e
                })
                .boxed_unsync()
        };
        let body = match &over_limit {
            None => ReqBody::Buffered(Bytes::new()),
            Some(flag) if small => match limited(body, flag.clone()).collect().await {
                Ok(b) => ReqBody::Buffered(b.to_bytes()),
                Err(e) => {
                    let (status, reason) = if flag.load(Ordering::SeqCst)
                        || e.is::<LengthLimitError>()
                    {
                        metrics::counter!(m::REQUESTS_REFUSED_TOTAL, "reason" => "body_too_large")
                            .increment(1);
                        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
                    } else {
                        (StatusCode::BAD_REQUEST, "request_body")
                    };
                    return self.local(&rt, entry, started, status, reason, &request_id);
                }
            },
            Some(flag) => ReqBody::Streaming(Arc::new(std::sync::Mutex::new(Some(limited(
                body,
                flag.clone(),
            ))))),
        };
        let head = RequestHead {
            fields: client_fields,
            ..RequestHead::from(parts)
        };
        let timeout = route.timeout.unwrap_or_else(|| cluster.request_timeout());
        // The tries start now: the poll's clock reading, the request's start unless its body
        // was read first.
        let now = crate::clock::now();
        let window = (now, started + timeout);
        let answer = attempt::run(cluster, head, body, window, over_limit.as_ref()).await;
        entry.upstream_duration = Some(crate::clock::since(started));
        let upstream = |addr: SocketAddr| {
            if logging {
                addr.to_string()
            } else {
                String::new()
            }
        };
        match answer {
            Answer::Upstream(resp, addr) => {
                entry.upstream = upstream(addr);
                let own = ResponseOwn {
                    request_id: &request_id,
                    alt_svc: self.alt_svc_for(conn),
                };
                self.forward(&rt, entry, started, resp, own, upstream_fields)
            }
            Answer::CircuitOpen(open, addr) => {
                entry.upstream = upstream(addr);
                self.circuit_open(&rt, entry, started, open, &request_id)
            }
            Answer::Local(status, reason, addr) => {
                if let Some(addr) = addr {
                    entry.upstream = upstream(addr);
                }
                if reason == "body_too_large" {
                    metrics::counter!(m::REQUESTS_REFUSED_TOTAL, "reason" => "body_too_large")
                        .increment(1);
                }
                if reason == "no_endpoint" || reason == "own_svid_expired" {
                    metrics::counter!(m::UPSTREAM_FAILURES_TOTAL, "cluster" => cluster_name.to_owned(), "reason" => reason).increment(1);
                }
                self.local(&rt, entry, started, status, reason, &request_id)
            }
        }
    }

    /// Records the request's metrics; `elapsed` is its time so far.
    fn count(&self, entry: &AccessEntry, elapsed: Duration) {
        self.request_metrics.record(
            &entry.route,
            &entry.cluster,
            entry.status,
            entry.protocol,
            elapsed,
        );
    }

    fn forward(
        &self,
        rt: &Runtime,
        mut entry: AccessEntry,
        started: Instant,
        resp: Response<crate::upstream::ResponseBody>,
        own: ResponseOwn<'_>,
        upstream_fields: &mut Option<RawHead>,
    ) -> Response<ProxyBody> {
        let (mut parts, mut body) = resp.into_parts();
        let mut fields = body.take_fields();
        // The names a `connection` field lists are hop-by-hop too: the map's rules read
        // them (rare: the codec already took `connection: keep-alive|close` out).
        if let Some(listing) = fields.take_if(|f| f.contains(b"connection")) {
            listing.append_to(&mut parts.headers);
        }
        match &mut fields {
            Some(fields) => {
                let alt_svc = own.alt_svc.is_some();
                let replaced = |name: &[u8]| match name.len() {
                    12 => name.eq_ignore_ascii_case(b"x-request-id"),
                    7 => alt_svc && name.eq_ignore_ascii_case(b"alt-svc"),
                    _ => false,
                };
                fields.retain(|name, value| {
                    !(headers::is_hop_by_hop_field(name, value) || replaced(name))
                });
                fields.add(X_REQUEST_ID, own.request_id.clone());
                if let Some(v) = own.alt_svc {
                    fields.add(http::header::ALT_SVC, v.clone());
                }
            }
            None => {
                headers::strip_hop_by_hop(&mut parts.headers);
                parts.headers.insert(X_REQUEST_ID, own.request_id.clone());
            }
        }
        *upstream_fields = fields;
        parts.version = http::Version::default();
        entry.status = parts.status.as_u16();
        // The clock was read as the upstream's answer came, microseconds ago.
        let elapsed = entry
            .upstream_duration
            .unwrap_or_else(|| crate::clock::since(started));
        self.count(&entry, elapsed);
        Response::from_parts(parts, body::logged(body, entry, &rt.access_log, started))
    }

    /// `503` from a circuit breaker, naming the limit in `x-meshedge-circuit-open`.
    fn circuit_open(
        &self,
        rt: &Runtime,
        entry: AccessEntry,
        started: Instant,
        open: CircuitOpen,
        request_id: &HeaderValue,
    ) -> Response<ProxyBody> {
        let mut resp = self.local(
            rt,
            entry,
            started,
            StatusCode::SERVICE_UNAVAILABLE,
            "circuit_open",
            request_id,
        );
        resp.headers_mut().insert(
            OVERFLOW_HEADER,
            HeaderValue::from_static(open.resource.as_str()),
        );
        resp
    }

    fn local(
        &self,
        rt: &Runtime,
        mut entry: AccessEntry,
        started: Instant,
        status: StatusCode,
        reason: &'static str,
        request_id: &HeaderValue,
    ) -> Response<ProxyBody> {
        entry.status = status.as_u16();
        entry.error = reason;
        self.count(&entry, crate::clock::since(started));
        let text = format!("{} {}\n", status.as_u16(), reason.replace('_', " "));
        let mut resp = Response::new(body::logged(
            http_body_util::Full::new(Bytes::from(text)),
            entry,
            &rt.access_log,
            started,
        ));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(X_REQUEST_ID, request_id.clone());
        h.insert(X_MESHEDGE_ERROR, HeaderValue::from_static(reason));
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}
