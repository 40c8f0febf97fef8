//! Registering DNS-SD instances with RFC 2136 dynamic updates signed with TSIG.
//!
//! Each operation is one update message, applied atomically by the server:
//!
//! - [`Registrar::register`] creates an instance only if its name is not in use;
//! - [`Registrar::update`] replaces SRV, TXT and addresses only if the instance's SRV still
//!   exists, so a stale writer cannot resurrect an instance someone removed;
//! - [`Registrar::deregister`] removes the instance (and its PTR and listed addresses) only
//!   if it exists.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::metrics as m;
use crate::name::{NameError, ServiceName};
use crate::tsig::TsigKey;
use crate::txt::{self, Txt};

mod wire;

/// One instance to advertise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The service type it belongs to.
    pub service: ServiceName,
    /// The instance label (RFC 6763 instance name).
    pub name: String,
    /// Host name the SRV points at; its A/AAAA records are `addresses`. Use one target per
    /// instance: deregistering removes the listed addresses from the target.
    pub target: Name,
    /// Port.
    pub port: u16,
    /// SRV priority (failover tier).
    pub priority: u16,
    /// SRV weight.
    pub weight: u16,
    /// Zone and attributes for TXT.
    pub txt: Txt,
    /// Addresses of `target`.
    pub addresses: Vec<IpAddr>,
    /// TTL of every record, in seconds.
    pub ttl: u32,
}

/// Why a registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The instance name is invalid.
    #[error("invalid instance")]
    Name(#[from] NameError),
    /// A name is outside the zone being updated.
    #[error("{name} is outside zone {zone}")]
    OutsideZone {
        /// The name.
        name: String,
        /// The zone.
        zone: String,
    },
    /// `register` found the instance name already in use.
    #[error("instance {instance} is already registered")]
    AlreadyRegistered {
        /// The instance name.
        instance: String,
    },
    /// `update` or `deregister` found no such instance.
    #[error("instance {instance} is not registered")]
    NotRegistered {
        /// The instance name.
        instance: String,
    },
    /// The server refused the update.
    #[error("server {server} answered {rcode} for {instance}")]
    Rejected {
        /// The server.
        server: SocketAddr,
        /// The instance name.
        instance: String,
        /// The response code.
        rcode: ResponseCode,
    },
    /// Talking to the server failed.
    #[error("talking to {server}")]
    Io {
        /// The server.
        server: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The response was malformed, mismatched or its TSIG did not verify.
    #[error("bad response from {server}: {reason}")]
    BadResponse {
        /// The server.
        server: SocketAddr,
        /// What was wrong.
        reason: String,
    },
}

impl RegisterError {
    /// True for failures worth retrying later (network, timeouts, SERVFAIL).
    pub fn is_retryable(&self) -> bool {
        match self {
            RegisterError::Io { .. } => true,
            RegisterError::Rejected { rcode, .. } => *rcode == ResponseCode::ServFail,
            _ => false,
        }
    }
}

/// Sends signed updates for one zone to one server (over TCP).
#[derive(Debug, Clone)]
pub struct Registrar {
    server: SocketAddr,
    zone: Name,
    key: TsigKey,
    timeout: Duration,
}

#[derive(Clone, Copy)]
enum Op {
    Register,
    Update,
    Deregister,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Register => "register",
            Op::Update => "update",
            Op::Deregister => "deregister",
        }
    }
}

// === impl Registrar ===

impl Registrar {
    /// A registrar for `zone` at `server`, signing with `key`, 5 s timeout.
    pub fn new(server: SocketAddr, zone: Name, key: TsigKey) -> Self {
        let mut zone = zone.to_lowercase();
        zone.set_fqdn(true);
        Self {
            server,
            zone,
            key,
            timeout: Duration::from_secs(5),
        }
    }

    /// Sets the timeout of one update exchange.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Creates the instance; fails with `AlreadyRegistered` if its name is in use.
    pub async fn register(&self, instance: &Instance) -> Result<(), RegisterError> {
        let name = self.instance_name(instance)?;
        let mut msg = self.message();
        msg.add_answer(empty(&name, RecordType::ANY, DNSClass::NONE));
        for record in records(instance, &name) {
            msg.add_name_server(record);
        }
        self.send(Op::Register, &name, msg).await
    }

    /// Replaces SRV, TXT and target addresses; fails with `NotRegistered` if the instance
    /// was removed meanwhile.
    pub async fn update(&self, instance: &Instance) -> Result<(), RegisterError> {
        let name = self.instance_name(instance)?;
        let mut msg = self.message();
        msg.add_answer(empty(&name, RecordType::SRV, DNSClass::ANY));
        for rtype in [RecordType::SRV, RecordType::TXT] {
            msg.add_name_server(empty(&name, rtype, DNSClass::ANY));
        }
        for rtype in [RecordType::A, RecordType::AAAA] {
            msg.add_name_server(empty(&instance.target, rtype, DNSClass::ANY));
        }
        for record in records(instance, &name) {
            msg.add_name_server(record);
        }
        self.send(Op::Update, &name, msg).await
    }

