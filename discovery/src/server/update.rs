//! RFC 2136 prerequisite checks and update application on a [`Zone`] (pure).

use std::collections::{BTreeMap, BTreeSet};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::zone::{Key, Zone};

/// Checks the prerequisites and applies the updates to a copy of `zone`.
///
/// Returns the new zone (serial bumped) when something changed, `None` when the update
/// was a no-op, or the RFC 2136 response code for a failed prerequisite or a bad update.
#[cfg(test)]
pub(crate) fn apply(
    zone: &Zone,
    prerequisites: &[Record],
    updates: &[Record],
) -> Result<Option<Zone>, ResponseCode> {
    let mut next = zone.clone();
    Ok(apply_in_place(&mut next, prerequisites, updates)?.map(|_| next))
}

/// The RRsets an update touched, as they were before it: [`Undo::revert`] puts them back.
#[derive(Debug)]
pub(crate) struct Undo {
    saved: Vec<(Key, Option<Vec<Record>>)>,
}

impl Undo {
    /// Restores the zone as it was before the update.
    pub(crate) fn revert(self, zone: &mut Zone) {
        for (key, rrset) in self.saved {
            zone.put_rrset(key, rrset);
        }
    }
}

/// Checks the prerequisites and applies the updates to `zone` itself, copying only the
/// RRsets the updates touch (so an update costs the same in a zone of any size).
///
/// Returns how to undo it (serial bumped) when something changed, `None` when the update
/// was a no-op (zone untouched), or the RFC 2136 response code for a failed prerequisite
/// or a bad update (zone untouched).
pub(crate) fn apply_in_place(
    zone: &mut Zone,
    prerequisites: &[Record],
    updates: &[Record],
) -> Result<Option<Undo>, ResponseCode> {
    check_prerequisites(zone, prerequisites)?;
    prescan(zone, updates)?;
    let mut keys: BTreeSet<Key> = BTreeSet::new();
    for update in updates {
        let name = update.name().to_lowercase();
        if update.dns_class() == DNSClass::ANY && update.record_type() == RecordType::ANY {
            keys.extend(zone.keys_at(&name));
        } else {
            keys.insert((name, update.record_type()));
        }
    }
    let saved: Vec<(Key, Option<Vec<Record>>)> = keys
        .into_iter()
        .map(|key| {
            let rrset = zone.get_rrset(&key).cloned();
            (key, rrset)
        })
        .collect();
    for record in updates {
        apply_one(zone, record);
    }
    let changed = saved
        .iter()
        .any(|(key, before)| zone.get_rrset(key) != before.as_ref());
    if !changed {
        return Ok(None);
    }
    let soa = (zone.origin().clone(), RecordType::SOA);
    let mut undo = Undo { saved };
    if !undo.saved.iter().any(|(key, _)| *key == soa) {
        let before = zone.get_rrset(&soa).cloned();
        undo.saved.push((soa, before));
    }
    zone.bump_serial();
    Ok(Some(undo))
}

fn is_empty_rdata(record: &Record) -> bool {
    matches!(record.data(), RData::Update0(_))
}

