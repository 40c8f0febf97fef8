//! Raw config -> typed config. Every problem is collected with its key path, so `--check`
//! reports all of them at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod cluster;
mod route;

use super::raw::RawConfig;
use super::*;
use crate::route::{HostMatch, RouteTable};
use cluster::cluster;
use route::route;

/// Collects problems while converting.
pub(super) struct Checker<'a> {
    base: &'a Path,
    files: FileCheck,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    pub(super) fn fail(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn addr(&mut self, key: &str, v: &str) -> Option<SocketAddr> {
        match v.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.fail(key, format!("invalid address {v:?} (expected IP:PORT)"));
                None
            }
        }
    }

    pub(super) fn duration(&mut self, key: &str, v: &str) -> Option<Duration> {
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

    pub(super) fn file(&mut self, key: &str, v: &str) -> PathBuf {
        let p = self.base.join(v);
        if self.files == FileCheck::Exist && !p.is_file() {
            self.fail(key, format!("file not found: {}", p.display()));
        }
        p
    }

    pub(super) fn positive(&mut self, key: &str, v: u64) {
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
    let ri = &raw.identity;
    let identity = match (&ri.workload_api_socket, &ri.cert, &ri.key, &ri.bundle) {
        (None, Some(cert), Some(key), Some(bundle)) => IdentityConfig::Files {
            cert: c.file("identity.cert", cert),
            key: c.file("identity.key", key),
            bundle: c.file("identity.bundle", bundle),
        },
        (Some(addr), None, None, None) => match meshedge_agent::client::socket_path(addr) {
            Ok(socket) => IdentityConfig::WorkloadApi { socket },
            Err(_) => {
                c.fail(
                    "identity.workload_api_socket",
                    format!("invalid address {addr:?} (expected unix:///absolute/path)"),
                );
                IdentityConfig::WorkloadApi {
                    socket: PathBuf::new(),
                }
            }
        },
        (Some(_), _, _, _) => {
            c.fail(
                "identity",
                "set workload_api_socket or cert/key/bundle, not both",
            );
            IdentityConfig::WorkloadApi {
                socket: PathBuf::new(),
            }
        }
        (None, _, _, _) => {
            c.fail(
                "identity",
                "set cert, key and bundle (files), or workload_api_socket",
            );
            IdentityConfig::WorkloadApi {
                socket: PathBuf::new(),
            }
        }
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
        .filter_map(|(name, rc)| {
            Some((
                name.clone(),
                cluster(&mut c, name, rc, raw.gateway.zone.as_deref())?,
            ))
        })
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
            fleet_status_file: raw.admin.fleet_status_file.clone(),
        },
        identity,
        access_log,
        clusters,
        routes: RouteTable::new(routes),
        raw,
    })
}
