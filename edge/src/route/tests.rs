use super::*;
use crate::raw_head::RawHead;
use http::HeaderMap;

fn route(name: &str, matcher: RouteMatch) -> Route {
    Route {
        name: name.into(),
        matcher,
        backend: Backend::Cluster(name.into()),
        rewrite: None,
        timeout: None,
        max_request_body_bytes: 1024,
        rate_limit: None,
    }
}

fn find<'a>(
    t: &'a RouteTable,
    host: &str,
    path: &str,
    method: Method,
    headers: &[(&str, &str)],
) -> Option<&'a str> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let raw = RawHead::from_pairs(headers);
    let host = normalize_host(host);
    let [by_map, by_raw] = [RequestFields::Map(&map), RequestFields::Raw(&raw)].map(|headers| {
        t.find(&RequestInfo {
            host: &host,
            path,
            method: &method,
            headers,
        })
        .map(|r| &*r.name)
    });
    assert_eq!(
        by_map, by_raw,
        "the fields as received route as the map does"
    );
    by_map
}

#[test]
fn host_patterns() {
    let cases = [
        ("api.example.org", "api.example.org", true),
        ("api.example.org", "API.example.org", true),
        ("api.example.org", "x.api.example.org", false),
        ("*.example.org", "a.example.org", true),
        ("*.example.org", "a.b.example.org", true),
        ("*.example.org", "example.org", false),
        ("*.example.org", "aexample.org", false),
    ];
    for (pattern, host, want) in cases {
        let m = HostMatch::parse(pattern).unwrap();
        assert_eq!(
            m.matches(&normalize_host(host)),
            want,
            "{pattern} vs {host}"
        );
    }
    for bad in ["", "*", "*.", "a..b", "a b", "*.*.x", "a_b.org"] {
        assert!(HostMatch::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn host_normalization() {
    for (raw, want) in [
        ("Example.ORG:8443", "example.org"),
        ("example.org.", "example.org"),
        ("[::1]:443", "::1"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("plain", "plain"),
    ] {
        assert_eq!(normalize_host(raw), want);
    }
}

#[test]
fn path_patterns() {
    let cases = [
        (PathMatch::Prefix("/api".into()), "/api", true),
        (PathMatch::Prefix("/api".into()), "/api/", true),
        (PathMatch::Prefix("/api".into()), "/api/x/y", true),
        (PathMatch::Prefix("/api".into()), "/apix", false),
        (PathMatch::Prefix("/api/".into()), "/api/x", true),
        (PathMatch::Prefix("/api/".into()), "/api", false),
        (PathMatch::Prefix("/".into()), "/anything", true),
        (PathMatch::Exact("/a".into()), "/a", true),
        (PathMatch::Exact("/a".into()), "/a/", false),
    ];
    for (m, path, want) in cases {
        assert_eq!(m.matches(path), want, "{m:?} vs {path}");
    }
}

#[test]
fn first_match_wins_in_order() {
    let t = RouteTable::new(vec![
        route(
            "canary-header",
            RouteMatch {
                path: Some(PathMatch::Prefix("/pay".into())),
                headers: vec![HeaderMatch {
                    name: HeaderName::from_static("x-canary"),
                    value: Some(HeaderValue::from_static("1")),
                }],
                ..Default::default()
            },
        ),
        route(
            "pay-post",
            RouteMatch {
                hosts: vec![HostMatch::parse("api.example.org").unwrap()],
                path: Some(PathMatch::Prefix("/pay".into())),
                methods: vec![Method::POST],
                ..Default::default()
            },
        ),
        route(
            "wild",
            RouteMatch {
                hosts: vec![HostMatch::parse("*.example.org").unwrap()],
                ..Default::default()
            },
        ),
        route(
            "has-debug",
            RouteMatch {
                headers: vec![HeaderMatch {
                    name: HeaderName::from_static("x-debug"),
                    value: None,
                }],
                ..Default::default()
            },
        ),
    ]);
    type Case<'a> = (
        &'a str,
        &'a str,
        Method,
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
    );
    let cases: &[Case<'_>] = &[
        (
            "api.example.org",
            "/pay/1",
            Method::GET,
            &[("x-canary", "1")],
            Some("canary-header"),
        ),
        (
            "api.example.org",
            "/pay/1",
            Method::GET,
            &[("x-canary", "2")],
            Some("wild"),
        ),
        (
            "api.example.org:443",
            "/pay",
            Method::POST,
            &[],
            Some("pay-post"),
        ),
        ("API.example.org", "/payx", Method::POST, &[], Some("wild")),
        ("other.org", "/pay", Method::POST, &[], None),
        (
            "other.org",
            "/",
            Method::GET,
            &[("x-debug", "")],
            Some("has-debug"),
        ),
        ("deep.a.example.org", "/", Method::DELETE, &[], Some("wild")),
    ];
    for (host, path, method, headers, want) in cases {
        assert_eq!(
            find(&t, host, path, method.clone(), headers),
            *want,
            "{method} {host}{path} {headers:?}"
        );
    }
}

#[test]
fn weighted_split_follows_weights() {
    let mut r = route("split", RouteMatch::default());
    r.backend = Backend::Split(vec![
        WeightedCluster {
            cluster: "stable".into(),
            weight: 90,
        },
        WeightedCluster {
            cluster: "canary".into(),
            weight: 10,
        },
        WeightedCluster {
            cluster: "off".into(),
            weight: 0,
        },
    ]);
    assert_eq!(&**r.pick_cluster(0), "stable");
    assert_eq!(&**r.pick_cluster(u32::MAX), "canary");
    let canary = (0..1000u32)
        .map(|i| r.pick_cluster(i.wrapping_mul(4_294_967)))
        .filter(|c| &***c == "canary")
        .count();
    assert!((95..=105).contains(&canary), "canary got {canary}/1000");
    assert!((0..1000u32).all(|i| &**r.pick_cluster(i.wrapping_mul(4_294_967)) != "off"));
}

#[test]
fn prefix_rewrites() {
    let mut r = route("rw", RouteMatch::default());
    let cases = [
        (
            PathRewrite::StripPrefix("/pay".into()),
            "/pay/v1/x?q=1",
            "/v1/x?q=1",
        ),
        (PathRewrite::StripPrefix("/pay".into()), "/pay", "/"),
        (PathRewrite::StripPrefix("/pay".into()), "/pay?q", "/?q"),
        (PathRewrite::StripPrefix("/pay/".into()), "/pay/x", "/x"),
        (
            PathRewrite::ReplacePrefix {
                from: "/old".into(),
                to: "/new/v2".into(),
            },
            "/old/a",
            "/new/v2/a",
        ),
        (
            PathRewrite::ReplacePrefix {
                from: "/old".into(),
                to: "/new/".into(),
            },
            "/old/a",
            "/new/a",
        ),
        (
            PathRewrite::ReplacePrefix {
                from: "/old".into(),
                to: "/new".into(),
            },
            "/old",
            "/new",
        ),
    ];
    for (rw, input, want) in cases {
        r.rewrite = Some(rw.clone());
        assert_eq!(r.rewrite_path(input), want, "{rw:?} on {input}");
    }
    r.rewrite = None;
    assert_eq!(r.rewrite_path("/keep?x"), "/keep?x");
}
