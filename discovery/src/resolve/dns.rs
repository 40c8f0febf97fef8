//! The DNS implementation of [`Resolve`] on hickory-resolver.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt, TryStreamExt};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::xfer::Protocol as Transport;
use hickory_proto::xfer::{DnsHandle, DnsRequestOptions, FirstAnswer};
use hickory_proto::ProtoErrorKind;
use hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig as HickoryConfig,
    ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::name_server::{NameServerPool, TokioConnectionProvider};
use hickory_resolver::TokioResolver;
use tokio::sync::Semaphore;

use super::{FailureReason, Resolution, Resolve, ResolveError, Source};
use crate::endpoint::Endpoint;
use crate::metrics as m;
use crate::txt::{self, Txt};

/// How to reach the DNS servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Nameservers to ask, each over UDP with TCP for truncated answers.
    pub nameservers: Vec<SocketAddr>,
    /// Timeout of one query attempt.
    pub timeout: Duration,
    /// Attempts per query.
    pub attempts: usize,
    /// Records cached by the resolver (0, the default, disables the cache). Watches
    /// re-resolve when their records expire, so a cache rarely answers them; when it does
    /// (a target shared by services refreshing at different moments) it hands back a record
    /// about to expire, which drags the watch into an extra refresh a moment later.
    pub cache_size: usize,
    /// Queries in flight at once for one resolution (instances and targets).
    pub concurrency: usize,
    /// Queries in flight at once for the whole resolver, all watches together (0 means
    /// no limit). Many watches refreshing together then queue instead of flooding the
    /// server with datagrams it drops (each drop costs a timeout and a retry).
    pub max_in_flight: usize,
}

impl ResolverConfig {
    /// Defaults (2 s timeout, 2 attempts, no cache, 32 queries in flight per resolution and
    /// 64 for the resolver) for the given nameservers.
    pub fn new(nameservers: Vec<SocketAddr>) -> Self {
        Self {
            nameservers,
            timeout: Duration::from_secs(2),
            attempts: 2,
            cache_size: 0,
            concurrency: 32,
            max_in_flight: 64,
        }
    }
}

/// Resolves sources over DNS. Cheap to clone; clones share connections and cache.
#[derive(Clone)]
pub struct DnsResolver {
    inner: TokioResolver,
    /// The same nameservers without the cache, for queries whose whole response is read
    /// (PTR answers with DNS-SD records in the Additional section).
    pool: NameServerPool<TokioConnectionProvider>,
    attempts: usize,
    concurrency: usize,
    in_flight: Option<Arc<Semaphore>>,
}

enum Answer {
    Records(Lookup),
    Empty { negative_ttl: Option<Duration> },
}

// === impl DnsResolver ===

impl DnsResolver {
    /// Builds a resolver that asks only `config.nameservers`.
    pub fn new(config: &ResolverConfig) -> Result<Self, ResolveError> {
        if config.nameservers.is_empty() {
            return Err(ResolveError::NoNameservers);
        }
        let mut group = NameServerConfigGroup::new();
        for addr in &config.nameservers {
            for transport in [Transport::Udp, Transport::Tcp] {
                let mut ns = NameServerConfig::new(*addr, transport);
                ns.trust_negative_responses = true;
                group.push(ns);
            }
        }
        let mut opts = ResolverOpts::default();
        opts.timeout = config.timeout;
        opts.attempts = config.attempts;
        opts.cache_size = config.cache_size;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.edns0 = true;
        opts.ndots = 0;
        opts.try_tcp_on_error = true;
        opts.num_concurrent_reqs = 1;
        let pool = NameServerPool::from_config(
            group.clone(),
            opts.clone(),
            TokioConnectionProvider::default(),
        );
        let hickory = HickoryConfig::from_parts(None, vec![], group);
        let inner = TokioResolver::builder_with_config(hickory, TokioConnectionProvider::default())
            .with_options(opts)
            .build();
        Ok(Self {
            inner,
            pool,
            attempts: config.attempts.max(1),
            concurrency: config.concurrency.max(1),
            in_flight: (config.max_in_flight > 0)
                .then(|| Arc::new(Semaphore::new(config.max_in_flight))),
        })
    }

    async fn query(&self, name: &Name, record_type: RecordType) -> Result<Answer, ResolveError> {
        // The semaphore is never closed; a permit is held for the query only.
        let _permit = match &self.in_flight {
            Some(limit) => limit.acquire().await.ok(),
            None => None,
        };
        match self.inner.lookup(name.clone(), record_type).await {
            Ok(lookup) => Ok(Answer::Records(lookup)),
            Err(err) => classify(name, record_type, err),
        }
    }