/// RFC 2136 section 3.2.
fn check_prerequisites(zone: &Zone, prerequisites: &[Record]) -> Result<(), ResponseCode> {
    // Value-dependent prerequisites are compared as whole RRsets.
    let mut wanted: BTreeMap<(Name, RecordType), BTreeSet<Vec<u8>>> = BTreeMap::new();
    for pre in prerequisites {
        if pre.ttl() != 0 {
            return Err(ResponseCode::FormErr);
        }
        if !zone.contains(pre.name()) {
            return Err(ResponseCode::NotZone);
        }
        let rtype = pre.record_type();
        match pre.dns_class() {
            DNSClass::ANY => {
                if !is_empty_rdata(pre) {
                    return Err(ResponseCode::FormErr);
                }
                if rtype == RecordType::ANY {
                    if !zone.name_in_use(pre.name()) {
                        return Err(ResponseCode::NXDomain);
                    }
                } else if zone.rrset(pre.name(), rtype).is_empty() {
                    return Err(ResponseCode::NXRRSet);
                }
            }
            DNSClass::NONE => {
                if !is_empty_rdata(pre) {
                    return Err(ResponseCode::FormErr);
                }
                if rtype == RecordType::ANY {
                    if zone.name_in_use(pre.name()) {
                        return Err(ResponseCode::YXDomain);
                    }
                } else if !zone.rrset(pre.name(), rtype).is_empty() {
                    return Err(ResponseCode::YXRRSet);
                }
            }
            DNSClass::IN => {
                if is_empty_rdata(pre) || rtype == RecordType::ANY {
                    return Err(ResponseCode::FormErr);
                }
                wanted
                    .entry((pre.name().to_lowercase(), rtype))
                    .or_default()
                    .insert(rdata_bytes(pre.data())?);
            }
            _ => return Err(ResponseCode::FormErr),
        }
    }
    for ((name, rtype), want) in wanted {
        let have = zone
            .rrset(&name, rtype)
            .iter()
            .map(|r| rdata_bytes(r.data()))
            .collect::<Result<BTreeSet<_>, _>>()?;
        if have != want {
            return Err(ResponseCode::NXRRSet);
        }
    }
    Ok(())
}

/// Canonical wire form of rdata, to compare RRsets by value.
fn rdata_bytes(data: &RData) -> Result<Vec<u8>, ResponseCode> {
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, EncodeMode};
    let mut buf = Vec::new();
    let mut enc = BinEncoder::with_mode(&mut buf, EncodeMode::Signing);
    enc.set_canonical_names(true);
    data.emit(&mut enc).map_err(|_| ResponseCode::FormErr)?;
    Ok(buf)
}

/// RFC 2136 section 3.4.1.
fn prescan(zone: &Zone, updates: &[Record]) -> Result<(), ResponseCode> {
    for update in updates {
        if !zone.contains(update.name()) {
            return Err(ResponseCode::NotZone);
        }
        let rtype = update.record_type();
        let meta = matches!(
            rtype,
            RecordType::AXFR | RecordType::IXFR | RecordType::OPT | RecordType::TSIG
        );
        match update.dns_class() {
            DNSClass::IN => {
                if rtype == RecordType::ANY || meta || is_empty_rdata(update) {
                    return Err(ResponseCode::FormErr);
                }
            }
            DNSClass::ANY => {
                if update.ttl() != 0 || !is_empty_rdata(update) || meta {
                    return Err(ResponseCode::FormErr);
                }
            }
            DNSClass::NONE => {
                if update.ttl() != 0 || rtype == RecordType::ANY || meta {
                    return Err(ResponseCode::FormErr);
                }
            }
            _ => return Err(ResponseCode::FormErr),
        }
    }
    Ok(())
}

/// RFC 2136 section 3.4.2; SOA and NS at the apex are protected.
fn apply_one(zone: &mut Zone, update: &Record) {
    let name = update.name();
    let rtype = update.record_type();
    let apex = name == zone.origin();
    let protected = apex && matches!(rtype, RecordType::SOA | RecordType::NS);
    match update.dns_class() {
        DNSClass::IN => {
            if rtype == RecordType::SOA {
                // The serial is ours to manage.
                return;
            }
            zone.insert(update.clone());
        }
        DNSClass::ANY if rtype == RecordType::ANY => {
            if apex {
                let keep: Vec<Record> = zone
                    .rrset(name, RecordType::SOA)
                    .iter()
                    .chain(zone.rrset(name, RecordType::NS))
                    .cloned()
                    .collect();
                zone.remove_name(name);
                for r in keep {
                    zone.insert(r);
                }
            } else {
                zone.remove_name(name);
            }
        }
        DNSClass::ANY if !protected => zone.remove_rrset(name, rtype),
        DNSClass::NONE => {
            let last_ns = rtype == RecordType::NS && zone.rrset(name, rtype).len() <= 1;
            if !(apex && (rtype == RecordType::SOA || last_ns)) {
                zone.remove_record(name, rtype, update.data());
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
