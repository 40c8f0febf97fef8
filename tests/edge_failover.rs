//! Zone failover with real processes: `meshedge ca` + `meshedge agent` + 3 zones x 2
//! `meshedge echo`, the gateway in zone `a` with static endpoints, and a bounded
//! sequential client load (curl). Phases, in one run:
//!
//! 0. A spike over a route's rate limit gets 429 with `Retry-After` and `RateLimit-*`,
//!    other routes are unaffected; a slow cluster with `circuit_breaker.max_requests = 1`
//!    answers concurrent requests beyond it with a fast 503 and `x-meshedge-circuit-open`.
//! 1. SIGKILL both instances of the local zone mid-load: no client-visible error, traffic
//!    moves to zones b and c (answers name the instance; `/clusters` shows the a endpoints
//!    unavailable). The instance `c2` answers 503 to everything (`--fail-rate 1`): once it
//!    receives traffic it is ejected (`/clusters` `ejected`, the ejections counter).
//! 2. SIGSTOP (hang) zone b: still no error, and no request waits anywhere near the
//!    request timeout (hedging and latency-aware per-try timeouts); zone b's endpoints
//!    become unavailable.
//! 3. Zone a returns on the same addresses: traffic is back on it (health checks pass,
//!    the zone drain ends).
//! 4. Zone a blackholed (nftables drops every packet to its instances: no RST, no answer,
//!    as when a zone's link is cut): no error, no request near the timeout, the zone is
//!    drained; when packets flow again, traffic returns to it. Needs root (nftables).

#[path = "support/edge.rs"]
mod edge;
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge::*;
use support::mesh::*;
use support::*;

const ECHO_ID: &str = "spiffe://example.org/svc/echo";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// One client request as the client saw it.
#[derive(Debug, Clone)]
struct Sample {
    status: u16,
    seconds: f64,
    instance: String,
}