    /// One query through the uncached pool, whole response kept; retried on timeouts and
    /// unreachable servers like the resolver's own queries.
    async fn query_message(
        &self,
        name: &Name,
        record_type: RecordType,
    ) -> Result<Result<Message, Option<Duration>>, ResolveError> {
        let _permit = match &self.in_flight {
            Some(limit) => limit.acquire().await.ok(),
            None => None,
        };
        let mut options = DnsRequestOptions::default();
        options.use_edns = true;
        let mut last = None;
        for _ in 0..self.attempts {
            let query = Query::query(name.clone(), record_type);
            match self.pool.lookup(query, options).first_answer().await {
                Ok(response) => return Ok(Ok(response.into_message())),
                Err(error) => match classify(name, record_type, error.into()) {
                    // `classify` only ever answers `Empty`.
                    Ok(Answer::Empty { negative_ttl }) => return Ok(Err(negative_ttl)),
                    Ok(Answer::Records(_)) => return Ok(Err(None)),
                    Err(error)
                        if matches!(
                            error.reason(),
                            FailureReason::Timeout | FailureReason::Unreachable
                        ) =>
                    {
                        last = Some(error);
                    }
                    Err(error) => return Err(error),
                },
            }
        }
        Err(last.unwrap_or(ResolveError::NoNameservers))
    }

    async fn browse(&self, svc: &crate::ServiceName) -> Result<Resolution, ResolveError> {
        let mut ttl = Ttl::default();
        let ptr_name = svc.to_name();
        let message = match self.query_message(&ptr_name, RecordType::PTR).await? {
            Ok(message) => message,
            Err(negative_ttl) => return Ok(empty(negative_ttl)),
        };
        let mut instances: Vec<Name> = Vec::new();
        for record in message.answers() {
            if let (Some(ptr), true) = (record.data().as_ptr(), *record.name() == ptr_name) {
                ttl.add(Duration::from_secs(u64::from(record.ttl())));
                instances.push(ptr.0.clone());
            }
        }
        if instances.is_empty() {
            // Answers, but no PTR for this name (NODATA itself arrives as an error above).
            return Ok(empty(None));
        }
        instances.sort();
        instances.dedup();
        // RFC 6763 section 12.1: SRV, TXT and addresses the server sent along (our server
        // does; BIND and dnsmasq do not). Instances or targets without them are queried.
        let mut extra: HashMap<(Name, RecordType), Vec<&Record>> = HashMap::new();
        for record in message.additionals() {
            extra
                .entry((record.name().to_lowercase(), record.record_type()))
                .or_default()
                .push(record);
        }
        let rrset = |name: &Name, rtype: RecordType| extra.get(&(name.to_lowercase(), rtype));

        let mut found: Vec<Option<InstanceRecords>> = Vec::new();
        let mut missing = Vec::new();
        for instance in instances {
            match (
                rrset(&instance, RecordType::SRV),
                rrset(&instance, RecordType::TXT),
            ) {
                (Some(srv), Some(txt)) => {
                    let mut t = Ttl::default();
                    for r in srv.iter().chain(txt.iter()) {
                        t.add(Duration::from_secs(u64::from(r.ttl())));
                    }
                    let srvs = Srv::from_records(srv.iter().copied());
                    let txt = parse_txt(&instance, txt.iter().copied());
                    if srvs.is_empty() {
                        missing.push(instance);
                    } else {
                        found.push(Some((instance_label(svc, &instance), srvs, txt, t)));
                    }
                }
                _ => missing.push(instance),
            }
        }
        let lookups: Vec<_> = missing
            .into_iter()
            .map(|instance| self.instance(svc, instance))
            .collect();
        let queried: Vec<Option<InstanceRecords>> = stream::iter(lookups)
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        found.extend(queried);
        let mut per_instance = Vec::new();
        for (name, srvs, txt, t) in found.into_iter().flatten() {
            ttl.merge(t);
            per_instance.push((name, srvs, txt));
        }
        let mut addrs: HashMap<Name, Vec<IpAddr>> = HashMap::new();
        let mut unknown: Vec<&Name> = Vec::new();
        for srv in per_instance.iter().flat_map(|(_, s, _)| s) {
            let a = rrset(&srv.target, RecordType::A);
            let aaaa = rrset(&srv.target, RecordType::AAAA);
            if a.is_none() && aaaa.is_none() {
                unknown.push(&srv.target);
                continue;
            }
            let entry = addrs.entry(srv.target.clone()).or_default();
            if !entry.is_empty() {
                continue;
            }
            for r in a.into_iter().chain(aaaa).flatten() {
                ttl.add(Duration::from_secs(u64::from(r.ttl())));
                entry.extend(address(r));
            }
        }
        let queried = self.addresses(unknown.into_iter(), &mut ttl).await?;
        addrs.extend(queried);
        let mut endpoints = Vec::new();
        for (instance, srvs, txt) in &per_instance {
            for srv in srvs {
                endpoints.extend(srv.endpoints(instance, txt, &addrs));
            }
        }
        Ok(Resolution {
            endpoints,
            ttl: Some(ttl.get()),
        })
    }

