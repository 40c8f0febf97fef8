//! One authoritative zone held in memory, and answering queries from it.

use std::collections::BTreeMap;

use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// RRsets keyed by lowercased owner name and type.
pub(crate) type Key = (Name, RecordType);

/// An authoritative zone: SOA and NS at the apex plus whatever updates added.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    origin: Name,
    rrsets: BTreeMap<Key, Vec<Record>>,
}

/// The answer to one question from one zone.
#[derive(Debug, PartialEq)]
pub(crate) enum Answer<'z> {
    /// The records asked for.
    Found(Vec<&'z Record>),
    /// The name exists (or has descendants) but not with that type.
    NoData,
    /// The name does not exist.
    NxDomain,
}

// === impl Zone ===

impl Zone {
    /// A fresh zone with an SOA (negative TTL `negative_ttl`) and one NS, `ns.<origin>`.
    pub fn new(origin: &Name, negative_ttl: u32) -> Self {
        let mut origin = origin.to_lowercase();
        origin.set_fqdn(true);
        let ns = Name::from_ascii("ns")
            .and_then(|n| n.append_domain(&origin))
            .unwrap_or_else(|_| origin.clone());
        let hostmaster = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(&origin))
            .unwrap_or_else(|_| origin.clone());
        let soa = SOA::new(ns.clone(), hostmaster, 1, 3600, 600, 86400, negative_ttl);
        let mut zone = Self {
            origin: origin.clone(),
            rrsets: BTreeMap::new(),
        };
        zone.insert(Record::from_rdata(origin.clone(), 3600, RData::SOA(soa)));
        zone.insert(Record::from_rdata(origin, 3600, RData::NS(NS(ns))));
        zone
    }

    /// The zone apex.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// True when `name` is at or below the apex.
    pub fn contains(&self, name: &Name) -> bool {
        self.origin.zone_of(name)
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        self.soa_data().map_or(0, SOA::serial)
    }

    fn soa_data(&self) -> Option<&SOA> {
        self.rrsets
            .get(&(self.origin.clone(), RecordType::SOA))
            .and_then(|v| v.first())
            .and_then(|r| r.data().as_soa())
    }

    /// The SOA record with its TTL lowered to the negative TTL (for negative answers).
    pub(crate) fn negative_soa(&self) -> Option<Record> {
        let rrset = self.rrsets.get(&(self.origin.clone(), RecordType::SOA))?;
        let mut soa = rrset.first()?.clone();
        let minimum = soa.data().as_soa().map_or(0, SOA::minimum);
        soa.set_ttl(soa.ttl().min(minimum));
        Some(soa)
    }

    /// Adds 1 to the SOA serial (after a change).
    pub(crate) fn bump_serial(&mut self) {
        if let Some(soa) = self
            .rrsets
            .get_mut(&(self.origin.clone(), RecordType::SOA))
            .and_then(|v| v.first_mut())
        {
            if let RData::SOA(data) = soa.data_mut() {
                data.increment_serial();
            }
        }
    }

    /// Every record, in name and type order.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.rrsets.values().flatten()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.rrsets.values().map(Vec::len).sum()
    }

    /// True when the zone holds no record at all (never true after [`Zone::new`]).
    pub fn is_empty(&self) -> bool {
        self.rrsets.is_empty()
    }

    /// The records of one RRset.
    pub(crate) fn rrset(&self, name: &Name, rtype: RecordType) -> &[Record] {
        self.rrsets
            .get(&(name.to_lowercase(), rtype))
            .map_or(&[], Vec::as_slice)
    }

    /// True if any RRset is at `name`.
    pub(crate) fn name_in_use(&self, name: &Name) -> bool {
        let name = name.to_lowercase();
        self.first_at_or_after(&name).is_some_and(|n| *n == name)
    }

    /// The first owner name at or after `name` in canonical order (RFC 4034 section 6.1,
    /// hickory's `Ord` for `Name`): `name` itself, else its first descendant if it has one,
    /// since a name's descendants sort right after it. Logarithmic, not a scan.
    fn first_at_or_after(&self, name: &Name) -> Option<&Name> {
        self.rrsets
            .range((name.clone(), RecordType::ZERO)..)
            .next()
            .map(|((n, _), _)| n)
    }

    /// True if `name` or a descendant owns records (so `name` exists, maybe as an empty
    /// non-terminal such as `_tcp.<domain>`).
    fn name_exists(&self, name: &Name) -> bool {
        let name = name.to_lowercase();
        self.first_at_or_after(&name)
            .is_some_and(|n| name.zone_of(n))
    }

    /// Adds one record; a record with the same data replaces the old one (new TTL). All
    /// records of an RRset take the TTL of the last one added.
    pub(crate) fn insert(&mut self, mut record: Record) {
        record.set_dns_class(DNSClass::IN);
        let key = (record.name().to_lowercase(), record.record_type());
        let rrset = self.rrsets.entry(key).or_default();
        let ttl = record.ttl();
        rrset.retain(|r| r.data() != record.data());
        rrset.push(record);
        for r in rrset.iter_mut() {
            r.set_ttl(ttl);
        }
    }

    /// Puts back a record from a snapshot; a snapshot SOA replaces the fresh one.
    pub(crate) fn restore(&mut self, record: Record) {
        if record.record_type() == RecordType::SOA {
            if *record.name() != self.origin {
                return;
            }
            self.remove_rrset(&self.origin.clone(), RecordType::SOA);
        }
        self.insert(record);
    }

    /// The keys of every RRset owned by `name` (lowercased).
    pub(crate) fn keys_at(&self, name: &Name) -> Vec<Key> {
        self.rrsets
            .range((name.clone(), RecordType::ZERO)..)
            .map(|(k, _)| k)
            .take_while(|(n, _)| n == name)
            .cloned()
            .collect()
    }

    /// One RRset by its key.
    pub(crate) fn get_rrset(&self, key: &Key) -> Option<&Vec<Record>> {
        self.rrsets.get(key)
    }

    /// Sets (or with `None` removes) one RRset by its key.
    pub(crate) fn put_rrset(&mut self, key: Key, rrset: Option<Vec<Record>>) {
        match rrset {
            Some(rrset) => {
                self.rrsets.insert(key, rrset);
            }
            None => {
                self.rrsets.remove(&key);
            }
        }
    }

    /// Removes a whole RRset.
    pub(crate) fn remove_rrset(&mut self, name: &Name, rtype: RecordType) {
        self.rrsets.remove(&(name.to_lowercase(), rtype));
    }

    /// Removes every RRset at `name`.
    pub(crate) fn remove_name(&mut self, name: &Name) {
        let name = name.to_lowercase();
        self.rrsets.retain(|(n, _), _| *n != name);
    }

    /// Removes the record with this data; returns whether it was there.
    pub(crate) fn remove_record(&mut self, name: &Name, rtype: RecordType, data: &RData) {
        let key = (name.to_lowercase(), rtype);
        if let Some(rrset) = self.rrsets.get_mut(&key) {
            rrset.retain(|r| r.data() != data);
            if rrset.is_empty() {
                self.rrsets.remove(&key);
            }
        }
    }

    /// Answers one question.
    pub(crate) fn lookup(&self, name: &Name, rtype: RecordType) -> Answer<'_> {
        let lower = name.to_lowercase();
        let found: Vec<&Record> = if rtype == RecordType::ANY {
            self.rrsets
                .iter()
                .filter(|((n, _), _)| *n == lower)
                .flat_map(|(_, v)| v)
                .collect()
        } else {
            self.rrsets
                .get(&(lower.clone(), rtype))
                .map(|v| v.iter().collect())
                .unwrap_or_default()
        };
        if !found.is_empty() {
            Answer::Found(found)
        } else if self.name_exists(&lower) {
            Answer::NoData
        } else {
            Answer::NxDomain
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, PTR};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    #[test]
    fn answers() {
        let mut zone = Zone::new(&name("Mesh.Example."), 5);
        assert_eq!(zone.origin(), &name("mesh.example."));
        let svc = name("_http._tcp.mesh.example.");
        let inst = name("web._http._tcp.mesh.example.");
        zone.insert(Record::from_rdata(
            svc.clone(),
            30,
            RData::PTR(PTR(inst.clone())),
        ));
        zone.insert(Record::from_rdata(
            name("host.mesh.example."),
            30,
            RData::A(A::new(10, 0, 0, 1)),
        ));
        let cases = [
            ("_HTTP._tcp.mesh.example.", RecordType::PTR, "found"),
            ("_http._tcp.mesh.example.", RecordType::SRV, "nodata"),
            ("_tcp.mesh.example.", RecordType::PTR, "nodata"),
            ("nope.mesh.example.", RecordType::A, "nx"),
            ("host.mesh.example.", RecordType::ANY, "found"),
            ("mesh.example.", RecordType::SOA, "found"),
        ];
        for (q, t, want) in cases {
            let got = match zone.lookup(&name(q), t) {
                Answer::Found(_) => "found",
                Answer::NoData => "nodata",
                Answer::NxDomain => "nx",
            };
            assert_eq!(got, want, "{q} {t}");
        }
        assert_eq!(zone.negative_soa().expect("soa").ttl(), 5);
        assert_eq!(zone.serial(), 1);
        zone.bump_serial();
        assert_eq!(zone.serial(), 2);
    }

    #[test]
    fn insert_dedups_and_unifies_ttl() {
        let mut zone = Zone::new(&name("z."), 5);
        let owner = name("h.z.");
        zone.insert(Record::from_rdata(
            owner.clone(),
            10,
            RData::A(A::new(1, 1, 1, 1)),
        ));
        zone.insert(Record::from_rdata(
            owner.clone(),
            20,
            RData::A(A::new(2, 2, 2, 2)),
        ));
        zone.insert(Record::from_rdata(
            owner.clone(),
            30,
            RData::A(A::new(1, 1, 1, 1)),
        ));
        let rrset = zone.rrset(&owner, RecordType::A);
        assert_eq!(rrset.len(), 2);
        assert!(rrset.iter().all(|r| r.ttl() == 30));
        zone.remove_record(&owner, RecordType::A, &RData::A(A::new(1, 1, 1, 1)));
        zone.remove_record(&owner, RecordType::A, &RData::A(A::new(2, 2, 2, 2)));
        assert!(!zone.name_in_use(&owner));
    }
}
