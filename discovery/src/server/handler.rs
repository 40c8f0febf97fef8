//! Turning one request into one response: queries from the zones, TSIG-checked updates.

use std::path::PathBuf;
use std::sync::RwLock;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};

use super::persist;
use super::update;
use super::zone::{Answer, Zone};
use crate::metrics as m;
use crate::tsig::{self, ResponseSigner, TsigFailure, TsigKey};

/// Largest UDP payload we send, whatever the client advertises.
const MAX_UDP_PAYLOAD: u16 = 4096;
/// The EDNS payload size we advertise.
const OUR_UDP_PAYLOAD: u16 = 1232;

/// Which transport a request came over (limits the response size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

/// Shared state of a running server.
pub(crate) struct Handler {
    zones: RwLock<Vec<Zone>>,
    keys: Vec<TsigKey>,
    snapshot: Option<PathBuf>,
    /// Serializes updates so snapshots are written in order.
    update_lock: tokio::sync::Mutex<()>,
}

impl Handler {
    pub(crate) fn new(zones: Vec<Zone>, keys: Vec<TsigKey>, snapshot: Option<PathBuf>) -> Self {
        Self {
            zones: RwLock::new(zones),
            keys,
            snapshot,
            update_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn zones(&self) -> Vec<Zone> {
        self.zones.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Handles one raw request received at unix time `now`; `None` means no reply.
    pub(crate) async fn handle(
        &self,
        raw: &[u8],
        transport: Transport,
        now: u64,
    ) -> Option<Vec<u8>> {
        let request = match Message::from_vec(raw) {
            Ok(m) => m,
            Err(error) => {
                tracing::debug!(%error, "malformed request");
                let id = u16::from_be_bytes([*raw.first()?, *raw.get(1)?]);
                let reply = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
                return reply.to_vec().ok();
            }
        };
        if request.message_type() != MessageType::Query {
            return None;
        }
        let (response, signer) = match request.op_code() {
            OpCode::Query => (self.query(&request), None),
            OpCode::Update => self.update(&request, raw, now).await,
            _ => (reply_to(&request, ResponseCode::NotImp), None),
        };
        encode(response, &request, transport, signer, now)
    }

    fn query(&self, request: &Message) -> Message {
        let [query] = request.queries() else {
            return reply_to(request, ResponseCode::FormErr);
        };
        let mut response = reply_to(request, ResponseCode::NoError);
        let zones = self.zones.read().unwrap_or_else(|e| e.into_inner());
        let zone = zones
            .iter()
            .filter(|z| z.contains(query.name()))
            .max_by_key(|z| z.origin().num_labels());
        let rcode = match (zone, query.query_class()) {
            (Some(zone), DNSClass::IN | DNSClass::ANY) => {
                response.set_authoritative(true);
                match zone.lookup(query.name(), query.query_type()) {
                    Answer::Found(records) => {
                        if query.query_type() == RecordType::PTR {
                            response.add_additionals(dns_sd_additionals(zone, &records));
                        }
                        response.add_answers(records.into_iter().cloned());
                        ResponseCode::NoError
                    }
                    Answer::NoData => {
                        response.add_name_servers(zone.negative_soa());
                        ResponseCode::NoError
                    }
                    Answer::NxDomain => {
                        response.add_name_servers(zone.negative_soa());
                        ResponseCode::NXDomain
                    }
                }
            }
            _ => ResponseCode::Refused,
        };
        ::metrics::counter!(m::SERVER_QUERIES_TOTAL, "rcode" => rcode_label(rcode)).increment(1);
        response.set_response_code(rcode);
        response
    }

    async fn update(
        &self,
        request: &Message,
        raw: &[u8],
        now: u64,
    ) -> (Message, Option<ResponseSigner>) {
        let verified = match tsig::verify_request(&self.keys, request, raw, now) {
            Ok(v) => v,
            Err(failure) => {
                let rcode = match failure {
                    TsigFailure::Unsigned => ResponseCode::Refused,
                    _ => ResponseCode::NotAuth,
                };
                tracing::warn!(
                    reason = failure.as_str(),
                    "update refused: bad or missing tsig"
                );
                count_update(failure.as_str());
                return (reply_to(request, rcode), None);
            }
        };
        let signer = Some(ResponseSigner {
            signer: verified.key.signer(),
            request_mac: verified.mac,
        });
        let rcode = self.apply_update(request).await;
        count_update(rcode_label(rcode));
        (reply_to(request, rcode), signer)
    }

    async fn apply_update(&self, request: &Message) -> ResponseCode {
        let [zone_q] = request.queries() else {
            return ResponseCode::FormErr;
        };
        if zone_q.query_type() != RecordType::SOA {
            return ResponseCode::FormErr;
        }
        let origin: Name = zone_q.name().to_lowercase();
        let _serial = self.update_lock.lock().await;
        // The update is applied in place (only the touched RRsets are copied, for undo);
        // updates are serialized by `update_lock`, so the zone list cannot change under us.
        let (index, undo, bytes, serial) = {
            let mut zones = self.zones.write().unwrap_or_else(|e| e.into_inner());
            let Some(index) = zones.iter().position(|z| *z.origin() == origin) else {
                return ResponseCode::NotAuth;
            };
            let undo = match update::apply_in_place(
                &mut zones[index],
                request.answers(),
                request.name_servers(),
            ) {
                Ok(Some(undo)) => undo,
                Ok(None) => return ResponseCode::NoError,
                Err(rcode) => {
                    tracing::info!(zone = %origin, %rcode, "update rejected");
                    return rcode;
                }
            };
            let bytes = self
                .snapshot
                .as_ref()
                .map(|_| persist::encode(zones.iter().flat_map(Zone::records)));
            (index, undo, bytes, zones[index].serial())
        };
        if let (Some(path), Some(bytes)) = (&self.snapshot, bytes) {
            if let Err(error) = persist::store(path, bytes).await {
                tracing::error!(%error, "zone snapshot not written; update reverted");
                ::metrics::counter!(m::SERVER_PERSIST_ERRORS_TOTAL).increment(1);
                undo.revert(&mut self.zones.write().unwrap_or_else(|e| e.into_inner())[index]);
                return ResponseCode::ServFail;
            }
        }
        tracing::info!(zone = %origin, serial, "zone updated");
        ResponseCode::NoError
    }
}

/// RFC 6763 section 12.1: with PTR answers, the SRV and TXT of each instance and the A/AAAA
/// of each SRV target (when this zone has them), so a browse needs one query. Dropped (not
/// truncated) when the response does not fit.
fn dns_sd_additionals(zone: &Zone, ptrs: &[&Record]) -> Vec<Record> {
    let mut out = Vec::new();
    for ptr in ptrs {
        let Some(instance) = ptr.data().as_ptr().map(|p| &p.0) else {
            continue;
        };
        if !zone.contains(instance) {
            continue;
        }
        let srvs = zone.rrset(instance, RecordType::SRV);
        out.extend(srvs.iter().cloned());
        out.extend(zone.rrset(instance, RecordType::TXT).iter().cloned());
        for target in srvs
            .iter()
            .filter_map(|r| r.data().as_srv())
            .map(|s| s.target())
        {
            if zone.contains(target) {
                for rtype in [RecordType::A, RecordType::AAAA] {
                    out.extend(zone.rrset(target, rtype).iter().cloned());
                }
            }
        }
    }
    out
}

fn count_update(outcome: &'static str) {
    ::metrics::counter!(m::SERVER_UPDATES_TOTAL, "outcome" => outcome).increment(1);
}

fn rcode_label(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "noerror",
        ResponseCode::NXDomain => "nxdomain",
        ResponseCode::Refused => "refused",
        ResponseCode::FormErr => "formerr",
        ResponseCode::ServFail => "servfail",
        ResponseCode::NotAuth => "notauth",
        ResponseCode::NotZone => "notzone",
        ResponseCode::YXDomain => "yxdomain",
        ResponseCode::YXRRSet => "yxrrset",
        ResponseCode::NXRRSet => "nxrrset",
        ResponseCode::NotImp => "notimp",
        _ => "other",
    }
}

fn reply_to(request: &Message, rcode: ResponseCode) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_response_code(rcode);
    response.add_queries(request.queries().iter().cloned());
    if request.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(OUR_UDP_PAYLOAD).set_version(0);
        response.set_edns(edns);
    }
    response
}

/// Encodes (and signs) a response, truncating it to fit a UDP reply.
fn encode(
    mut response: Message,
    request: &Message,
    transport: Transport,
    signer: Option<ResponseSigner>,
    now: u64,
) -> Option<Vec<u8>> {
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => usize::from(request.max_payload().clamp(512, MAX_UDP_PAYLOAD)),
    };
    let time = u32::try_from(now).unwrap_or(u32::MAX);
    let finish = |mut msg: Message| -> Option<Vec<u8>> {
        if let Some(signer) = &signer {
            if let Err(error) = msg.finalize(signer, time) {
                tracing::error!(%error, "signing response failed");
                return None;
            }
        }
        msg.to_vec().ok()
    };
    let bytes = finish(response.clone())?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    if !response.additionals().is_empty() {
        // Additional data is optional: drop it before truncating (RFC 2181 section 9).
        response.take_additionals();
        let bytes = finish(response.clone())?;
        if bytes.len() <= limit {
            return Some(bytes);
        }
    }
    // Too big: header and question only, TC set; the client retries over TCP.
    response.take_answers();
    response.take_name_servers();
    response.take_additionals();
    response.set_truncated(true);
    finish(response)
}
