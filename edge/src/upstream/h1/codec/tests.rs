use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::HeaderValue;

use crate::headers::X_REQUEST_ID;

use super::*;

fn head(text: &str, method: Method) -> (Result<Option<ResponseHead>, H1Error>, BytesMut) {
    let mut buf = BytesMut::from(text.as_bytes());
    let parsed = parse_head(&mut buf, &method);
    (parsed, buf)
}

fn map_of(h: &ResponseHead) -> HeaderMap {
    let mut map = HeaderMap::new();
    h.fields.append_to(&mut map);
    map
}

fn body_of(framing: Framing, wire: &[&[u8]]) -> Result<Vec<u8>, H1Error> {
    let mut decoder = BodyDecoder::new(framing);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pieces = wire.iter();
    loop {
        match decoder.decode(&mut buf)? {
            Decoded::Data(d) => out.extend_from_slice(&d),
            Decoded::End => return Ok(out),
            Decoded::NeedMore => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => {
                    decoder.closed()?;
                    return Ok(out);
                }
            },
        }
    }
}

/// The request `encode_request` writes for these parts, as text.
fn encoded(
    method: Method,
    target: &str,
    headers: &HeaderMap,
    fields: Option<&RawHead>,
    authority: &str,
    body: &[u8],
) -> String {
    let mut out = Vec::new();
    let authority = authority.parse().unwrap();
    encode_request(&mut out, &method, target, headers, fields, authority, body);
    String::from_utf8(out).unwrap()
}

#[test]
fn request_is_framed_with_its_length_and_gets_a_host() {
    let mut headers = HeaderMap::new();
    headers.insert("x-request-id", HeaderValue::from_static("abc"));
    headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
    let text = encoded(
        Method::POST,
        "/a?b=1",
        &headers,
        None,
        "10.0.0.1:8443",
        b"hello",
    );
    assert_eq!(
        text,
        "POST /a?b=1 HTTP/1.1\r\nhost: 10.0.0.1:8443\r\nx-request-id: abc\r\ncontent-length: 5\r\n\r\nhello"
    );
}

#[test]
fn get_without_body_has_no_length_and_keeps_its_host() {
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_static("api.example.org"));
    let text = encoded(Method::GET, "", &headers, None, "10.0.0.1:1", b"");
    assert_eq!(text, "GET / HTTP/1.1\r\nhost: api.example.org\r\n\r\n");
}

#[test]
fn fields_as_received_go_out_in_their_order_and_spelling_without_framing() {
    let mut fields = RawHead::from_pairs(&[
        ("Host", "api.example.org"),
        ("Content-Length", "999"),
        ("Accept", "*/*"),
        ("Transfer-Encoding", "chunked"),
        ("X-Tag", "a"),
        ("x-tag", "b"),
    ]);
    fields.add(X_REQUEST_ID, HeaderValue::from_static("abc"));
    let text = encoded(
        Method::PUT,
        "/p",
        &HeaderMap::new(),
        Some(&fields),
        "10.0.0.1:1",
        b"hi",
    );
    assert_eq!(
        text,
        "PUT /p HTTP/1.1\r\nx-request-id: abc\r\nHost: api.example.org\r\nAccept: */*\r\n\
         X-Tag: a\r\nx-tag: b\r\ncontent-length: 2\r\n\r\nhi",
        "the gateway's first, one host (the client's), the gateway's framing"
    );
}

#[test]
fn a_host_the_gateway_added_to_the_fields_is_the_only_one() {
    let mut fields = RawHead::from_pairs(&[("Accept", "*/*")]);
    fields.add(HOST, HeaderValue::from_static("api.example.org"));
    let text = encoded(
        Method::GET,
        "/",
        &HeaderMap::new(),
        Some(&fields),
        "10.0.0.1:1",
        b"",
    );
    assert_eq!(
        text,
        "GET / HTTP/1.1\r\nhost: api.example.org\r\nAccept: */*\r\n\r\n"
    );
}

#[test]
fn head_with_content_length_leaves_the_body_in_the_buffer() {
    let (parsed, buf) = head(
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello",
        Method::GET,
    );
    let h = parsed.unwrap().unwrap();
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.framing, Framing::Length(5));
    assert!(h.keep_alive);
    assert_eq!(map_of(&h).get_all("x-a").iter().count(), 2);
    assert_eq!(&buf[..], b"hello");
}

#[test]
fn partial_head_asks_for_more_and_oversized_head_is_refused() {
    let (parsed, buf) = head("HTTP/1.1 200 OK\r\nContent-Le", Method::GET);
    assert!(parsed.unwrap().is_none());
    assert_eq!(buf.len(), 27, "nothing consumed");
    let huge = format!(
        "HTTP/1.1 200 OK\r\nx-big: {}",
        "a".repeat(MAX_RESPONSE_HEAD_BYTES)
    );
    assert!(matches!(
        head(&huge, Method::GET).0,
        Err(H1Error::HeadTooLarge)
    ));
}

#[test]
fn garbage_and_bad_framing_are_errors() {
    assert!(matches!(
        head("HTTX/1.1 200 OK\r\n\r\n", Method::GET).0,
        Err(H1Error::Head(_))
    ));
    assert!(matches!(
        head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            Method::GET
        )
        .0,
        Err(H1Error::Body(_))
    ));
    assert!(matches!(
        head("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", Method::GET).0,
        Err(H1Error::Body(_))
    ));
    assert!(matches!(
        head("HTTP/1.1 101 Switching Protocols\r\n\r\n", Method::GET).0,
        Err(H1Error::Head(_))
    ));
}

