//! Raw config -> typed config. Every problem is collected with its key path, so `--check`
//! reports all of them at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use meshedge_ca::tls::AllowedIds;
use meshedge_ca::SpiffeId;

use super::raw::{RawCluster, RawConfig, RawRoute};
use super::*;
use crate::route::{
    Backend, HeaderMatch, HostMatch, PathMatch, PathRewrite, Route, RouteMatch, RouteTable,
    WeightedCluster,
};

/// Collects problems while converting.
struct Checker<'a> {
    base: &'a Path,
    files: FileCheck,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn fail(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn addr(&mut self, key: &str, v: &str) -> Option<SocketAddr> {
        match v.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.fail(key, format!("invalid address {v:?} (expected IP:PORT)"));
                None
            }
        }
    }

    fn duration(&mut self, key: &str, v: &str) -> Option<Duration> {
        match humantime::parse_duration(v) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.fail(key, "duration must be positive");
                None
            }
            Err(e) => {
                self.fail(
                    key,
                    format!("invalid duration {v:?}: {e} (e.g. 500ms, 30s)"),
                );
                None
            }
        }
    }

    fn file(&mut self, key: &str, v: &str) -> PathBuf {
        let p = self.base.join(v);
        if self.files == FileCheck::Exist && !p.is_file() {
            self.fail(key, format!("file not found: {}", p.display()));
        }
        p
    }

    fn positive(&mut self, key: &str, v: u64) {
        if v == 0 {
            self.fail(key, "must be greater than 0");
        }
    }
}

