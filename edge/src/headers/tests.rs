use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;

use super::*;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// Every field's values by name, for comparing two maps regardless of order between names.
fn by_name(h: &HeaderMap) -> BTreeMap<String, Vec<HeaderValue>> {
    h.keys()
        .map(|k| (k.to_string(), h.get_all(k).iter().cloned().collect()))
        .collect()
}

/// The request of `pairs` prepared through the map, and (without a `connection` field that
/// names others, which the proxy sends through the map) through the fields as received: both
/// must give the same headers, the raw fields ahead of none of the gateway's.
fn prepared(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = map(pairs);
    let mut rng = StdRng::seed_from_u64(7);
    let id = prepare_request(&mut h, "192.0.2.7".parse().unwrap(), &mut rng);
    assert_eq!(h.get(X_REQUEST_ID), Some(&id));
    if !pairs
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("connection"))
    {
        let mut raw = RawHead::from_pairs(pairs);
        let mut rng = StdRng::seed_from_u64(7);
        let raw_id = prepare_request_fields(&mut raw, "192.0.2.7".parse().unwrap(), &mut rng);
        assert_eq!(raw_id, id, "{pairs:?}");
        let mut from_raw = HeaderMap::new();
        raw.append_to(&mut from_raw);
        assert_eq!(by_name(&from_raw), by_name(&h), "{pairs:?}");
    }
    h
}

