use super::*;

fn parse_str(text: &str) -> (Parsed, BytesMut) {
    let mut buf = BytesMut::from(text.as_bytes());
    let parsed = parse(&mut buf, 16 * 1024);
    (parsed, buf)
}

/// The values of the fields called `name`, as text.
fn values(r: &FastRequest, name: &str) -> Vec<String> {
    r.fields
        .as_ref()
        .expect("fields as received")
        .values(name.as_bytes())
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
        .collect()
}

fn served(text: &str) -> (FastRequest, BytesMut) {
    match parse_str(text) {
        (Parsed::Request(r), rest) => (r, rest),
        (other, _) => panic!("not served: {other:?}"),
    }
}

#[test]
fn head_becomes_a_request_and_the_rest_stays_buffered() {
    let (r, rest) = served(
        "GET /a/b?c=d HTTP/1.1\r\nHost: api.example.org\r\nX-Trace: 1\r\nx-trace: 2\r\n\r\nGET /next",
    );
    assert_eq!(values(&r, "host"), ["api.example.org"]);
    assert_eq!(values(&r, "x-trace"), ["1", "2"]);
    let fields = r.fields.as_ref().unwrap();
    let spelled: Vec<_> = fields.iter().map(|(name, _)| name.to_vec()).collect();
    assert_eq!(spelled, [&b"Host"[..], b"X-Trace", b"x-trace"], "as sent");
    let req = r.request;
    assert_eq!(req.method(), Method::GET);
    assert_eq!(req.uri().path(), "/a/b");
    assert_eq!(req.uri().query(), Some("c=d"));
    assert_eq!(req.version(), Version::HTTP_11);
    assert!(req.headers().is_empty(), "the fields are not in a map");
    assert!(req.body().is_empty());
    assert!(r.keep_alive);
    assert_eq!(&rest[..], b"GET /next");
}

#[test]
fn a_body_read_with_the_head_is_taken_with_it() {
    let (r, rest) = served("POST /p HTTP/1.1\r\ncontent-length: 4\r\n\r\ntinyGET");
    assert_eq!(&r.request.body()[..], b"tiny");
    assert_eq!(values(&r, "content-length"), ["4"]);
    assert_eq!(&rest[..], b"GET");
}

#[test]
fn connection_options_are_read_and_left_out() {
    let (r, _) = served("GET / HTTP/1.1\r\nconnection: close\r\nkeep-alive: 5\r\n\r\n");
    assert!(!r.keep_alive);
    assert!(r.fields.unwrap().is_empty());

    let (r, _) = served("GET / HTTP/1.0\r\n\r\n");
    assert!(!r.keep_alive, "HTTP/1.0 closes unless asked");
    assert_eq!(r.request.version(), Version::HTTP_10);
    let (r, _) = served("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert!(r.keep_alive);

    // A connection header naming another header stays for the hop-by-hop rules, which
    // work on the map: the fields go there.
    let (r, _) = served("GET / HTTP/1.1\r\nconnection: x-secret, close\r\nx-secret: 1\r\n\r\n");
    assert!(!r.keep_alive);
    assert!(r.fields.is_none());
    assert_eq!(r.request.headers()["connection"], "x-secret, close");
    assert_eq!(r.request.headers()["x-secret"], "1");
}

#[test]
fn requests_hyper_must_serve_leave_the_buffer_untouched() {
    let cases = [
        (
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n4\r\ntiny\r\n0\r\n\r\n",
            "transfer_encoding",
        ),
        (
            "POST / HTTP/1.1\r\ncontent-length: 10\r\n\r\nhalf",
            "body_to_come",
        ),
        (
            "POST / HTTP/1.1\r\ncontent-length: +4\r\n\r\ntiny",
            "content_length",
        ),
        (
            "POST / HTTP/1.1\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\ntinyx",
            "content_length",
        ),
        (
            "PUT / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n",
            "expect",
        ),
        (
            "GET / HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            "upgrade",
        ),
        ("CONNECT api.example.org:443 HTTP/1.1\r\n\r\n", "connect"),
    ];
    for (text, reason) in cases {
        let (parsed, rest) = parse_str(text);
        assert!(
            matches!(parsed, Parsed::HandOff(r) if r == reason),
            "{text:?}: {parsed:?}"
        );
        assert_eq!(&rest[..], text.as_bytes(), "{text:?}");
    }
}

#[test]
fn same_content_length_twice_is_one_length() {
    let (r, _) = served("POST / HTTP/1.1\r\ncontent-length: 4\r\ncontent-length: 4\r\n\r\ntiny");
    assert_eq!(&r.request.body()[..], b"tiny");
}

#[test]
fn partial_heads_wait_and_bad_heads_are_refused() {
    assert!(matches!(
        parse_str("GET / HTTP/1.1\r\nhost: a").0,
        Parsed::Partial
    ));
    let bad = [
        "G@RBAGE \x01\x02 nonsense\r\n\r\n",
        "GET / HTTP/1.1\r\nbad header\r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
        "GET /\x7fpath HTTP/1.1\r\n\r\n",
    ];
    for text in bad {
        let parsed = parse_str(text).0;
        assert!(
            matches!(parsed, Parsed::Refuse(StatusCode::BAD_REQUEST, _)),
            "{text:?}: {parsed:?}"
        );
    }
}

#[test]
fn oversized_heads_and_too_many_lines_get_431() {
    let mut buf = BytesMut::from(format!("GET / HTTP/1.1\r\nx-big: {}", "a".repeat(300)).as_str());
    assert!(matches!(
        parse(&mut buf, 256),
        Parsed::Refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "head_too_large"
        )
    ));
    let mut buf =
        BytesMut::from(format!("GET / HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(300)).as_str());
    assert!(matches!(
        parse(&mut buf, 256),
        Parsed::Refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "head_too_large"
        )
    ));
    let many: String = (0..=MAX_REQUEST_HEADERS)
        .map(|i| format!("x-h{i}: v\r\n"))
        .collect();
    let (parsed, _) = parse_str(&format!("GET / HTTP/1.1\r\n{many}\r\n"));
    assert!(
        matches!(
            parsed,
            Parsed::Refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too_many_headers"
            )
        ),
        "{parsed:?}"
    );
}