/// Validates `raw` (read from `source`; relative paths resolve against `base`).
pub fn validate(
    raw: RawConfig,
    source: &Path,
    base: &Path,
    files: FileCheck,
) -> Result<Config, Vec<Problem>> {
    let mut c = Checker {
        base,
        files,
        problems: Vec::new(),
    };
    let g = &raw.gateway;
    let gateway = GatewayConfig {
        name: g.name.clone(),
        zone: g.zone.clone(),
        drain_timeout: c
            .duration("gateway.drain_timeout", &g.drain_timeout)
            .unwrap_or_default(),
        watch_interval: c
            .duration("gateway.watch_interval", &g.watch_interval)
            .unwrap_or_default(),
    };
    if g.name.is_empty() {
        c.fail("gateway.name", "must not be empty");
    }

    let l = &raw.listener;
    let address = c.addr("listener.address", &l.address);
    if l.certificates.is_empty() {
        c.fail(
            "listener.certificates",
            "at least one certificate is needed",
        );
    }
    let certificates = l
        .certificates
        .iter()
        .enumerate()
        .map(|(i, cert)| {
            let key = format!("listener.certificates[{i}]");
            let server_names = cert
                .server_names
                .iter()
                .enumerate()
                .filter_map(|(j, n)| match HostMatch::parse(n) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        c.fail(format!("{key}.server_names[{j}]"), e);
                        None
                    }
                })
                .collect();
            CertificateConfig {
                cert: c.file(&format!("{key}.cert"), &cert.cert),
                key: c.file(&format!("{key}.key"), &cert.key),
                server_names,
            }
        })
        .collect();
    if l.max_header_bytes < 8192 {
        c.fail("listener.max_header_bytes", "must be at least 8192");
    }
    c.positive("listener.max_connections", l.max_connections as u64);
    c.positive(
        "listener.quic_max_connections",
        l.quic_max_connections as u64,
    );
    c.positive(
        "listener.h2_max_concurrent_streams",
        u64::from(l.h2_max_concurrent_streams),
    );
    c.positive(
        "listener.quic_max_concurrent_streams",
        u64::from(l.quic_max_concurrent_streams),
    );
    let limits = ListenerLimits {
        header_read_timeout: c
            .duration("listener.header_read_timeout", &l.header_read_timeout)
            .unwrap_or_default(),
        max_header_bytes: l.max_header_bytes,
        max_request_body_bytes: l.max_request_body_bytes,
        max_connections: l.max_connections,
        h2_max_concurrent_streams: l.h2_max_concurrent_streams,
        h2_max_pending_accept_reset_streams: l.h2_max_pending_accept_reset_streams,
        h2_max_local_error_reset_streams: l.h2_max_local_error_reset_streams,
        quic_max_connections: l.quic_max_connections,
        quic_max_concurrent_streams: l.quic_max_concurrent_streams,
    };
    let alt_svc_max_age = c
        .duration("listener.alt_svc_max_age", &l.alt_svc_max_age)
        .unwrap_or_default();

    let redirect = raw.redirect.as_ref().and_then(|r| {
        let a = c.addr("redirect.address", &r.address)?;
        Some(RedirectConfig {
            address: a,
            https_port: r.https_port.or(address.map(|a| a.port())).unwrap_or(443),
        })
    });
    let admin = c.addr("admin.address", &raw.admin.address);
    if let (Some(a), Some(l)) = (admin, address) {
        if a == l && a.port() != 0 {
            c.fail(
                "admin.address",
                format!("same address as listener.address ({a})"),
            );
        }
    }
    let identity = IdentityConfig {
        cert: c.file("identity.cert", &raw.identity.cert),
        key: c.file("identity.key", &raw.identity.key),
        bundle: c.file("identity.bundle", &raw.identity.bundle),
    };
    let access_log = match (raw.access_log.enabled, raw.access_log.output.as_str()) {
        (false, _) => AccessLogConfig::Off,
        (true, "stdout") => AccessLogConfig::Stdout,
        (true, "stderr") => AccessLogConfig::Stderr,
        (true, "") => {
            c.fail("access_log.output", "must be stdout, stderr or a file path");
            AccessLogConfig::Off
        }
        (true, path) => AccessLogConfig::File(base.join(path)),
    };

    let clusters: BTreeMap<String, ClusterConfig> = raw
        .clusters
        .iter()
        .filter_map(|(name, rc)| Some((name.clone(), cluster(&mut c, name, rc)?)))
        .collect();
    let routes = raw
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| route(&mut c, i, r, &raw, l.max_request_body_bytes))
        .collect();

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    Ok(Config {
        source: source.to_owned(),
        gateway,
        listener: ListenerConfig {
            address: address.expect("no problems, so the address parsed"),
            http3: l.http3,
            alt_svc_max_age,
            certificates,
            limits,
        },
        redirect,
        admin: AdminConfig {
            address: admin.expect("no problems, so the admin address parsed"),
        },
        identity,
        access_log,
        clusters,
        routes: RouteTable::new(routes),
        raw,
    })
}

