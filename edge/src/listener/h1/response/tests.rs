use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body::Frame;
use http_body_util::StreamBody;

use super::*;
use crate::proxy::full;

const KEEP: ResponseFor = ResponseFor {
    head: false,
    http10: false,
    keep_alive: true,
};

fn head_of(resp: Response<()>, size: Option<u64>, asked: ResponseFor) -> (String, Framing, bool) {
    let (parts, ()) = resp.into_parts();
    let mut out = Vec::new();
    let (framing, keep) = encode_head(
        &mut out,
        &parts,
        None,
        size,
        asked,
        &mut DateCache::default(),
    );
    (String::from_utf8(out).unwrap(), framing, keep)
}

fn with_status(status: u16) -> Response<()> {
    let mut r = Response::new(());
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

#[test]
fn known_sizes_get_content_length_and_a_date() {
    let (text, framing, keep) = head_of(with_status(200), Some(12), KEEP);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("content-length: 12\r\n"), "{text}");
    assert!(text.contains("\r\ndate: "), "{text}");
    assert!(text.ends_with("\r\n\r\n"));
    assert!(!text.contains("connection"), "{text}");
    assert_eq!((framing, keep), (Framing::Length(12), true));
}

#[test]
fn a_declared_length_and_date_are_kept_not_repeated() {
    let mut r = with_status(200);
    r.headers_mut()
        .insert("content-length", HeaderValue::from_static("100"));
    r.headers_mut().insert(
        "date",
        HeaderValue::from_static("Tue, 01 Dec 2026 00:00:00 GMT"),
    );
    r.headers_mut()
        .insert("transfer-encoding", HeaderValue::from_static("chunked"));
    let (text, framing, _) = head_of(r, Some(3), KEEP);
    assert_eq!(text.matches("content-length").count(), 1, "{text}");
    assert_eq!(text.matches("date").count(), 1, "{text}");
    assert!(!text.contains("transfer-encoding"), "{text}");
    assert_eq!(framing, Framing::Length(100));
}

/// The upstream's fields as received follow the map's headers: spelling kept, their length
/// and date used (not repeated), their framing and connection fields replaced by this hop's.
#[test]
fn upstream_fields_are_written_through_after_the_map() {
    let fields = RawHead::from_pairs(&[
        ("Server", "up"),
        ("Content-Length", "7"),
        ("DATE", "Tue, 01 Dec 2026 00:00:00 GMT"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
        ("X-Many", "1"),
        ("x-many", "2"),
    ]);
    let mut r = with_status(200);
    r.headers_mut()
        .insert("x-request-id", HeaderValue::from_static("id-1"));
    let (parts, ()) = r.into_parts();
    let mut out = Vec::new();
    let date = &mut DateCache::default();
    let (framing, keep) = encode_head(&mut out, &parts, Some(&fields), Some(3), KEEP, date);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nx-request-id: id-1\r\nServer: up\r\nContent-Length: 7\r\n\
         DATE: Tue, 01 Dec 2026 00:00:00 GMT\r\nX-Many: 1\r\nx-many: 2\r\n\r\n"
    );
    assert_eq!((framing, keep), (Framing::Length(7), true));

    // A 204's length goes; without a length the body's size frames it.
    let fields = RawHead::from_pairs(&[("content-length", "0"), ("x-a", "1")]);
    let (parts, ()) = with_status(204).into_parts();
    let mut out = Vec::new();
    let (framing, _) = encode_head(&mut out, &parts, Some(&fields), Some(0), KEEP, date);
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("content-length"), "{text}");
    assert!(text.contains("x-a: 1\r\ndate: "), "{text}");
    assert_eq!(framing, Framing::Empty);
    let fields = RawHead::from_pairs(&[("x-a", "1")]);
    let (parts, ()) = with_status(200).into_parts();
    let mut out = Vec::new();
    let (framing, _) = encode_head(&mut out, &parts, Some(&fields), Some(4), KEEP, date);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("x-a: 1\r\ncontent-length: 4\r\n"), "{text}");
    assert_eq!(framing, Framing::Length(4));
}

