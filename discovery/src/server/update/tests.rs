use hickory_proto::rr::rdata::{A, SRV, TXT};

use super::*;

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}

fn a(owner: &str, last: u8) -> Record {
    Record::from_rdata(name(owner), 30, RData::A(A::new(10, 0, 0, last)))
}

fn class(mut r: Record, c: DNSClass, ttl: u32) -> Record {
    r.set_dns_class(c);
    r.set_ttl(ttl);
    r
}

fn empty(owner: &str, t: RecordType, c: DNSClass) -> Record {
    let mut r = Record::update0(name(owner), 0, t);
    r.set_dns_class(c);
    r
}

fn zone() -> Zone {
    let mut z = Zone::new(&name("z."), 5);
    z.insert(a("h.z.", 1));
    z.insert(Record::from_rdata(
        name("i.z."),
        30,
        RData::SRV(SRV::new(0, 1, 80, name("h.z."))),
    ));
    z.insert(Record::from_rdata(
        name("i.z."),
        30,
        RData::TXT(TXT::new(vec!["zone=a".into()])),
    ));
    z
}

#[test]
fn prerequisites() {
    use DNSClass::{ANY, IN, NONE};
    use RecordType as T;
    let cases: Vec<(&str, Record, Result<(), ResponseCode>)> = vec![
        ("name in use", empty("h.z.", T::ANY, ANY), Ok(())),
        (
            "name in use, absent",
            empty("x.z.", T::ANY, ANY),
            Err(ResponseCode::NXDomain),
        ),
        ("rrset exists", empty("i.z.", T::SRV, ANY), Ok(())),
        (
            "rrset exists, absent",
            empty("i.z.", T::A, ANY),
            Err(ResponseCode::NXRRSet),
        ),
        ("name not in use", empty("x.z.", T::ANY, NONE), Ok(())),
        (
            "name not in use, present",
            empty("i.z.", T::ANY, NONE),
            Err(ResponseCode::YXDomain),
        ),
        ("rrset absent", empty("i.z.", T::A, NONE), Ok(())),
        (
            "rrset absent, present",
            empty("i.z.", T::SRV, NONE),
            Err(ResponseCode::YXRRSet),
        ),
        ("value match", class(a("h.z.", 1), IN, 0), Ok(())),
        (
            "value mismatch",
            class(a("h.z.", 2), IN, 0),
            Err(ResponseCode::NXRRSet),
        ),
        (
            "ttl not zero",
            class(empty("h.z.", T::A, ANY), ANY, 5),
            Err(ResponseCode::FormErr),
        ),
        (
            "out of zone",
            empty("h.other.", T::A, ANY),
            Err(ResponseCode::NotZone),
        ),
        (
            "any with data",
            class(a("h.z.", 1), ANY, 0),
            Err(ResponseCode::FormErr),
        ),
        (
            "bad class",
            empty("h.z.", T::A, DNSClass::CH),
            Err(ResponseCode::FormErr),
        ),
    ];
    let z = zone();
    for (what, pre, want) in cases {
        let got = apply(&z, &[pre], &[]).map(|_| ());
        assert_eq!(got, want, "{what}");
    }
    // value-dependent: the whole rrset must match
    let mut z2 = zone();
    z2.insert(a("h.z.", 2));
    let pre = [class(a("h.z.", 1), IN, 0)];
    assert_eq!(
        apply(&z2, &pre, &[]).map(|_| ()),
        Err(ResponseCode::NXRRSet)
    );
    let pre = [class(a("h.z.", 1), IN, 0), class(a("h.z.", 2), IN, 0)];
    assert_eq!(apply(&z2, &pre, &[]).map(|_| ()), Ok(()));
}

#[test]
fn updates() {
    use DNSClass::{ANY, NONE};
    use RecordType as T;
    let z = zone();
    // add
    let next = apply(&z, &[], &[a("h.z.", 2)])
        .expect("ok")
        .expect("changed");
    assert_eq!(next.rrset(&name("h.z."), T::A).len(), 2);
    assert_eq!(next.serial(), z.serial() + 1);
    // duplicate add is a no-op
    assert_eq!(apply(&z, &[], &[a("h.z.", 1)]), Ok(None));
    // delete one record
    let del = class(a("h.z.", 1), NONE, 0);
    let next = apply(&z, &[], &[del]).expect("ok").expect("changed");
    assert!(next.rrset(&name("h.z."), T::A).is_empty());
    // delete rrset
    let next = apply(&z, &[], &[empty("i.z.", T::TXT, ANY)])
        .expect("ok")
        .expect("changed");
    assert!(next.rrset(&name("i.z."), T::TXT).is_empty());
    assert_eq!(next.rrset(&name("i.z."), T::SRV).len(), 1);
    // delete name
    let next = apply(&z, &[], &[empty("i.z.", T::ANY, ANY)])
        .expect("ok")
        .expect("changed");
    assert!(!next.name_in_use(&name("i.z.")));
    // the apex SOA and NS survive a delete-all
    let next = apply(&z, &[], &[empty("z.", T::ANY, ANY)]).expect("ok");
    assert_eq!(next, None);
    // bad updates are refused whole
    let bad = [
        (a("h.other.", 1), ResponseCode::NotZone),
        (empty("h.z.", T::A, DNSClass::IN), ResponseCode::FormErr),
        (class(a("h.z.", 1), ANY, 0), ResponseCode::FormErr),
        (class(a("h.z.", 1), NONE, 30), ResponseCode::FormErr),
    ];
    for (update, want) in bad {
        assert_eq!(apply(&z, &[], &[a("h.z.", 9), update]), Err(want));
    }
}

#[test]
fn stale_writer_cannot_resurrect() {
    use RecordType as T;
    // A refresh says "only if the SRV still exists"; after removal it fails.
    let z = zone();
    let removed = apply(&z, &[], &[empty("i.z.", T::ANY, DNSClass::ANY)])
        .expect("ok")
        .expect("changed");
    let refresh = [Record::from_rdata(
        name("i.z."),
        30,
        RData::SRV(SRV::new(0, 1, 80, name("h.z."))),
    )];
    let pre = [empty("i.z.", T::SRV, DNSClass::ANY)];
    assert_eq!(apply(&removed, &pre, &refresh), Err(ResponseCode::NXRRSet));
}