fn cluster(c: &mut Checker<'_>, name: &str, rc: &RawCluster) -> Option<ClusterConfig> {
    let key = format!("clusters.{name}");
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        c.fail(&key, "cluster names use letters, digits, '-', '_' and '.'");
    }
    let endpoints = match (&rc.dns_sd, rc.endpoints.is_empty()) {
        (Some(_), false) => {
            c.fail(&key, "set either endpoints or dns_sd, not both");
            None
        }
        (None, true) => {
            c.fail(
                format!("{key}.endpoints"),
                "no endpoints (set endpoints or dns_sd)",
            );
            None
        }
        (Some(d), true) => {
            let resolvers = d
                .resolvers
                .iter()
                .enumerate()
                .filter_map(|(i, r)| c.addr(&format!("{key}.dns_sd.resolvers[{i}]"), r))
                .collect();
            let refresh = c.duration(&format!("{key}.dns_sd.refresh"), &d.refresh);
            if !d.service.starts_with('_') || !d.service.contains("._tcp.") {
                c.fail(
                    format!("{key}.dns_sd.service"),
                    format!(
                        "invalid service {:?} (expected _name._tcp.domain)",
                        d.service
                    ),
                );
            }
            Some(EndpointsConfig::DnsSd {
                service: d.service.clone(),
                resolvers,
                refresh: refresh.unwrap_or_default(),
            })
        }
        (None, false) => Some(EndpointsConfig::Static(
            rc.endpoints
                .iter()
                .enumerate()
                .filter_map(|(i, e)| {
                    let address = c.addr(&format!("{key}.endpoints[{i}]"), &e.address)?;
                    Some(StaticEndpoint {
                        address,
                        zone: e.zone.clone(),
                        weight: e.weight,
                        priority: e.priority,
                    })
                })
                .collect(),
        )),
    };
    let allowed_ids = match (rc.allowed_ids.is_empty(), rc.allowed_id_prefixes.is_empty()) {
        (true, true) => {
            c.fail(
                &key,
                "set allowed_ids or allowed_id_prefixes (upstream identities)",
            );
            None
        }
        (false, false) => {
            c.fail(&key, "set allowed_ids or allowed_id_prefixes, not both");
            None
        }
        (false, true) => Some(AllowedIds::Exact(
            rc.allowed_ids
                .iter()
                .enumerate()
                .filter_map(|(i, id)| match SpiffeId::parse(id) {
                    Ok(id) => Some(id),
                    Err(e) => {
                        c.fail(format!("{key}.allowed_ids[{i}]"), e.to_string());
                        None
                    }
                })
                .collect(),
        )),
        (true, false) => Some(AllowedIds::Prefixes(
            rc.allowed_id_prefixes
                .iter()
                .enumerate()
                .filter_map(|(i, p)| match SpiffeId::parse(p.trim_end_matches('/')) {
                    Ok(id) => Some(id.as_str().to_owned()),
                    Err(e) => {
                        c.fail(format!("{key}.allowed_id_prefixes[{i}]"), e.to_string());
                        None
                    }
                })
                .collect(),
        )),
    };
    let protocol = match rc.protocol.as_str() {
        "auto" => UpstreamProtocol::Auto,
        "http1" => UpstreamProtocol::Http1,
        "http2" => UpstreamProtocol::Http2,
        other => {
            c.fail(
                format!("{key}.protocol"),
                format!("unknown protocol {other:?} (auto, http1, http2)"),
            );
            UpstreamProtocol::Auto
        }
    };
    if let Some(sni) = &rc.server_name {
        if rustls::pki_types::ServerName::try_from(sni.as_str()).is_err() {
            c.fail(
                format!("{key}.server_name"),
                format!("invalid server name {sni:?}"),
            );
        }
    }
    let connect_timeout = c.duration(&format!("{key}.connect_timeout"), &rc.connect_timeout);
    let request_timeout = c.duration(&format!("{key}.request_timeout"), &rc.request_timeout);
    let pool_idle_timeout = c.duration(&format!("{key}.pool_idle_timeout"), &rc.pool_idle_timeout);
    Some(ClusterConfig {
        name: name.to_owned(),
        endpoints: endpoints?,
        allowed_ids: allowed_ids?,
        protocol,
        server_name: rc.server_name.clone(),
        connect_timeout: connect_timeout?,
        request_timeout: request_timeout?,
        pool_idle_timeout: pool_idle_timeout?,
        pool_max_idle_per_endpoint: rc.pool_max_idle_per_endpoint,
    })
}

