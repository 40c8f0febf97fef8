use serde_json::json;

use super::*;

fn view(ready: Result<u16, String>, clusters: Value, metrics: &str) -> EdgeView {
    EdgeView {
        admin: "127.0.0.1:9901".into(),
        ready,
        clusters: Some(clusters),
        metrics: Some(metrics.into()),
        metrics_before: None,
        probes: Some(json!({"probes": []})),
        fleet: None,
    }
}

fn step<'a>(steps: &'a [Step], name: &str) -> &'a Step {
    steps
        .iter()
        .find(|s| s.step == name)
        .unwrap_or_else(|| panic!("no step {name}: {steps:?}"))
}

fn says(s: &Step, text: &str) -> bool {
    s.evidence.iter().any(|e| e.contains(text))
}

#[test]
fn healthy_edge_passes_every_step() {
    let c = json!({"clusters": [{"name": "echo", "stale": false, "endpoints": [
        {"zone": "a", "health": "healthy", "ejected": false}]}]});
    let mut v = view(
        Ok(200),
        c,
        "meshedge_edge_cert_expiry_seconds{name=\"svid\"} 120\n",
    );
    v.probes = Some(
        json!({"probes": [{"cluster": "echo", "zone": "a", "endpoint": "127.0.0.1:1",
        "ok": true, "presented": "spiffe://example.org/svc/echo", "millis": 2.0}]}),
    );
    let steps = diagnose(&v);
    assert_eq!(steps.len(), 7);
    assert!(
        steps
            .iter()
            .all(|s| s.verdict == Verdict::Ok && s.action.is_none()),
        "{steps:?}"
    );
    assert!(says(
        step(&steps, "mTLS handshake per zone"),
        "spiffe://example.org/svc/echo"
    ));
}

#[test]
fn each_problem_is_named_in_its_step() {
    let unreachable = diagnose(&view(Err("refused".into()), json!({}), ""));
    assert_eq!(unreachable.len(), 1);
    assert_eq!(unreachable[0].verdict, Verdict::Critical);
    let c = json!({"clusters": [
        {"name": "a", "stale": true, "endpoints": [
            {"zone": "z1", "health": "healthy", "ejected": true},
            {"zone": "z2", "health": "unhealthy", "ejected": false}]},
        {"name": "b", "stale": false, "endpoints": []},
        {"name": "c", "stale": false, "endpoints": [
            {"zone": "z1", "health": "healthy", "ejected": false},
            {"zone": "z2", "health": "unhealthy", "ejected": false}],
         "resilience": {"latency": {"p99_ms": 2500.0}}},
    ]});
    let m = "meshedge_edge_identity_mismatch_total{cluster=\"a\"} 2\n\
             meshedge_edge_cert_expiry_seconds{name=\"svid\"} 30\n\
             meshedge_edge_config_reloads_total{result=\"rejected\"} 1\n\
             meshedge_edge_requests_total{status=\"200\"} 80\n\
             meshedge_edge_requests_total{status=\"503\"} 20\n\
             meshedge_edge_rate_limited_total{route=\"r\"} 5\n\
             meshedge_edge_circuit_open_total{cluster=\"c\",reason=\"max_requests\"} 3\n";
    let mut v = view(Ok(503), c, m);
    v.probes = Some(
        json!({"probes": [{"cluster": "a", "zone": "z1", "endpoint": "127.0.0.1:2",
        "ok": false, "presented": "spiffe://example.org/rogue",
        "error": "presented spiffe://example.org/rogue, the cluster allows [..]"}]}),
    );
    let steps = diagnose(&v);
    let check = |name: &str, verdict: Verdict, text: &str| {
        let s = step(&steps, name);
        assert_eq!(s.verdict, verdict, "{s:?}");
        assert!(says(s, text), "{text:?} not in {s:?}");
        assert!(s.action.is_some(), "{s:?}");
    };
    check("gateway live and ready", Verdict::Critical, "not ready");
    check(
        "certificates valid and renewing",
        Verdict::Warning,
        "expires in 30s",
    );
    check(
        "config reloads",
        Verdict::Warning,
        "1 config reloads rejected",
    );
    check(
        "endpoints per zone",
        Verdict::Critical,
        "cluster a: discovery is stale",
    );
    check(
        "endpoints per zone",
        Verdict::Critical,
        "cluster a: all 2 endpoints",
    );
    check(
        "endpoints per zone",
        Verdict::Critical,
        "cluster b: no endpoints",
    );
    check(
        "endpoints per zone",
        Verdict::Critical,
        "cluster c: healthy per zone z1 1/1, z2 0/1",
    );
    check(
        "mTLS handshake per zone",
        Verdict::Critical,
        "presented spiffe://example.org/rogue",
    );
    check(
        "mTLS handshake per zone",
        Verdict::Critical,
        "2 upstream identity mismatches",
    );
    check(
        "upstream latency and errors",
        Verdict::Critical,
        "20 of 100 answers were 5xx",
    );
    check(
        "upstream latency and errors",
        Verdict::Critical,
        "cluster c: upstream p99 2500.0 ms",
    );
    check(
        "rate limits and circuit breakers",
        Verdict::Warning,
        "5 requests rate-limited",
    );
    check(
        "rate limits and circuit breakers",
        Verdict::Warning,
        "3 requests refused by a circuit breaker",
    );
}

