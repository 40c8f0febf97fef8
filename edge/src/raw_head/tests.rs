use super::*;

fn raw(pairs: &[(&str, &str)]) -> RawHead {
    RawHead::from_pairs(pairs)
}

#[test]
fn fields_come_back_in_order_and_spelling() {
    let head = raw(&[("Server", "up"), ("X-A", "1"), ("x-a", "2")]);
    let fields: Vec<_> = head.iter().collect();
    assert_eq!(
        fields,
        [
            (&b"Server"[..], &b"up"[..]),
            (&b"X-A"[..], &b"1"[..]),
            (&b"x-a"[..], &b"2"[..])
        ]
    );
    assert_eq!(head.len(), 3);
    assert!(head.contains(b"server"));
    assert!(!head.contains(b"serve"));
    assert!(raw(&[]).is_empty());
}

#[test]
fn retain_drops_fields_by_name_and_value() {
    let mut head = raw(&[("te", "trailers"), ("TE", "gzip"), ("a", "1"), ("b", "2")]);
    head.retain(|name, value| !(name.eq_ignore_ascii_case(b"te") && value != b"trailers"));
    head.retain(|name, _| name != b"b");
    let names: Vec<_> = head.iter().map(|(n, _)| n.to_vec()).collect();
    assert_eq!(names, [b"te".to_vec(), b"a".to_vec()]);
}

#[test]
fn a_map_gets_every_field_lowercased_with_repeats() {
    let head = raw(&[
        ("Content-Type", "text/plain"),
        ("Set-Cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("X-Upstream", "z"),
    ]);
    let mut map = HeaderMap::new();
    map.insert("x-request-id", HeaderValue::from_static("id"));
    head.append_to(&mut map);
    assert_eq!(map.len(), 5);
    assert_eq!(map["content-type"], "text/plain");
    assert_eq!(map.get_all("set-cookie").iter().count(), 2);
    assert_eq!(map["x-upstream"], "z");
    assert_eq!(map["x-request-id"], "id");
}

#[test]
fn a_field_no_parser_would_accept_is_left_out_of_the_map() {
    let head = raw(&[("bad name", "1"), ("ok", "bad\u{7f}value"), ("good", "2")]);
    let mut map = HeaderMap::new();
    head.append_to(&mut map);
    assert_eq!(map.len(), 1);
    assert_eq!(map["good"], "2");
}

#[test]
fn added_fields_come_first_and_survive_retain() {
    let mut head = raw(&[("x-request-id", "up"), ("server", "up")]);
    head.retain(|name, _| name != b"x-request-id");
    head.add(
        http::HeaderName::from_static("x-request-id"),
        HeaderValue::from_static("gw"),
    );
    head.retain(|_, value| value != b"gw");
    let fields: Vec<_> = head.iter().collect();
    assert_eq!(
        fields,
        [
            (&b"x-request-id"[..], &b"gw"[..]),
            (&b"server"[..], &b"up"[..])
        ]
    );
    assert_eq!(head.len(), 2);
    assert!(!head.contains(b"x-request-id"), "only the upstream's count");
    let mut map = HeaderMap::new();
    head.append_to(&mut map);
    assert_eq!(map["x-request-id"], "gw");
    assert_eq!(map.len(), 2);
}
