use super::*;

const BASE: &str = r#"
[listener]
address = "127.0.0.1:8443"
[[listener.certificates]]
cert = "edge.crt"
key = "edge.key"

[identity]
cert = "svid.crt"
key = "svid.key"
bundle = "bundle.pem"

[clusters.payments]
endpoints = ["10.0.0.1:8443", { address = "10.0.0.2:8443", zone = "b", weight = 3, priority = 1 }]
allowed_ids = ["spiffe://example.org/svc/payments"]

[clusters.canary]
endpoints = ["10.0.0.3:8443"]
allowed_id_prefixes = ["spiffe://example.org/svc/"]
protocol = "http2"

[[routes]]
name = "pay"
match = { hosts = ["api.example.org"], path_prefix = "/pay", methods = ["get", "POST"], headers = { x-env = "prod" } }
split = [{ cluster = "payments", weight = 9 }, { cluster = "canary", weight = 1 }]
strip_prefix = true
timeout = "2s"

[[routes]]
cluster = "payments"
"#;

fn check(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("/etc/meshedge/edge.toml"), FileCheck::Skip)
}

fn problems(text: &str) -> Vec<String> {
    match check(text) {
        Ok(_) => vec![],
        Err(e) => e.problems().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn base_config_is_typed() {
    let c = check(BASE).unwrap();
    assert_eq!(c.listener.address, "127.0.0.1:8443".parse().unwrap());
    assert!(c.listener.http3);
    assert_eq!(c.admin.address, "127.0.0.1:9901".parse().unwrap());
    assert!(matches!(
        &c.identity,
        IdentityConfig::Files { key, .. } if key == Path::new("/etc/meshedge/svid.key")
    ));
    let EndpointsConfig::Static(eps) = &c.clusters["payments"].endpoints else {
        panic!("static")
    };
    assert_eq!(eps[1].zone.as_deref(), Some("b"));
    assert_eq!((eps[0].weight, eps[1].weight, eps[1].priority), (1, 3, 1));
    assert_eq!(c.clusters["canary"].protocol, UpstreamProtocol::Http2);
    let r = &c.routes.routes()[0];
    assert_eq!(&*r.name, "pay");
    assert_eq!(r.timeout, Some(Duration::from_secs(2)));
    assert_eq!(
        r.matcher.methods,
        vec![http::Method::GET, http::Method::POST]
    );
    assert_eq!(&*c.routes.routes()[1].name, "route1");
    assert_eq!(c.access_log, AccessLogConfig::Stderr);
}

#[test]
fn value_errors_name_their_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#""10.0.0.1:8443", { address"#,
            r#""x", { address"#,
            r#"clusters.payments.endpoints[0]: invalid address "x""#,
        ),
        (
            r#"address = "127.0.0.1:8443""#,
            r#"address = "nope""#,
            r#"listener.address: invalid address "nope""#,
        ),
        (
            r#"timeout = "2s""#,
            r#"timeout = "2 parsecs""#,
            "routes[0].timeout: invalid duration",
        ),
        (
            "\ncluster = \"payments\"",
            "\ncluster = \"nope\"",
            r#"routes[1].cluster: unknown cluster "nope""#,
        ),
        (
            r#"cluster = "canary", weight"#,
            r#"cluster = "gone", weight"#,
            r#"routes[0].split[1].cluster: unknown cluster "gone""#,
        ),
        (
            r#"protocol = "http2""#,
            r#"protocol = "h9""#,
            r#"clusters.canary.protocol: unknown protocol "h9""#,
        ),
        (
            r#"["spiffe://example.org/svc/payments"]"#,
            r#"["https://x"]"#,
            "clusters.payments.allowed_ids[0]:",
        ),
        (
            r#"hosts = ["api.example.org"]"#,
            r#"hosts = ["bad host"]"#,
            "routes[0].match.hosts[0]: invalid host pattern",
        ),
        (
            r#"methods = ["get", "POST"]"#,
            r#"methods = ["G T"]"#,
            "routes[0].match.methods[0]: invalid method",
        ),
        (
            r#"path_prefix = "/pay""#,
            r#"path_prefix = "pay""#,
            "routes[0].match.path_prefix: must start with '/'",
        ),
        (
            r#"strip_prefix = true"#,
            r#"strip_prefix = true
rewrite_prefix = "/x""#,
            "routes[0]: set strip_prefix or rewrite_prefix, not both",
        ),
        (
            r#"allowed_id_prefixes = ["spiffe://example.org/svc/"]"#,
            "",
            "clusters.canary: set allowed_ids, allowed_id_prefixes or verify_dns_name",
        ),
        (
            r#"allowed_id_prefixes = ["spiffe://example.org/svc/"]"#,
            r#"allowed_id_prefixes = ["spiffe://example.org/svc/"]
verify_dns_name = "canary.example.org""#,
            "clusters.canary: set one of allowed_ids, allowed_id_prefixes and verify_dns_name",
        ),
        (
            r#"allowed_id_prefixes = ["spiffe://example.org/svc/"]"#,
            r#"verify_dns_name = "10.0.0.3""#,
            r#"clusters.canary.verify_dns_name: "10.0.0.3" is not a DNS name"#,
        ),
        (
            r#"endpoints = ["10.0.0.3:8443"]"#,
            "",
            "clusters.canary.endpoints: no endpoints",
        ),
        (
            r#"protocol = "http2""#,
            r#"protocol = "http2"
retry = { base_backoff = "1s", max_backoff = "10ms" }"#,
            "clusters.canary.retry.max_backoff: must be >= base_backoff",
        ),
        (
            r#"protocol = "http2""#,
            r#"protocol = "http2"
balancer = { overprovisioning_factor = 0.5 }"#,
            "clusters.canary.balancer.overprovisioning_factor: must be between",
        ),
        (
            r#"timeout = "2s""#,
            r#"timeout = "2s"
rate_limit = { requests_per_second = 0.0 }"#,
            "routes[0].rate_limit.requests_per_second: must be > 0",
        ),
    ];
    for (from, to, want) in cases {
        assert!(BASE.contains(from), "{from} not in BASE");
        let text = BASE.replacen(from, to, 1);
        let got = problems(&text);
        assert!(
            got.iter().any(|p| p.starts_with(want)),
            "want {want:?}, got {got:?}"
        );
    }
}