#[test]
fn counters_are_read_over_the_window() {
    let c = json!({"clusters": []});
    let mut v = view(
        Ok(200),
        c,
        "meshedge_edge_rate_limited_total{route=\"r\"} 5\nmeshedge_edge_requests_total{status=\"503\"} 40\n",
    );
    v.metrics_before = Some(
        "meshedge_edge_rate_limited_total{route=\"r\"} 5\nmeshedge_edge_requests_total{status=\"503\"} 40\n".into(),
    );
    let steps = diagnose(&v);
    assert_eq!(
        step(&steps, "rate limits and circuit breakers").verdict,
        Verdict::Ok
    );
    assert_eq!(
        step(&steps, "upstream latency and errors").verdict,
        Verdict::Ok
    );
    v.metrics_before = Some("meshedge_edge_rate_limited_total{route=\"r\"} 2\n".into());
    let steps = diagnose(&v);
    assert!(says(
        step(&steps, "rate limits and circuit breakers"),
        "3 requests rate-limited"
    ));
}

#[test]
fn agent_step_names_the_outage_and_the_deadline() {
    let ok = "meshedge_agent_ca_reachable 1\nmeshedge_agent_node_svid_expiry_seconds 1700\n";
    assert_eq!(diagnose_agent("a", Ok(ok))[0].verdict, Verdict::Ok);
    let down = "meshedge_agent_ca_reachable 0\nmeshedge_agent_ca_errors_total{op=\"renew\"} 7\nmeshedge_agent_node_svid_expiry_seconds 1200\n";
    let s = &diagnose_agent("a", Ok(down))[0];
    assert_eq!(s.verdict, Verdict::Critical);
    assert!(
        says(s, "CA outage") && says(s, "7 failed") && says(s, "expires in 1200s"),
        "{s:?}"
    );
    let expired = "meshedge_agent_ca_reachable 0\nmeshedge_agent_node_svid_expiry_seconds -5\nmeshedge_agent_workload_svids_expired 3\n";
    let s = &diagnose_agent("a", Ok(expired))[0];
    assert!(
        says(s, "already expired") && says(s, "3 workload SVIDs expired"),
        "{s:?}"
    );
    assert_eq!(
        diagnose_agent("a", Err("refused".into()))[0].verdict,
        Verdict::Critical
    );
}

#[test]
fn fleet_step_names_uncovered_zones_and_unheld_vips() {
    let mut v = view(Ok(200), json!({"clusters": []}), "");
    v.fleet = Some(json!({
        "node": "a1", "min_per_zone": 1, "stale": false, "age_seconds": 0.5,
        "members": [
            {"node": "a1", "zone": "a", "gateway": "Ready"},
            {"node": "b1", "zone": "b", "gateway": "Stopped"},
            {"node": "b2", "zone": "b", "gateway": "Starting"},
        ],
        "vips": [{"address": "198.18.1.1", "holder": "a1"}, {"address": "198.18.1.2", "holder": null}],
    }));
    let steps = diagnose(&v);
    let f = step(&steps, "fleet covers every zone");
    assert_eq!(f.verdict, Verdict::Critical, "{f:?}");
    assert!(
        says(f, "zone b: 0 ready gateway(s) of 1 wanted (2 members)"),
        "{f:?}"
    );
    assert!(says(f, "zone a: 1 ready gateway(s) of 1 wanted"), "{f:?}");
    assert!(says(f, "VIP 198.18.1.2 held by nobody"), "{f:?}");
    assert!(says(f, "VIP 198.18.1.1 held by a1"), "{f:?}");
    v.fleet = Some(
        json!({"node": "a1", "min_per_zone": 1, "stale": true, "age_seconds": 45.0,
        "members": [{"node": "a1", "zone": "a", "gateway": "Ready"}], "vips": []}),
    );
    let f = step(&diagnose(&v), "fleet covers every zone").clone();
    assert_eq!(f.verdict, Verdict::Warning, "{f:?}");
    assert!(says(&f, "45s old"), "{f:?}");
}
