use super::*;

fn ep(instance: &str, ip: &str, port: u16, priority: u16, weight: u16) -> Endpoint {
    Endpoint {
        instance: instance.into(),
        address: ip.parse().expect("ip"),
        port,
        priority,
        weight,
        zone: None,
        attributes: BTreeMap::new(),
    }
}

#[test]
fn new_sorts_and_dedups() {
    let set = EndpointSet::new([
        ep("b", "10.0.0.2", 80, 1, 1),
        ep("a", "10.0.0.1", 80, 0, 1),
        ep("b", "10.0.0.2", 80, 5, 9),
        ep("c", "::1", 80, 0, 1),
    ]);
    let names: Vec<_> = set
        .endpoints()
        .iter()
        .map(|e| e.instance.as_str())
        .collect();
    assert_eq!(names, ["a", "c", "b"]);
    assert_eq!(set.endpoints()[2].priority, 1, "first duplicate kept");
    assert_eq!(set.first_tier().len(), 2);
    assert!(set.is_resolved() && !set.is_stale());
    assert!(EndpointSet::pending().first_tier().is_empty());
    assert!(!EndpointSet::pending().is_resolved());
}

#[test]
fn diffs() {
    let mut zoned = ep("a", "10.0.0.1", 80, 0, 1);
    zoned.zone = Some("z1".into());
    struct Case {
        old: Vec<Endpoint>,
        new: Vec<Endpoint>,
        added: &'static [&'static str],
        removed: &'static [&'static str],
        changed: &'static [&'static str],
    }
    let cases = [
        Case {
            old: vec![],
            new: vec![ep("a", "10.0.0.1", 80, 0, 1)],
            added: &["a"],
            removed: &[],
            changed: &[],
        },
        Case {
            old: vec![ep("a", "10.0.0.1", 80, 0, 1)],
            new: vec![],
            added: &[],
            removed: &["a"],
            changed: &[],
        },
        Case {
            old: vec![ep("a", "10.0.0.1", 80, 0, 1)],
            new: vec![ep("a", "10.0.0.1", 80, 0, 1)],
            added: &[],
            removed: &[],
            changed: &[],
        },
        Case {
            old: vec![ep("a", "10.0.0.1", 80, 0, 1), ep("b", "10.0.0.2", 80, 0, 1)],
            new: vec![ep("a", "10.0.0.1", 80, 1, 1), ep("c", "10.0.0.3", 80, 0, 1)],
            added: &["c"],
            removed: &["b"],
            changed: &["a"],
        },
        Case {
            old: vec![ep("a", "10.0.0.1", 80, 0, 1)],
            new: vec![zoned.clone()],
            added: &[],
            removed: &[],
            changed: &["a"],
        },
        Case {
            // a port change is a new endpoint
            old: vec![ep("a", "10.0.0.1", 80, 0, 1)],
            new: vec![ep("a", "10.0.0.1", 81, 0, 1)],
            added: &["a"],
            removed: &["a"],
            changed: &[],
        },
    ];
    let names = |v: &[Endpoint]| -> Vec<String> { v.iter().map(|e| e.instance.clone()).collect() };
    for (i, case) in cases.into_iter().enumerate() {
        let diff = EndpointSet::new(case.old).diff(&EndpointSet::new(case.new));
        assert_eq!(names(&diff.added), case.added, "case {i}");
        assert_eq!(names(&diff.removed), case.removed, "case {i}");
        assert_eq!(names(&diff.changed), case.changed, "case {i}");
        assert_eq!(
            diff.is_empty(),
            case.added.is_empty() && case.removed.is_empty() && case.changed.is_empty()
        );
    }
}

#[test]
fn static_endpoint() {
    let e = Endpoint::from_socket_addr("[::1]:8443".parse().expect("addr"));
    assert_eq!(e.instance, "[::1]:8443");
    assert_eq!(e.socket_addr().port(), 8443);
    assert_eq!(e.weight, 1);
}