#[test]
fn interim_responses_are_skipped() {
    let (parsed, buf) = head(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        Method::POST,
    );
    let h = parsed.unwrap().unwrap();
    assert_eq!(h.status, StatusCode::CREATED);
    assert_eq!(h.framing, Framing::Length(0));
    assert!(buf.is_empty());
}

#[test]
fn framing_follows_rfc_9112() {
    let framing_of = |text: &str, method: Method| head(text, method).0.unwrap().unwrap().framing;
    assert_eq!(
        framing_of("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", Method::HEAD),
        Framing::Length(0)
    );
    assert_eq!(
        framing_of("HTTP/1.1 304 Not Modified\r\n\r\n", Method::GET),
        Framing::Length(0)
    );
    assert_eq!(
        framing_of(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
            Method::GET
        ),
        Framing::Chunked
    );
    assert_eq!(
        framing_of(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            Method::GET
        ),
        Framing::UntilClose
    );
    assert_eq!(
        framing_of("HTTP/1.1 200 OK\r\n\r\n", Method::GET),
        Framing::UntilClose
    );
    assert_eq!(
        framing_of(
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\ncontent-length: 7\r\n\r\n",
            Method::GET
        ),
        Framing::Length(7)
    );
}

#[test]
fn keep_alive_by_version_and_connection_header() {
    let alive = |text: &str| head(text, Method::GET).0.unwrap().unwrap().keep_alive;
    assert!(!alive(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!alive("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(alive(
        "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!alive("HTTP/1.1 200 OK\r\n\r\n"), "until-close body");
    assert!(!alive(
        "HTTP/1.1 200 OK\r\nConnection: x-trace, close\r\nContent-Length: 0\r\n\r\n"
    ));
}

#[test]
fn connection_options_are_read_and_left_out_of_the_headers() {
    let headers = |text: &str| {
        let h = head(text, Method::GET).0.unwrap().unwrap();
        (h.keep_alive, map_of(&h))
    };
    let (alive, h) = headers(
        "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nServer: up\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(alive);
    assert_eq!(h.keys().collect::<Vec<_>>(), ["server", "content-length"]);
    // A connection header naming another header stays for the proxy's hop-by-hop rules.
    let (alive, h) = headers(
        "HTTP/1.1 200 OK\r\nConnection: x-trace\r\nX-Trace: 1\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(alive);
    assert_eq!(h["connection"], "x-trace");
    assert_eq!(h["x-trace"], "1");
}

#[test]
fn chunked_body_across_reads_with_extensions_and_trailers() {
    let got = body_of(
        Framing::Chunked,
        &[
            b"5;name=v\r\nhel",
            b"lo\r\n",
            b"6\r\n world\r",
            b"\n0\r\nx-trailer: 1\r\n",
            b"\r\n",
        ],
    )
    .unwrap();
    assert_eq!(got, b"hello world");
}

#[test]
fn broken_chunked_bodies_are_errors() {
    assert!(matches!(
        body_of(Framing::Chunked, &[b"zz\r\n"]),
        Err(H1Error::Body(_))
    ));
    assert!(matches!(
        body_of(Framing::Chunked, &[b"2\r\nabXY"]),
        Err(H1Error::Body(_))
    ));
    assert!(matches!(
        body_of(Framing::Chunked, &[b"5\r\nab"]),
        Err(H1Error::Closed(_))
    ));
    let long_line = vec![b'1'; MAX_LINE_BYTES + 1];
    assert!(matches!(
        body_of(Framing::Chunked, &[&long_line]),
        Err(H1Error::Body(_))
    ));
}

#[test]
fn length_and_until_close_bodies() {
    assert_eq!(
        body_of(Framing::Length(4), &[b"ab", b"cd"]).unwrap(),
        b"abcd"
    );
    assert!(matches!(
        body_of(Framing::Length(4), &[b"ab"]),
        Err(H1Error::Closed(_))
    ));
    assert_eq!(
        body_of(Framing::UntilClose, &[b"ab", b"cd"]).unwrap(),
        b"abcd"
    );
    let big = vec![7u8; COPY_OUT_MAX * 3];
    assert_eq!(
        body_of(Framing::Length(big.len() as u64), &[&big]).unwrap(),
        big
    );
}

#[test]
fn length_decoder_stops_at_its_length() {
    let mut d = BodyDecoder::new(Framing::Length(3));
    let mut buf = BytesMut::from(&b"abcNEXT"[..]);
    assert_eq!(
        d.decode(&mut buf).unwrap(),
        Decoded::Data(Bytes::from_static(b"abc"))
    );
    assert!(d.is_done());
    assert_eq!(d.decode(&mut buf).unwrap(), Decoded::End);
    assert_eq!(&buf[..], b"NEXT");
}

/// `RawHead` relies on the parser: a name that is not a token or a value with a control
/// byte never reaches it, so every field it holds converts to a header map entry.
#[test]
fn fields_the_map_would_refuse_are_parse_errors() {
    for bad in [
        "HTTP/1.1 200 OK\r\nbad name: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nbad\x01: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nx-a: bad\x7fvalue\r\n\r\n",
        "HTTP/1.1 200 OK\r\nx-a: bad\x00value\r\n\r\n",
    ] {
        assert!(
            matches!(head(bad, Method::GET).0, Err(H1Error::Head(_))),
            "{bad:?}"
        );
    }
    let h = head(
        "HTTP/1.1 200 OK\r\nX-Obs: caf\u{e9}\tok\r\nContent-Length: 0\r\n\r\n",
        Method::GET,
    )
    .0
    .unwrap()
    .unwrap();
    assert_eq!(map_of(&h)["x-obs"].as_bytes(), "caf\u{e9}\tok".as_bytes());
}