#[test]
fn request_id_kept_when_valid_else_new() {
    let cases = [
        (Some("abc-123"), true),
        (Some(""), false),
        (Some("has space"), false),
        (Some(&*"x".repeat(129)), false),
        (None, false),
    ];
    for (incoming, kept) in cases {
        let h = match incoming {
            Some(v) => prepared(&[("x-request-id", v)]),
            None => prepared(&[]),
        };
        let got = h.get(X_REQUEST_ID).unwrap().to_str().unwrap();
        if kept {
            assert_eq!(Some(got), incoming);
        } else {
            assert_eq!(got.len(), 32, "{got}");
            assert!(got.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
}

#[test]
fn forwarded_headers() {
    let h = prepared(&[]);
    assert_eq!(h.get(X_FORWARDED_FOR).unwrap(), "192.0.2.7");
    assert_eq!(h.get(X_FORWARDED_PROTO).unwrap(), "https");
    let h = prepared(&[
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-proto", "http"),
    ]);
    assert_eq!(h.get(X_FORWARDED_FOR).unwrap(), "10.0.0.1, 192.0.2.7");
    assert_eq!(h.get(X_FORWARDED_PROTO).unwrap(), "https");
    // Every line of the list, in order (RFC 9110 5.3); empty and non-text ones left out.
    let h = prepared(&[
        ("X-Forwarded-For", "10.0.0.1, 10.0.0.2"),
        ("x-forwarded-for", " "),
        ("x-forwarded-for", "10.0.0.3"),
        ("x-forwarded-for", "caf\u{e9}"),
        ("X-Forwarded-Proto", "http"),
    ]);
    assert_eq!(
        h.get_all(X_FORWARDED_FOR).iter().collect::<Vec<_>>(),
        ["10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7"]
    );
    assert_eq!(h.get_all(X_FORWARDED_PROTO).iter().count(), 1);
}

#[test]
fn traceparent_continued_or_started() {
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let h = prepared(&[("traceparent", incoming)]);
    let out = h.get(TRACEPARENT).unwrap().to_str().unwrap();
    assert!(
        out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{out}"
    );
    assert!(out.ends_with("-01"));
    assert_ne!(out, incoming, "a new parent id");
    for bad in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "garbage",
    ] {
        let h = prepared(&[("traceparent", bad)]);
        let out = h.get(TRACEPARENT).unwrap();
        assert!(parse_traceparent(out.as_bytes()).is_some(), "{out:?}");
        assert!(
            !out.to_str().unwrap().contains("4bf92f35") || bad.starts_with("00-4BF"),
            "{bad} continued"
        );
    }
}

#[test]
fn a_trace_started_here_takes_the_request_id_made_here() {
    let h = prepared(&[]);
    let id = h.get(X_REQUEST_ID).unwrap().to_str().unwrap();
    let tp = h.get(TRACEPARENT).unwrap().to_str().unwrap();
    assert_eq!(&tp[3..35], id, "{tp}");
    assert!(parse_traceparent(tp.as_bytes()).is_some(), "{tp}");
    // The client's request id is not a trace id: a new trace gets random bits of its own.
    let client_id = "0123456789abcdef0123456789abcdef";
    let h = prepared(&[("x-request-id", client_id)]);
    assert_eq!(h.get(X_REQUEST_ID).unwrap(), client_id);
    let tp = h.get(TRACEPARENT).unwrap().to_str().unwrap();
    assert_ne!(&tp[3..35], client_id, "{tp}");
    assert!(parse_traceparent(tp.as_bytes()).is_some(), "{tp}");
}

#[test]
fn hop_by_hop_headers_removed() {
    let h = prepared(&[
        ("connection", "keep-alive, x-private"),
        ("x-private", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("te", "gzip"),
        ("proxy-authorization", "Basic x"),
        ("x-kept", "yes"),
    ]);
    for gone in [
        "connection",
        "x-private",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "proxy-authorization",
    ] {
        assert!(!h.contains_key(gone), "{gone} kept");
    }
    assert_eq!(h.get("x-kept").unwrap(), "yes");
    let h = prepared(&[("te", "trailers")]);
    assert_eq!(h.get("te").unwrap(), "trailers");
    // Without `connection`, both ways (see `prepared`).
    let h = prepared(&[
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "gzip"),
        ("Trailer", "x-sum"),
        ("Proxy-Authorization", "Basic x"),
        ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
        ("Host", "api.example.org"),
        ("Accept", "*/*"),
    ]);
    let names: Vec<_> = h.keys().map(HeaderName::as_str).collect();
    for kept in ["host", "accept", "x-request-id", "traceparent"] {
        assert!(names.contains(&kept), "{kept}: {names:?}");
    }
    assert_eq!(names.len(), 6, "{names:?}");
}

#[test]
fn duplicate_request_ids_become_one() {
    let h = prepared(&[("x-request-id", "first"), ("x-request-id", "second")]);
    let ids: Vec<_> = h.get_all(X_REQUEST_ID).iter().collect();
    assert_eq!(ids, ["first"]);
}

#[test]
fn connection_keep_alive_alone_is_removed_and_the_rest_kept() {
    let mut h = map(&[
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("content-length", "100"),
        ("server", "nginx"),
    ]);
    strip_hop_by_hop(&mut h);
    assert!(!h.contains_key("connection") && !h.contains_key("keep-alive"));
    assert_eq!(h.len(), 2, "{h:?}");
    let mut h = map(&[("connection", "close"), ("upgrade", "h2c"), ("x-a", "1")]);
    strip_hop_by_hop(&mut h);
    assert_eq!(h.keys().collect::<Vec<_>>(), ["x-a"]);
}

#[test]
fn client_addresses_are_written_like_display() {
    for ip in [
        "0.0.0.0",
        "9.10.99.100",
        "192.168.1.255",
        "255.255.255.255",
        "198.18.0.1",
        "::1",
        "2001:db8::7",
        "::ffff:198.18.0.1",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        let mut out = Text::new();
        push_ip(&mut out, ip);
        assert_eq!(std::str::from_utf8(&out).unwrap(), ip.to_string());
    }
}

#[test]
fn hex_words_match_the_formatter() {
    let mut rng = StdRng::seed_from_u64(11);
    let samples = [
        0,
        u64::MAX,
        0x0123_4567_89ab_cdef,
        0xfedc_ba98_7654_3210,
        0x0a0b_0c0d,
    ];
    for word in samples
        .into_iter()
        .chain((0..1000).map(|_| rng.random::<u64>()))
    {
        assert_eq!(
            std::str::from_utf8(&hex_word(word)).unwrap(),
            format!("{word:016x}"),
            "word {word:#x}"
        );
    }
}

#[test]
fn random_hex_has_two_digits_per_byte() {
    let mut rng = StdRng::seed_from_u64(3);
    for bytes in [1, 7, 8, 9, 16] {
        let mut out = Text::new();
        push_random_hex(&mut out, &mut rng, bytes);
        assert_eq!(out.len(), 2 * bytes);
        assert!(out
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)));
    }
}

/// The rule on bytes agrees with the map's rule for every hop-by-hop name, in any case, and
/// for names of the same lengths that are not hop-by-hop.
#[test]
fn field_rule_agrees_with_the_map_rule() {
    let names = [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "trailer",
        "te",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "http2-settings",
        "tf",
        "upgradf",
        "content-length",
        "x-request-id",
        "server",
    ];
    for name in names {
        for value in ["trailers", "gzip"] {
            // `connection` is hop-by-hop whatever it lists; for the others the map rule,
            // on a map without a `connection` field, decides.
            let expected = name == "connection" || {
                let mut stripped = map(&[(name, value), ("x-kept", "1")]);
                strip_hop_by_hop(&mut stripped);
                !stripped.contains_key(name)
            };
            let upper = name.to_ascii_uppercase();
            let by_field = is_hop_by_hop_field(upper.as_bytes(), value.as_bytes());
            assert_eq!(by_field, expected, "{name}: {value}");
        }
    }
}