#[test]
fn unknown_sizes_are_chunked_or_close_delimited_for_http10() {
    let (text, framing, keep) = head_of(with_status(200), None, KEEP);
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert_eq!((framing, keep), (Framing::Chunked, true));
    let http10 = ResponseFor {
        http10: true,
        ..KEEP
    };
    let (text, framing, keep) = head_of(with_status(200), None, http10);
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert_eq!((framing, keep), (Framing::UntilClose, false));
    let (text, _, keep) = head_of(with_status(200), Some(1), http10);
    assert!(text.contains("connection: keep-alive\r\n"), "{text}");
    assert!(keep);
}

#[test]
fn bodiless_responses_have_no_framing() {
    let head = ResponseFor { head: true, ..KEEP };
    let mut r = with_status(200);
    r.headers_mut()
        .insert("content-length", HeaderValue::from_static("100"));
    let (text, framing, _) = head_of(r, Some(0), head);
    assert!(
        text.contains("content-length: 100\r\n"),
        "HEAD keeps the GET length: {text}"
    );
    assert_eq!(framing, Framing::Empty);
    let mut r = with_status(204);
    r.headers_mut()
        .insert("content-length", HeaderValue::from_static("0"));
    let (text, framing, _) = head_of(r, Some(0), KEEP);
    assert!(!text.contains("content-length"), "{text}");
    assert_eq!(framing, Framing::Empty);
    let (text, framing, _) = head_of(with_status(304), None, KEEP);
    assert!(!text.contains("transfer-encoding"), "{text}");
    assert_eq!(framing, Framing::Empty);
}

#[test]
fn a_closing_connection_says_so() {
    let close = ResponseFor {
        keep_alive: false,
        ..KEEP
    };
    let (text, _, keep) = head_of(with_status(404), Some(0), close);
    assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert!(!keep);
}

fn stream(pieces: &[&'static str]) -> ProxyBody {
    let frames: Vec<Result<Frame<Bytes>, crate::upstream::BoxError>> = pieces
        .iter()
        .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
        .collect();
    StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

async fn sent(body: ProxyBody, framing: Framing) -> (String, bool) {
    let mut wire = Vec::new();
    let mut out = b"HEAD\r\n".to_vec();
    let complete = send(&mut wire, &mut out, body, framing).await.unwrap();
    assert!(out.is_empty());
    (String::from_utf8(wire).unwrap(), complete)
}

#[tokio::test]
async fn bodies_follow_the_head_in_their_framing() {
    assert_eq!(
        sent(full("hello"), Framing::Length(5)).await,
        ("HEAD\r\nhello".into(), true)
    );
    assert_eq!(
        sent(stream(&["ab", "", "cde"]), Framing::Chunked).await,
        ("HEAD\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n".into(), true)
    );
    assert_eq!(
        sent(stream(&["ab", "c"]), Framing::UntilClose).await,
        ("HEAD\r\nabc".into(), false)
    );
    assert_eq!(
        sent(full("hello"), Framing::Empty).await,
        ("HEAD\r\n".into(), true)
    );
}

#[tokio::test]
async fn a_body_off_its_declared_length_ends_the_connection() {
    assert_eq!(
        sent(full("hello world"), Framing::Length(5)).await,
        ("HEAD\r\nhello".into(), false)
    );
    assert_eq!(
        sent(full("hi"), Framing::Length(5)).await,
        ("HEAD\r\nhi".into(), false)
    );
}

#[tokio::test]
async fn a_failing_body_is_cut_without_the_last_chunk() {
    let frames: Vec<Result<Frame<Bytes>, crate::upstream::BoxError>> = vec![
        Ok(Frame::data(Bytes::from_static(b"ab"))),
        Err("upstream reset".into()),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
    assert_eq!(
        sent(body, Framing::Chunked).await,
        ("HEAD\r\n2\r\nab\r\n".into(), false)
    );
}