#[test]
fn resilience_tables_default_and_parse() {
    let cfg = check(BASE).unwrap();
    let pay = &cfg.clusters["payments"];
    assert_eq!(pay.resilience, Default::default());
    let text = BASE.replacen(
        r#"protocol = "http2""#,
        r#"protocol = "http2"
[clusters.canary.retry]
max_retries = 4
per_try_timeout = { floor = "50ms", ceiling = "1s" }
[clusters.canary.health_check]
path = "/ready""#,
        1,
    );
    let cfg = check(&text).unwrap();
    let r = &cfg.clusters["canary"].resilience;
    assert_eq!(r.retry.max_retries, 4);
    assert_eq!(
        r.retry.per_try_timeout.floor,
        std::time::Duration::from_millis(50)
    );
    assert_eq!(r.health_check.path.as_deref(), Some("/ready"));
    let text = BASE.replacen(
        r#"timeout = "2s""#,
        r#"timeout = "2s"
rate_limit = { requests_per_second = 5.0, key = "header:x-api-key" }"#,
        1,
    );
    let cfg = check(&text).unwrap();
    let route = &cfg.routes.routes()[0];
    assert_eq!(route.rate_limit.as_ref().unwrap().effective_burst(), 5);
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = BASE.replace(r#""10.0.0.1:8443""#, r#""a""#).replace(
        r#"cluster = "payments"
"#,
        "cluster = \"zzz\"\n",
    );
    let got = problems(&text);
    assert_eq!(got.len(), 2, "{got:?}");
}

#[test]
fn syntax_errors_name_key_and_line() {
    let text = BASE.replace("protocol = \"http2\"", "protocol = \"http2\"\nprotocl = 1");
    let err = check(&text).unwrap_err();
    let ConfigError::Syntax {
        key, line, message, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(key, "clusters.canary.protocl");
    assert!(message.contains("unknown field `protocl`"), "{message}");
    assert_eq!(
        *line,
        BASE.lines().position(|l| l.contains("http2")).unwrap() + 2
    );
    let err = check("[listener\n").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    let err = check(&BASE.replace("weight = 3,", "weight = 3, wieght = 1,")).unwrap_err();
    assert!(
        err.to_string().contains("clusters.payments.endpoints[1]"),
        "{err}"
    );
}

#[test]
fn missing_files_are_problems() {
    let err = parse(BASE, Path::new("/nonexistent/edge.toml"), FileCheck::Exist).unwrap_err();
    let got: Vec<String> = err.problems().iter().map(|p| p.key.clone()).collect();
    for key in [
        "listener.certificates[0].cert",
        "listener.certificates[0].key",
        "identity.cert",
        "identity.key",
        "identity.bundle",
    ] {
        assert!(got.contains(&key.to_owned()), "{key} missing from {got:?}");
    }
}

#[test]
fn redaction_hides_key_paths() {
    let c = check(BASE).unwrap();
    let json = redacted_json(&c).to_string();
    assert!(
        !json.contains("svid.key") && !json.contains("edge.key"),
        "{json}"
    );
    assert!(json.contains("svid.crt"));
}

#[test]
fn identity_from_files_or_workload_api() {
    let files = "[identity]\ncert = \"svid.crt\"\nkey = \"svid.key\"\nbundle = \"bundle.pem\"\n";
    let wl = "[identity]\nworkload_api_socket = \"unix:///run/meshedge/agent.sock\"\n";
    let c = check(&BASE.replace(files, wl)).unwrap();
    assert_eq!(
        c.identity,
        IdentityConfig::WorkloadApi {
            socket: PathBuf::from("/run/meshedge/agent.sock")
        }
    );
    let cases = [
        (
            wl.replace("unix:///run", "relative"),
            "identity.workload_api_socket: invalid address",
        ),
        (
            files.replace("[identity]", wl.trim_end()),
            "identity: set workload_api_socket or cert/key/bundle, not both",
        ),
        (
            "[identity]\ncert = \"a\"\n".to_owned(),
            "identity: set cert, key and bundle",
        ),
    ];
    for (replacement, want) in cases {
        let got = problems(&BASE.replace(files, &replacement));
        assert!(
            got.iter().any(|p| p.starts_with(want)),
            "want {want:?}, got {got:?}"
        );
    }
}
