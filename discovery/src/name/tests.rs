use super::*;

#[test]
fn parse_service_names() {
    // (input, Some(display) when valid)
    let cases: &[(&str, Option<&str>)] = &[
        ("_http._tcp.example.com", Some("_http._tcp.example.com")),
        ("_http._tcp.example.com.", Some("_http._tcp.example.com")),
        ("_HTTP._TCP.Example.COM", Some("_http._tcp.example.com")),
        ("_payments._tcp.mesh", Some("_payments._tcp.mesh")),
        ("_dns-sd._udp.local", Some("_dns-sd._udp.local")),
        (
            "_http._tcp.svc.ns.svc.cluster.local",
            Some("_http._tcp.svc.ns.svc.cluster.local"),
        ),
        ("http._tcp.example.com", None),
        ("_http.example.com", None),
        ("_http._sctp.example.com", None),
        ("_._tcp.example.com", None),
        ("_abcdefghijklmnop._tcp.example.com", None),
        ("_123._tcp.example.com", None),
        ("_-a._tcp.example.com", None),
        ("_a--b._tcp.example.com", None),
        ("_a_b._tcp.example.com", None),
        ("_http._tcp.", None),
        ("_http._tcp", None),
        ("_http._tcp.exa mple.com", None),
        ("_http._tcp.a..b", None),
        ("_http._tcp.-a.b", None),
        ("", None),
    ];
    for (input, want) in cases {
        let got = ServiceName::parse(input);
        match want {
            Some(display) => {
                let name = got.unwrap_or_else(|e| panic!("{input:?}: {e}"));
                assert_eq!(name.to_string(), *display, "{input:?}");
            }
            None => assert!(got.is_err(), "{input:?} should be rejected: {got:?}"),
        }
    }
}

#[test]
fn try_new_matches_parse() {
    let a = ServiceName::try_new("payments", "mesh.example").expect("valid");
    let b = ServiceName::parse("_payments._tcp.mesh.example.").expect("valid");
    assert_eq!(a, b);
    assert_eq!(a.to_name().to_ascii(), "_payments._tcp.mesh.example.");
    assert!(ServiceName::try_new("_payments", "mesh").is_err());
}

#[test]
fn instance_names_round_trip() {
    let svc = ServiceName::parse("_http._tcp.example.com").expect("valid");
    for instance in ["web-1", "Web Server.2", "ünïcode", "a"] {
        let name = svc.instance_name(instance).expect("valid instance");
        assert_eq!(svc.instance_of(&name).as_deref(), Some(instance));
    }
    let long = "x".repeat(64);
    for bad in ["", long.as_str(), "tab\there"] {
        assert!(svc.instance_name(bad).is_err(), "{bad:?}");
    }
    let other = Name::from_ascii("web-1._http._tcp.example.org.").expect("name");
    assert_eq!(svc.instance_of(&other), None);
    let deeper = Name::from_ascii("a.web-1._http._tcp.example.com.").expect("name");
    assert_eq!(svc.instance_of(&deeper), None);
}

#[test]
fn domains() {
    let cases = [
        ("example.com", true),
        ("example.com.", true),
        ("_sub.example", true),
        ("a", true),
        ("", false),
        (".", false),
        ("a..b", false),
        ("a.-b", false),
        ("a.b-", false),
        ("a/b", false),
    ];
    for (domain, ok) in cases {
        assert_eq!(parse_domain(domain).is_ok(), ok, "{domain:?}");
    }
    let long = vec!["a".repeat(63); 5].join(".");
    assert!(parse_domain(&long).is_err());
}