    /// SRV + TXT of one instance; `None` when it has no SRV (removed, or a stale PTR).
    async fn instance(
        &self,
        svc: &crate::ServiceName,
        name: Name,
    ) -> Result<Option<InstanceRecords>, ResolveError> {
        let label = instance_label(svc, &name);
        let (srv, txt) = tokio::join!(
            self.query(&name, RecordType::SRV),
            self.query(&name, RecordType::TXT)
        );
        let mut ttl = Ttl::default();
        let srvs = match srv? {
            Answer::Records(l) => {
                ttl.add_lookup(&l);
                Srv::from_records(l.record_iter())
            }
            Answer::Empty { .. } => Vec::new(),
        };
        if srvs.is_empty() {
            tracing::warn!(instance = %name, "instance has no SRV record; skipped");
            ::metrics::counter!(m::INSTANCES_SKIPPED_TOTAL, "reason" => "no_srv").increment(1);
            return Ok(None);
        }
        let txt = match txt? {
            Answer::Records(l) => {
                ttl.add_lookup(&l);
                parse_txt(&name, l.record_iter())
            }
            Answer::Empty { .. } => Txt::default(),
        };
        Ok(Some((label, srvs, txt, ttl)))
    }

    async fn direct_srv(&self, name: &Name) -> Result<Resolution, ResolveError> {
        let mut ttl = Ttl::default();
        let lookup = match self.query(name, RecordType::SRV).await? {
            Answer::Records(l) => l,
            Answer::Empty { negative_ttl } => return Ok(empty(negative_ttl)),
        };
        ttl.add_lookup(&lookup);
        let srvs = Srv::from_records(lookup.record_iter());
        let addrs = self
            .addresses(srvs.iter().map(|s| &s.target), &mut ttl)
            .await?;
        let none = Txt::default();
        let mut endpoints = Vec::new();
        for srv in &srvs {
            let instance = srv.target.to_ascii();
            let instance = instance.trim_end_matches('.');
            endpoints.extend(srv.endpoints(instance, &none, &addrs));
        }
        Ok(Resolution {
            endpoints,
            ttl: Some(ttl.get()),
        })
    }

    /// A and AAAA of every distinct target.
    async fn addresses<'a>(
        &self,
        targets: impl Iterator<Item = &'a Name>,
        ttl: &mut Ttl,
    ) -> Result<HashMap<Name, Vec<IpAddr>>, ResolveError> {
        let mut targets: Vec<Name> = targets.cloned().collect();
        targets.sort();
        targets.dedup();
        let mut queries = Vec::with_capacity(targets.len() * 2);
        for target in &targets {
            for rt in [RecordType::A, RecordType::AAAA] {
                queries.push(async move {
                    Ok::<_, ResolveError>((target.clone(), self.query(target, rt).await?))
                });
            }
        }
        let answers: Vec<(Name, Answer)> = stream::iter(queries)
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        let mut out: HashMap<Name, Vec<IpAddr>> = HashMap::new();
        for (target, answer) in answers {
            let entry = out.entry(target).or_default();
            if let Answer::Records(l) = answer {
                ttl.add_lookup(&l);
                entry.extend(l.record_iter().filter_map(address));
            }
        }
        Ok(out)
    }
}

impl Resolve for DnsResolver {
    async fn resolve(&self, source: &Source) -> Result<Resolution, ResolveError> {
        match source {
            Source::Browse(svc) => self.browse(svc).await,
            Source::Srv(name) => self.direct_srv(name).await,
            Source::Static(eps) => Ok(Resolution {
                endpoints: eps.clone(),
                ttl: None,
            }),
        }
    }
}