    /// `register`, or `update` if the instance already exists.
    pub async fn register_or_update(&self, instance: &Instance) -> Result<(), RegisterError> {
        match self.register(instance).await {
            Err(RegisterError::AlreadyRegistered { .. }) => self.update(instance).await,
            other => other,
        }
    }

    /// Removes the instance, its PTR and its target addresses; fails with `NotRegistered`
    /// if it does not exist.
    pub async fn deregister(&self, instance: &Instance) -> Result<(), RegisterError> {
        let name = self.instance_name(instance)?;
        let mut msg = self.message();
        msg.add_answer(empty(&name, RecordType::SRV, DNSClass::ANY));
        msg.add_name_server(empty(&name, RecordType::ANY, DNSClass::ANY));
        let mut ptr =
            Record::from_rdata(instance.service.to_name(), 0, RData::PTR(PTR(name.clone())));
        ptr.set_dns_class(DNSClass::NONE);
        msg.add_name_server(ptr);
        for mut record in address_records(instance) {
            record.set_ttl(0).set_dns_class(DNSClass::NONE);
            msg.add_name_server(record);
        }
        self.send(Op::Deregister, &name, msg).await
    }

    fn instance_name(&self, instance: &Instance) -> Result<Name, RegisterError> {
        let name = instance.service.instance_name(&instance.name)?;
        for n in [&name, &instance.target] {
            if !self.zone.zone_of(n) {
                return Err(RegisterError::OutsideZone {
                    name: n.to_string(),
                    zone: self.zone.to_string(),
                });
            }
        }
        Ok(name)
    }

    fn message(&self) -> Message {
        let mut msg = Message::new();
        msg.set_id(rand::random())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update)
            .set_recursion_desired(false);
        let mut zone = Query::query(self.zone.clone(), RecordType::SOA);
        zone.set_query_class(DNSClass::IN);
        msg.add_query(zone);
        msg
    }

    async fn send(&self, op: Op, instance: &Name, msg: Message) -> Result<(), RegisterError> {
        let result = wire::exchange(self.server, &self.key, msg, self.timeout).await;
        let result = result.and_then(|rcode| match rcode {
            ResponseCode::NoError => Ok(()),
            ResponseCode::YXDomain => Err(RegisterError::AlreadyRegistered {
                instance: instance.to_string(),
            }),
            ResponseCode::NXRRSet => Err(RegisterError::NotRegistered {
                instance: instance.to_string(),
            }),
            rcode => Err(RegisterError::Rejected {
                server: self.server,
                instance: instance.to_string(),
                rcode,
            }),
        });
        let outcome = if result.is_ok() { "ok" } else { "error" };
        ::metrics::counter!(m::REGISTRATIONS_TOTAL, "op" => op.as_str(), "outcome" => outcome)
            .increment(1);
        match &result {
            Ok(()) => tracing::info!(%instance, op = op.as_str(), "dns-sd registration sent"),
            Err(error) => {
                tracing::warn!(%instance, op = op.as_str(), %error, "dns-sd registration failed")
            }
        }
        result
    }
}

fn empty(name: &Name, rtype: RecordType, class: DNSClass) -> Record {
    let mut r = Record::update0(name.clone(), 0, rtype);
    r.set_dns_class(class);
    r
}

fn address_records(instance: &Instance) -> Vec<Record> {
    instance
        .addresses
        .iter()
        .map(|ip| {
            let data = match ip {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            Record::from_rdata(instance.target.clone(), instance.ttl, data)
        })
        .collect()
}

/// PTR, SRV, TXT and A/AAAA records of an instance.
fn records(instance: &Instance, name: &Name) -> Vec<Record> {
    let ttl = instance.ttl;
    let mut strings = txt::encode(&instance.txt);
    if strings.is_empty() {
        // RFC 6763 section 6.1: a TXT record with a single empty string.
        strings.push(String::new());
    }
    let srv = SRV::new(
        instance.priority,
        instance.weight,
        instance.port,
        instance.target.clone(),
    );
    let mut out = vec![
        Record::from_rdata(
            instance.service.to_name(),
            ttl,
            RData::PTR(PTR(name.clone())),
        ),
        Record::from_rdata(name.clone(), ttl, RData::SRV(srv)),
        Record::from_rdata(name.clone(), ttl, RData::TXT(TXT::new(strings))),
    ];
    out.extend(address_records(instance));
    out
}
