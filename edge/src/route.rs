//! Routing, pure: a request's host, path, method and headers select the first matching
//! route in configuration order; the route names a cluster (or a weighted split) and how
//! the path is rewritten. No sockets here; `route/tests.rs` drives it with tables.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

use crate::headers::RequestFields;

/// A host pattern: `api.example.org` or `*.example.org`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// This host name exactly (case-insensitive).
    Exact(String),
    /// Any name with one or more labels before this suffix (stored with its leading dot).
    Wildcard(String),
}

impl HostMatch {
    /// Parses `name` or `*.suffix`; names are lowercased.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let p = pattern.trim_end_matches('.').to_ascii_lowercase();
        let check = |name: &str| {
            !name.is_empty()
                && name.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        };
        if let Some(suffix) = p.strip_prefix("*.") {
            if check(suffix) {
                return Ok(Self::Wildcard(format!(".{suffix}")));
            }
        } else if check(&p) {
            return Ok(Self::Exact(p));
        }
        Err(format!(
            "invalid host pattern {pattern:?} (name or *.suffix)"
        ))
    }

    /// True when `host` (lowercase, no port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => host == name,
            Self::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

/// A path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Segment-wise prefix: `/api` takes `/api` and `/api/x`, not `/apix`.
    Prefix(String),
    /// This path exactly (the query is ignored).
    Exact(String),
}

impl PathMatch {
    /// True when `path` (without query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Prefix(p) => {
                p == "/"
                    || (path.starts_with(p.as_str())
                        && (p.ends_with('/')
                            || path.len() == p.len()
                            || path.as_bytes()[p.len()] == b'/'))
            }
        }
    }
}

/// A header condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Header name.
    pub name: HeaderName,
    /// Required value, or `None` for "present with any value".
    pub value: Option<HeaderValue>,
}

/// Everything a route requires of a request; empty parts match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteMatch {
    /// Hosts (any of them).
    pub hosts: Vec<HostMatch>,
    /// Path condition.
    pub path: Option<PathMatch>,
    /// Methods (any of them).
    pub methods: Vec<Method>,
    /// Headers (all of them).
    pub headers: Vec<HeaderMatch>,
}

/// The parts of a request routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// Host, lowercase, without port.
    pub host: &'a str,
    /// Path without query.
    pub path: &'a str,
    /// Method.
    pub method: &'a Method,
    /// Header fields.
    pub headers: RequestFields<'a>,
}

impl RouteMatch {
    /// True when `req` meets every condition.
    pub fn matches(&self, req: &RequestInfo<'_>) -> bool {
        (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(req.host)))
            && self.path.as_ref().is_none_or(|p| p.matches(req.path))
            && (self.methods.is_empty() || self.methods.contains(req.method))
            && self.headers.iter().all(|h| match &h.value {
                None => req.headers.any_value(&h.name, |_| true),
                Some(want) => req.headers.any_value(&h.name, |v| v == want.as_bytes()),
            })
    }
}

/// A cluster with a share of a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedCluster {
    /// Cluster name (shared with every request's access entry: no copy per request).
    pub cluster: Arc<str>,
    /// Relative weight (> 0 for at least one entry).
    pub weight: u32,
}

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// One cluster.
    Cluster(Arc<str>),
    /// Weighted clusters (canary); the total weight is positive.
    Split(Vec<WeightedCluster>),
}

/// How the path is changed before forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    /// Remove the matched prefix.
    StripPrefix(String),
    /// Replace the matched prefix `from` with `to`.
    ReplacePrefix {
        /// The route's prefix.
        from: String,
        /// Its replacement.
        to: String,
    },
}

/// One route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Name (a metric label; shared with every request's access entry).
    pub name: Arc<str>,
    /// Conditions.
    pub matcher: RouteMatch,
    /// Target.
    pub backend: Backend,
    /// Path rewrite.
    pub rewrite: Option<PathRewrite>,
    /// Whole-request timeout; the cluster's when `None`.
    pub timeout: Option<Duration>,
    /// Largest request body accepted.
    pub max_request_body_bytes: u64,
    /// Token-bucket rate limit (`routes.rate_limit`).
    pub rate_limit: Option<crate::resilience::config::RateLimitConfig>,
}

impl Route {
    /// The cluster for this request; `roll` is uniform in `0..u32::MAX` (pass it in so that
    /// tests choose it).
    pub fn pick_cluster(&self, roll: u32) -> &Arc<str> {
        match &self.backend {
            Backend::Cluster(c) => c,
            Backend::Split(parts) => {
                let total: u64 = parts.iter().map(|p| u64::from(p.weight)).sum();
                let mut point = u64::from(roll) * total / (u64::from(u32::MAX) + 1);
                for p in parts {
                    let w = u64::from(p.weight);
                    if point < w {
                        return &p.cluster;
                    }
                    point -= w;
                }
                &parts
                    .last()
                    .expect("validated: a split is not empty")
                    .cluster
            }
        }
    }

    /// The path and query sent upstream for `path_and_query`.
    pub fn rewrite_path(&self, path_and_query: &str) -> String {
        let (prefix, to) = match &self.rewrite {
            None => return path_and_query.to_owned(),
            Some(PathRewrite::StripPrefix(p)) => (p.as_str(), "/"),
            Some(PathRewrite::ReplacePrefix { from, to }) => (from.as_str(), to.as_str()),
        };
        let Some(rest) = path_and_query.strip_prefix(prefix.trim_end_matches('/')) else {
            return path_and_query.to_owned();
        };
        let rest = rest.trim_start_matches('/');
        let mut out = to.to_owned();
        if rest.is_empty() || rest.starts_with('?') {
            out.push_str(rest);
        } else {
            if !out.ends_with('/') {
                out.push('/');
            }
            out.push_str(rest);
        }
        out
    }
}

/// Routes in configuration order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// A table of `routes`, tried in this order.
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// The first route that matches `req`.
    pub fn find(&self, req: &RequestInfo<'_>) -> Option<&Route> {
        self.routes.iter().find(|r| r.matcher.matches(req))
    }

    /// All routes, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// The host of a request: `:authority` or `Host`, lowercase, without port or trailing dot.
pub fn normalize_host(raw: &str) -> Cow<'_, str> {
    let no_port = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        raw.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(raw, |(h, _)| h)
    };
    let name = no_port.trim_end_matches('.');
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests;