/// Instance label, its SRV records, its TXT and the smallest TTL among them.
type InstanceRecords = (String, Vec<Srv>, Txt, Ttl);

struct Srv {
    priority: u16,
    weight: u16,
    port: u16,
    target: Name,
}

impl Srv {
    fn from_records<'a>(records: impl Iterator<Item = &'a Record>) -> Vec<Srv> {
        records
            .filter_map(|r| r.data().as_srv())
            // A target of "." means "no service at this instance" (RFC 2782).
            .filter(|s| !s.target().is_root())
            .map(|s| Srv {
                priority: s.priority(),
                weight: s.weight(),
                port: s.port(),
                target: s.target().clone(),
            })
            .collect()
    }

    fn endpoints(
        &self,
        instance: &str,
        txt: &Txt,
        addrs: &HashMap<Name, Vec<IpAddr>>,
    ) -> Vec<Endpoint> {
        let found = addrs.get(&self.target).map(Vec::as_slice).unwrap_or(&[]);
        if found.is_empty() {
            tracing::warn!(%instance, target = %self.target, "SRV target has no address; skipped");
            ::metrics::counter!(m::INSTANCES_SKIPPED_TOTAL, "reason" => "no_address").increment(1);
        }
        found
            .iter()
            .map(|address| Endpoint {
                instance: instance.to_owned(),
                address: *address,
                port: self.port,
                priority: self.priority,
                weight: self.weight,
                zone: txt.zone.clone(),
                attributes: txt.attributes.clone(),
            })
            .collect()
    }
}

fn instance_label(svc: &crate::ServiceName, name: &Name) -> String {
    svc.instance_of(name).unwrap_or_else(|| {
        let first = name.iter().next().unwrap_or_default();
        String::from_utf8_lossy(first).into_owned()
    })
}

fn address(record: &Record) -> Option<IpAddr> {
    match record.data() {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

fn parse_txt<'a>(owner: &Name, mut records: impl Iterator<Item = &'a Record>) -> Txt {
    // Several TXT records at one name are unusual; the first one is used.
    let owner = owner.to_string();
    records
        .find_map(|r| r.data().as_txt())
        .map(|t| txt::parse(&owner, t.iter().map(|s| &s[..])))
        .unwrap_or_default()
}

/// Smallest TTL seen (the time until the first record expires).
#[derive(Default, Clone, Copy)]
struct Ttl(Option<Duration>);

impl Ttl {
    fn add(&mut self, d: Duration) {
        self.0 = Some(self.0.map_or(d, |cur| cur.min(d)));
    }
    fn add_lookup(&mut self, lookup: &Lookup) {
        self.add(
            lookup
                .valid_until()
                .saturating_duration_since(Instant::now()),
        );
    }
    fn merge(&mut self, other: Ttl) {
        if let Some(d) = other.0 {
            self.add(d);
        }
    }
    fn get(self) -> Duration {
        self.0.unwrap_or(Duration::ZERO)
    }
}

fn empty(negative_ttl: Option<Duration>) -> Resolution {
    Resolution {
        endpoints: Vec::new(),
        ttl: Some(negative_ttl.unwrap_or(Duration::ZERO)),
    }
}

/// NXDOMAIN and NODATA are answers (empty); everything else is a transient failure.
fn classify(
    name: &Name,
    record_type: RecordType,
    err: hickory_resolver::ResolveError,
) -> Result<Answer, ResolveError> {
    let reason = match err.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound {
            response_code,
            negative_ttl,
            ..
        }) => match *response_code {
            ResponseCode::NXDomain | ResponseCode::NoError => {
                return Ok(Answer::Empty {
                    negative_ttl: negative_ttl.map(|s| Duration::from_secs(u64::from(s))),
                })
            }
            ResponseCode::ServFail => FailureReason::ServFail,
            ResponseCode::Refused | ResponseCode::NotAuth => FailureReason::Refused,
            _ => FailureReason::Other,
        },
        Some(ProtoErrorKind::Timeout) => FailureReason::Timeout,
        Some(ProtoErrorKind::Io(_) | ProtoErrorKind::NoConnections | ProtoErrorKind::Busy) => {
            FailureReason::Unreachable
        }
        _ => FailureReason::Other,
    };
    Err(ResolveError::Lookup {
        name: name.clone(),
        record_type,
        reason,
        source: err,
    })
}
