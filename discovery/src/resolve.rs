//! Resolving a service to endpoints: DNS-SD browse (PTR -> SRV + TXT -> A/AAAA), direct SRV,
//! and static lists.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};

use crate::endpoint::Endpoint;
use crate::name::ServiceName;

mod dns;

pub use dns::{DnsResolver, ResolverConfig};

/// Where the endpoints of one service come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// DNS-SD browse: PTR `_<svc>._tcp.<domain>`, then SRV + TXT per instance.
    Browse(ServiceName),
    /// SRV records directly at a name, without PTR (Kubernetes headless services).
    Srv(Name),
    /// A fixed list; never refreshed.
    Static(Vec<Endpoint>),
}

// === impl Source ===

impl Source {
    /// Bounded label for metrics: `browse`, `srv` or `static`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Browse(_) => "browse",
            Source::Srv(_) => "srv",
            Source::Static(_) => "static",
        }
    }

    /// A static source from socket addresses.
    pub fn from_addrs(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Source::Static(addrs.into_iter().map(Endpoint::from_socket_addr).collect())
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Browse(svc) => write!(f, "{svc}"),
            Source::Srv(name) => write!(f, "srv:{name}"),
            Source::Static(eps) => write!(f, "static:{} endpoints", eps.len()),
        }
    }
}

/// A successful answer: the endpoints and how long they may be cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The endpoints (possibly empty for an authoritative empty answer).
    pub endpoints: Vec<Endpoint>,
    /// Smallest remaining TTL among the records used; `None` means "never refresh"
    /// (static lists).
    pub ttl: Option<Duration>,
}

/// Why a lookup failed transiently. None of these empties an endpoint set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// No answer in time.
    Timeout,
    /// The server answered SERVFAIL.
    ServFail,
    /// The server answered REFUSED (or NOTAUTH).
    Refused,
    /// The server could not be reached (connection refused, no route, ...).
    Unreachable,
    /// Anything else: malformed answer, unexpected rcode.
    Other,
}

impl FailureReason {
    /// Bounded label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Timeout => "timeout",
            FailureReason::ServFail => "servfail",
            FailureReason::Refused => "refused",
            FailureReason::Unreachable => "unreachable",
            FailureReason::Other => "other",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resolution that failed; the caller keeps its last known good set.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// One DNS query failed.
    #[error("{record_type} lookup of {name} failed ({reason})")]
    Lookup {
        /// The queried name.
        name: Name,
        /// The queried type.
        record_type: RecordType,
        /// The classified cause.
        reason: FailureReason,
        /// The resolver's error.
        #[source]
        source: hickory_resolver::ResolveError,
    },
    /// The resolver has no nameservers to ask.
    #[error("no nameservers configured")]
    NoNameservers,
}

impl ResolveError {
    /// The classified cause, for metrics and decisions.
    pub fn reason(&self) -> FailureReason {
        match self {
            ResolveError::Lookup { reason, .. } => *reason,
            ResolveError::NoNameservers => FailureReason::Unreachable,
        }
    }
}

/// Something that resolves a [`Source`]: the DNS resolver, or a fake in tests.
pub trait Resolve: Send + Sync + 'static {
    /// Resolves `source` once. `Ok` with no endpoints is an authoritative empty answer.
    fn resolve(
        &self,
        source: &Source,
    ) -> impl Future<Output = Result<Resolution, ResolveError>> + Send;
}

impl<R: Resolve> Resolve for std::sync::Arc<R> {
    fn resolve(
        &self,
        source: &Source,
    ) -> impl Future<Output = Result<Resolution, ResolveError>> + Send {
        self.as_ref().resolve(source)
    }
}