#[test]
fn absolute_form_targets_keep_their_authority() {
    let (r, _) = served("GET https://api.example.org/x HTTP/1.1\r\n\r\n");
    assert_eq!(
        r.request.uri().authority().map(|a| a.as_str()),
        Some("api.example.org")
    );
    assert_eq!(r.request.uri().path(), "/x");
}

#[test]
fn the_most_header_lines_allowed_all_arrive() {
    let many: String = (0..MAX_REQUEST_HEADERS)
        .map(|i| format!("x-h{i}: v{i}\r\n"))
        .collect();
    let (r, rest) = served(&format!("GET / HTTP/1.1\r\n{many}\r\n"));
    assert!(rest.is_empty());
    let fields = r.fields.as_ref().unwrap();
    assert_eq!(fields.len(), MAX_REQUEST_HEADERS);
    assert_eq!(values(&r, "x-h0"), ["v0"]);
    assert_eq!(values(&r, "x-h99"), ["v99"]);
    let mut map = http::HeaderMap::new();
    fields.append_to(&mut map);
    assert_eq!(map.len(), MAX_REQUEST_HEADERS);
}

/// The fields are not checked by `http`'s types on the fast path: the parser must refuse
/// every name and value a header map would, so that each field converts to a map entry.
#[test]
fn fields_a_map_would_refuse_are_bad_requests() {
    for bad in [
        "GET / HTTP/1.1\r\nbad name: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nbad\x01: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nx-a: bad\x7fvalue\r\n\r\n",
        "GET / HTTP/1.1\r\nx-a: bad\x00value\r\n\r\n",
        "GET / HTTP/1.1\r\n: empty name\r\n\r\n",
    ] {
        let parsed = parse_str(bad).0;
        assert!(
            matches!(parsed, Parsed::Refuse(StatusCode::BAD_REQUEST, _)),
            "{bad:?}: {parsed:?}"
        );
    }
    let (r, _) = served("GET / HTTP/1.1\r\nX-Obs: caf\u{e9}\tok\r\n\r\n");
    let mut map = http::HeaderMap::new();
    r.fields.unwrap().append_to(&mut map);
    assert_eq!(map["x-obs"].as_bytes(), "caf\u{e9}\tok".as_bytes());
}