/// `GET /echo` through the gateway with curl (TLS not verified: the listener serves the
/// gateway's SVID, which names no host).
fn get(edge: std::net::SocketAddr) -> Sample {
    let out = Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{time_total}",
        ])
        .arg(format!("https://{edge}/echo"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut it = last.split_whitespace();
    let status = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let seconds = it.next().and_then(|s| s.parse().ok()).unwrap_or(f64::MAX);
    let instance = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["instance"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Sample {
        status,
        seconds,
        instance,
    }
}

/// `GET path` through the gateway: the status and the response headers (lowercase names).
fn head(edge: std::net::SocketAddr, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "10", "-D", "-", "-o", "/dev/null"])
        .arg(format!("https://{edge}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Starts `meshedge echo` as `name` on `listen` (the mesh helper always binds port 0).
fn echo_at(mesh: &Mesh, name: &str, listen: &str) -> ChildGuard {
    let mut cmd = meshedge();
    cmd.args(["echo", "--listen", listen, "--zone", &name[..1]])
        .args(["--service", "echo", "--instance", name, "--socket"])
        .arg(mesh.socket("n1"));
    spawn_until(cmd, "echo listening on", mesh.dir.path()).0
}

/// Runs `n` sequential GETs on a thread; samples are appended as they finish.
fn load(
    edge: std::net::SocketAddr,
    n: usize,
) -> (Arc<Mutex<Vec<Sample>>>, std::thread::JoinHandle<()>) {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sink = samples.clone();
    let t = std::thread::spawn(move || {
        for _ in 0..n {
            let s = get(edge);
            sink.lock().unwrap().push(s);
        }
    });
    (samples, t)
}

fn wait_count(samples: &Mutex<Vec<Sample>>, n: usize) {
    poll(Duration::from_secs(120), || {
        (samples.lock().unwrap().len() >= n).then_some(())
    })
    .unwrap_or_else(|| panic!("the load never reached {n} requests"));
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

fn clusters(edge: &Edge) -> serde_json::Value {
    let (code, body) = admin(edge.admin, "GET", "/clusters");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("clusters JSON")
}

/// The `/clusters` entry of endpoint `addr`.
fn endpoint(edge: &Edge, addr: &str) -> serde_json::Value {
    let c = clusters(edge);
    c["clusters"][0]["endpoints"]
        .as_array()
        .and_then(|eps| eps.iter().find(|e| e["address"] == addr).cloned())
        .unwrap_or_else(|| panic!("{addr} not in {c}"))
}

fn config(dir: &Path, files: &Path, echos: &[(&str, String)], slow: &str) -> String {
    let endpoints: Vec<String> = echos
        .iter()
        .map(|(name, addr)| format!(r#"{{ address = "{addr}", zone = "{}" }}"#, &name[..1]))
        .collect();
    format!(
        r#"
[gateway]
name = "failover"
zone = "a"

[listener]
address = "127.0.0.1:0"
http3 = false
[[listener.certificates]]
cert = "{svid}"
key = "{key}"

[admin]
address = "127.0.0.1:0"

[identity]
cert = "{svid}"
key = "{key}"
bundle = "{bundle}"

[access_log]
output = "{log}"

[clusters.echo]
endpoints = [{endpoints}]
allowed_ids = ["{ECHO_ID}"]
connect_timeout = "300ms"
request_timeout = "{timeout}s"

[clusters.echo.balancer]
panic_threshold = 10.0

[clusters.echo.outlier]
consecutive_5xx = 3
consecutive_gateway_failure = 3
max_ejection_percent = 50
interval = "1s"

[clusters.echo.health_check]
interval = "200ms"
interval_jitter = "20ms"
timeout = "200ms"

[clusters.echo.retry]
max_retries = 3
base_backoff = "5ms"
max_backoff = "20ms"
per_try_timeout = {{ floor = "150ms", ceiling = "1s" }}

[clusters.slow]
endpoints = ["{slow}"]
allowed_ids = ["{ECHO_ID}"]
circuit_breaker = {{ max_requests = 1 }}
health_check = {{ enabled = false }}

[[routes]]
name = "slow"
match = {{ path_prefix = "/slow" }}
cluster = "slow"

[[routes]]
name = "limited"
match = {{ path_prefix = "/limited" }}
cluster = "echo"
rate_limit = {{ requests_per_second = 1.0, burst = 2, key = "client_ip" }}

[[routes]]
cluster = "echo"
"#,
        svid = files.join("svid.pem").display(),
        key = files.join("svid.key").display(),
        bundle = files.join("bundle.pem").display(),
        log = dir.join("access.log").display(),
        endpoints = endpoints.join(", "),
        timeout = REQUEST_TIMEOUT.as_secs(),
    )
}

/// Asserts a phase's load saw no error and no request waiting half the request timeout.
fn no_error_none_near_the_timeout(phase: &str, all: &[Sample]) {
    let (errors, max) = summary(all);
    eprintln!(
        "{phase}: {} requests, {errors} errors, max latency {:.0} ms",
        all.len(),
        max * 1000.0
    );
    assert_eq!(
        errors,
        0,
        "{:?}",
        all.iter().filter(|s| s.status != 200).collect::<Vec<_>>()
    );
    assert!(
        max < REQUEST_TIMEOUT.as_secs_f64() / 2.0,
        "a request waited {max:.3} s (request timeout {REQUEST_TIMEOUT:?})"
    );
}

fn summary(samples: &[Sample]) -> (usize, f64) {
    let errors = samples.iter().filter(|s| s.status != 200).count();
    let max = samples.iter().map(|s| s.seconds).fold(0.0, f64::max);
    (errors, max)
}

#[test]
fn zone_kill_hang_and_ejection_cost_no_client_errors() {
    let mesh = Mesh::start("edge-failover");
    mesh.entry(ECHO_ID, "n1", &meshedge_selectors(), None);
    let _agent = mesh.agent("n1", Some(&mesh.token("n1")));
    let files = mesh.dir.join("edge-svid");
    run_ok(
        meshedge()
            .args(["agent", "fetch", "--socket"])
            .arg(mesh.socket("n1"))
            .arg("--write-dir")
            .arg(&files),
    );
    let mut echos = Vec::new();
    for name in ["a1", "a2", "b1", "b2", "c1", "c2"] {
        let extra: &[&str] = if name == "c2" {
            &["--fail-rate", "1"]
        } else {
            &[]
        };
        echos.push((name, mesh.echo("n1", name, extra)));
    }
    let addrs: Vec<(&str, String)> = echos.iter().map(|(n, (_, a))| (*n, a.clone())).collect();
    let (_slow, slow) = mesh.echo("n1", "s1", &["--latency", "400ms"]);
    let cfg_path = mesh.dir.join("edge.toml");
    std::fs::write(&cfg_path, config(mesh.dir.path(), &files, &addrs, &slow)).unwrap();
    let edge = spawn_edge(&cfg_path, mesh.dir.path());
    let addr_of = |name: &str| addrs.iter().find(|(n, _)| *n == name).unwrap().1.clone();

    // Warm up: the local zone takes the traffic.
    let warm: Vec<Sample> = (0..20).map(|_| get(edge.https)).collect();
    assert_eq!(summary(&warm).0, 0, "{warm:?}");
    assert!(
        warm.iter().all(|s| s.instance.starts_with('a')),
        "local zone first: {warm:?}"
    );

    // A spike over a route's rate limit: 429 with Retry-After and RateLimit-*; other
    // routes unaffected.
    let limited: Vec<(u16, String)> = (0..5).map(|_| head(edge.https, "/limited")).collect();
    let refused: Vec<&(u16, String)> = limited.iter().filter(|(s, _)| *s == 429).collect();
    assert!(!refused.is_empty(), "{limited:?}");
    for (_, h) in &refused {
        for name in [
            "retry-after:",
            "ratelimit-limit: 2",
            "ratelimit-remaining: 0",
            "ratelimit-reset:",
        ] {
            assert!(h.contains(name), "{name} missing: {h}");
        }
    }
    assert_eq!(head(edge.https, "/echo").0, 200, "other routes unaffected");

    // Circuit breaker (max_requests = 1) on a slow cluster: concurrent requests beyond
    // it get a fast 503 that says so.
    let calls: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || head(edge.https, "/slow")))
        .collect();
    let answers: Vec<(u16, String)> = calls.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(answers.iter().any(|(s, _)| *s == 200), "{answers:?}");
    assert!(
        answers
            .iter()
            .any(|(s, h)| *s == 503 && h.contains("x-meshedge-circuit-open: max_requests")),
        "{answers:?}"
    );

    // Phase 1: kill -9 the local zone mid-load.
    let (samples, t) = load(edge.https, 300);
    wait_count(&samples, 60);
    let killed_at = samples.lock().unwrap().len();
    for (name, (guard, _)) in echos.iter_mut() {
        if name.starts_with('a') {
            guard.kill9();
        }
    }
    let killed = std::time::Instant::now();
    let gone = poll(Duration::from_secs(5), || {
        ["a1", "a2"]
            .iter()
            .all(|a| endpoint(&edge, &addr_of(a))["available"] == false)
            .then(|| killed.elapsed())
    });
    if let Some(d) = gone {
        eprintln!(
            "zone kill: zone a unavailable {} ms after SIGKILL",
            d.as_millis()
        );
    }
    t.join().unwrap();
    let all = samples.lock().unwrap().clone();
    let (errors, max) = summary(&all);
    let after = &all[killed_at + 5..];
    eprintln!(
        "zone kill: {} requests, {errors} errors, max latency {:.0} ms",
        all.len(),
        max * 1000.0
    );
    assert_eq!(
        errors,
        0,
        "client-visible errors: {:?}",
        all.iter().filter(|s| s.status != 200).collect::<Vec<_>>()
    );
    assert!(
        after.iter().all(|s| !s.instance.starts_with('a')),
        "traffic left zone a"
    );
    assert!(after.iter().any(|s| s.instance.starts_with('b')));
    assert!(
        after.iter().all(|s| s.instance != "c2"),
        "c2 only answers 503"
    );
    for a in ["a1", "a2"] {
        let e = endpoint(&edge, &addr_of(a));
        assert_eq!(e["available"], false, "{e}");
    }
    // The 503 instance got traffic once zone a was gone, and was ejected.
    let c2 = poll(Duration::from_secs(10), || {
        let e = endpoint(&edge, &addr_of("c2"));
        (e["ejected"] == true).then_some(e)
    });
    let (_, metrics) = admin(edge.admin, "GET", "/metrics");
    let ejections: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("meshedge_edge_outlier_ejections_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    assert!(ejections >= 1.0, "{metrics}");
    let c2 = c2.unwrap_or_else(|| panic!("c2 not ejected: {}", clusters(&edge)));
    assert!(c2["failures"].as_u64().unwrap_or(0) >= 1, "{c2}");

    // Phase 2: hang zone b (SIGSTOP: connects succeed, nothing answers).
    let (samples, t) = load(edge.https, 150);
    wait_count(&samples, 30);
    let stopped: Vec<u32> = echos
        .iter()
        .filter(|(n, _)| n.starts_with('b'))
        .map(|(_, (g, _))| g.child.id())
        .collect();
    for pid in &stopped {
        signal(*pid, "-STOP");
    }
    let stopped_at = std::time::Instant::now();
    // The hung zone stops receiving traffic: its endpoints become unavailable.
    let hung = poll(Duration::from_secs(5), || {
        ["b1", "b2"]
            .iter()
            .all(|b| endpoint(&edge, &addr_of(b))["available"] == false)
            .then(|| stopped_at.elapsed())
    });
    t.join().unwrap();
    if let Some(d) = hung {
        eprintln!(
            "zone hang: zone b unavailable {} ms after SIGSTOP",
            d.as_millis()
        );
    }
    for pid in &stopped {
        signal(*pid, "-CONT");
    }
    assert!(
        hung.is_some(),
        "zone b still available: {}",
        clusters(&edge)
    );
    no_error_none_near_the_timeout("zone hang", &samples.lock().unwrap());
    let status = clusters(&edge);
    let cluster = &status["clusters"][0];
    assert_eq!(cluster["local_zone"], "a", "{status}");
    assert!(
        cluster["resilience"]["distribution"]["tiers"].is_array(),
        "{status}"
    );

    // Phase 3: zone a returns (same addresses): traffic goes back to it.
    let _back: Vec<ChildGuard> = ["a1", "a2"]
        .iter()
        .map(|a| echo_at(&mesh, a, &addr_of(a)))
        .collect();
    let returned = std::time::Instant::now();
    let back = poll(Duration::from_secs(10), || {
        let s = get(edge.https);
        assert_eq!(s.status, 200, "{s:?}");
        s.instance.starts_with('a').then(|| returned.elapsed())
    })
    .unwrap_or_else(|| panic!("traffic never came back to zone a: {}", clusters(&edge)));
    eprintln!(
        "zone return: back on zone a {} ms after restart",
        back.as_millis()
    );
    // Once both instances are healthy again, the local zone takes all the traffic (while
    // one is, the other zones take the share it cannot carry).
    let all_local = poll(Duration::from_secs(10), || {
        let batch: Vec<Sample> = (0..10).map(|_| get(edge.https)).collect();
        assert!(batch.iter().all(|s| s.status == 200), "{batch:?}");
        batch
            .iter()
            .all(|s| s.instance.starts_with('a'))
            .then(|| returned.elapsed())
    })
    .unwrap_or_else(|| panic!("zone a never took all traffic back: {}", clusters(&edge)));
    eprintln!(
        "zone return: all traffic on zone a {} ms after restart",
        all_local.as_millis()
    );

    // Phase 4: blackhole zone a.
    if !is_root() {
        eprintln!("phase 4 (zone blackhole) skipped: nftables needs root");
        return;
    }
    let ports: Vec<u16> = ["a1", "a2"]
        .iter()
        .map(|a| addr_of(a).rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    let (samples, t) = load(edge.https, 150);
    wait_count(&samples, 30);
    let hole = Blackhole::start(&ports);
    let cut_at = std::time::Instant::now();
    let drained = poll(Duration::from_secs(10), || {
        ["a1", "a2"]
            .iter()
            .all(|a| endpoint(&edge, &addr_of(a))["available"] == false)
            .then(|| cut_at.elapsed())
    });
    t.join().unwrap();
    eprintln!("zone blackhole: zone a unavailable after {drained:?}");
    no_error_none_near_the_timeout("zone blackhole", &samples.lock().unwrap());
    assert!(
        drained.is_some(),
        "blackholed zone a still available: {}",
        clusters(&edge)
    );
    drop(hole);
    let healed = std::time::Instant::now();
    let back = poll(Duration::from_secs(20), || {
        let s = get(edge.https);
        assert_eq!(s.status, 200, "{s:?}");
        s.instance.starts_with('a').then(|| healed.elapsed())
    })
    .unwrap_or_else(|| panic!("traffic never came back to zone a: {}", clusters(&edge)));
    eprintln!(
        "zone blackhole: back on zone a {} ms after the packets flow again",
        back.as_millis()
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Drops every TCP packet to `ports` on this host (an nftables table of its own, removed on
/// drop): a blackhole, no RST and no ICMP, like a zone whose link went down.
struct Blackhole(String);

impl Blackhole {
    fn start(ports: &[u16]) -> Self {
        use std::io::Write;
        let table = format!("meshedge_blackhole_{}", std::process::id());
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let rules = format!(
            "table inet {table} {{\n chain input {{\n  type filter hook input priority -10; policy accept;\n  tcp dport {{ {} }} drop\n }}\n}}\n",
            ports.join(", ")
        );
        let mut nft = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("nft runs (scripts/test.sh installs nftables)");
        nft.stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        assert!(nft.wait().unwrap().success(), "nft refused {rules}");
        Self(table)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.0])
            .status();
    }
}
