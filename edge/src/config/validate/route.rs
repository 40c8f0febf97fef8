//! `[[routes]]` -> [`Route`].

use http::{HeaderName, HeaderValue, Method};

use super::Checker;
use crate::config::raw::{RawConfig, RawRoute};
use crate::route::{
    Backend, HeaderMatch, HostMatch, PathMatch, PathRewrite, Route, RouteMatch, WeightedCluster,
};

pub(super) fn route(
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
            Some(Backend::Cluster(name.as_str().into()))
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
                        cluster: s.cluster.as_str().into(),
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
    if let Some(Err(e)) = r.rate_limit.as_ref().map(|l| l.validate()) {
        c.fail(format!("{key}.rate_limit.{}", e.key), e.problem);
    }
    Some(Route {
        name: r.name.clone().unwrap_or_else(|| format!("route{i}")).into(),
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
        rate_limit: r.rate_limit.clone(),
    })
}