fn route(
    c: &mut Checker<'_>,
    i: usize,
    r: &RawRoute,
    raw: &RawConfig,
    default_body: u64,
) -> Option<Route> {
    let key = format!("routes[{i}]");
    let m = &r.matcher;
    let hosts = m
        .hosts
        .iter()
        .enumerate()
        .filter_map(|(j, h)| match HostMatch::parse(h) {
            Ok(h) => Some(h),
            Err(e) => {
                c.fail(format!("{key}.match.hosts[{j}]"), e);
                None
            }
        })
        .collect();
    let path = match (&m.path_prefix, &m.path) {
        (Some(_), Some(_)) => {
            c.fail(format!("{key}.match"), "set path_prefix or path, not both");
            None
        }
        (Some(p), None) => Some(PathMatch::Prefix(p.clone())),
        (None, Some(p)) => Some(PathMatch::Exact(p.clone())),
        (None, None) => None,
    };
    for (k, p) in [("path_prefix", &m.path_prefix), ("path", &m.path)] {
        if p.as_ref().is_some_and(|p| !p.starts_with('/')) {
            c.fail(format!("{key}.match.{k}"), "must start with '/'");
        }
    }
    let methods = m
        .methods
        .iter()
        .enumerate()
        .filter_map(
            |(j, s)| match Method::from_bytes(s.to_ascii_uppercase().as_bytes()) {
                Ok(m) => Some(m),
                Err(_) => {
                    c.fail(
                        format!("{key}.match.methods[{j}]"),
                        format!("invalid method {s:?}"),
                    );
                    None
                }
            },
        )
        .collect();
    let headers = m
        .headers
        .iter()
        .filter_map(|(name, value)| {
            let hk = format!("{key}.match.headers.{name}");
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                c.fail(hk, "invalid header name");
                return None;
            };
            let value = if value == "*" {
                None
            } else {
                match HeaderValue::from_str(value) {
                    Ok(v) => Some(v),
                    Err(_) => {
                        c.fail(hk, format!("invalid header value {value:?}"));
                        return None;
                    }
                }
            };
            Some(HeaderMatch { name, value })
        })
        .collect();
    let known = |c: &mut Checker<'_>, k: String, name: &str| {
        if !raw.clusters.contains_key(name) {
            c.fail(k, format!("unknown cluster {name:?}"));
        }
    };
    let backend = match (&r.cluster, r.split.is_empty()) {
        (Some(name), true) => {
            known(c, format!("{key}.cluster"), name);
            Some(Backend::Cluster(name.clone()))
        }
        (None, false) => {
            for (j, s) in r.split.iter().enumerate() {
                known(c, format!("{key}.split[{j}].cluster"), &s.cluster);
            }
            if r.split.iter().all(|s| s.weight == 0) {
                c.fail(format!("{key}.split"), "weights must not all be 0");
            }
            Some(Backend::Split(
                r.split
                    .iter()
                    .map(|s| WeightedCluster {
                        cluster: s.cluster.clone(),
                        weight: s.weight,
                    })
                    .collect(),
            ))
        }
        (Some(_), false) => {
            c.fail(&key, "set cluster or split, not both");
            None
        }
        (None, true) => {
            c.fail(&key, "set cluster or split");
            None
        }
    };
    let rewrite = match (r.strip_prefix, &r.rewrite_prefix, &m.path_prefix) {
        (false, None, _) => None,
        (true, Some(_), _) => {
            c.fail(&key, "set strip_prefix or rewrite_prefix, not both");
            None
        }
        (_, _, None) => {
            c.fail(
                &key,
                "strip_prefix and rewrite_prefix need match.path_prefix",
            );
            None
        }
        (true, None, Some(p)) => Some(PathRewrite::StripPrefix(p.clone())),
        (false, Some(to), Some(p)) => {
            if !to.starts_with('/') {
                c.fail(format!("{key}.rewrite_prefix"), "must start with '/'");
            }
            Some(PathRewrite::ReplacePrefix {
                from: p.clone(),
                to: to.clone(),
            })
        }
    };
    let timeout = match &r.timeout {
        Some(t) => Some(c.duration(&format!("{key}.timeout"), t)?),
        None => None,
    };
    Some(Route {
        name: r.name.clone().unwrap_or_else(|| format!("route{i}")),
        matcher: RouteMatch {
            hosts,
            path,
            methods,
            headers,
        },
        backend: backend?,
        rewrite,
        timeout,
        max_request_body_bytes: r.max_request_body_bytes.unwrap_or(default_body),
    })
}
