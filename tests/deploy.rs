//! deploy/: every artifact is checked by the tool that consumes it.
//!
//! - Kubernetes manifests (deploy/kubernetes/*.yaml): `kubernetes-validate --strict` against a
//!   pinned Kubernetes version; the edge config embedded in the ConfigMap passes
//!   `meshedge edge --check`.
//! - systemd units (deploy/systemd/*.service): `systemd-analyze verify` (no warnings allowed)
//!   and `systemd-analyze security --offline` under an exposure threshold; the example edge
//!   configs pass `meshedge edge --check`, the agent config parses and validates.
//! - Prometheus (deploy/prometheus/): `promtool check config`, `check rules`, `test rules`.
//!
//! A missing validator fails the test with how to install it (scripts/test.sh does); nothing
//! is skipped.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::*;

/// The Kubernetes version the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.30.0";

/// Highest `systemd-analyze security` exposure accepted (x 0.1: 30 = 3.0, "OK").
const SYSTEMD_EXPOSURE_THRESHOLD: &str = "30";

fn deploy(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(sub)
}

/// Files of `dir` whose names end with one of `exts`, sorted; at least one.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            exts.iter().any(|ext| name.ends_with(ext))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no {exts:?} files in {}", dir.display());
    out
}

/// The path of a validator, or a loud failure that says how to get it.
fn tool(name: &str, install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(
        ["/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin"]
            .iter()
            .map(PathBuf::from),
    );
    for dir in dirs {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "validator `{name}` is missing: {install} (scripts/test.sh installs it); \
         deploy/ is not checked without it"
    );
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

// === Kubernetes ===

#[test]
fn kubernetes_manifests_validate_against_pinned_version() {
    let kv = tool("kubernetes-validate", "pip install kubernetes-validate");
    let version = run(Command::new(&kv).arg("--version"));
    assert_ok("kubernetes-validate --version", &version);
    eprintln!("kubernetes-validate {}", text(&version.stdout).trim());
    let manifests = files(&deploy("kubernetes"), &[".yaml", ".yml"]);
    let mut all = String::new();
    for file in &manifests {
        let out = run(Command::new(&kv)
            .args(["-k", KUBERNETES_VERSION, "--strict"])
            .arg(file));
        assert_ok(&format!("kubernetes-validate {}", file.display()), &out);
        let report = text(&out.stdout) + &text(&out.stderr);
        assert!(
            report.contains("passed") && !report.contains("ERROR"),
            "{}: {report}",
            file.display()
        );
        all.push_str(&std::fs::read_to_string(file).unwrap());
    }
    // What the deployment is made of (issue 9): each kind is there.
    for kind in [
        "kind: Namespace",
        "kind: StatefulSet",
        "volumeClaimTemplates:",
        "kind: DaemonSet",
        "kind: Deployment",
        "kind: PodDisruptionBudget",
        "apiVersion: autoscaling/v2",
        "kind: HorizontalPodAutoscaler",
        "kind: Service",
        "kind: NetworkPolicy",
        "kind: ConfigMap",
        "topologyKey: topology.kubernetes.io/zone",
        "fieldPath: spec.nodeName",
        "topology\\.kubernetes\\.io/zone",
        "path: /run/meshedge",
        "path: /healthz/live",
        "path: /healthz/ready",
        "prometheus.io/scrape: \"true\"",
    ] {
        assert!(all.contains(kind), "deploy/kubernetes has no `{kind}`");
    }
}

#[test]
fn kubernetes_validate_refuses_a_broken_manifest() {
    let kv = tool("kubernetes-validate", "pip install kubernetes-validate");
    let dir = TempDir::new("deploy-k8s-bad");
    let good = std::fs::read_to_string(deploy("kubernetes").join("30-edge.yaml")).unwrap();
    let bad = good.replacen("maxSkew: 1", "maxSkew: 1\n          maxSkw: 1", 1);
    assert_ne!(good, bad);
    let path = dir.join("bad.yaml");
    std::fs::write(&path, bad).unwrap();
    let out = run(Command::new(&kv)
        .args(["-k", KUBERNETES_VERSION, "--strict"])
        .arg(&path));
    assert!(!out.status.success(), "a typo passed: {out:?}");
    assert!(
        (text(&out.stdout) + &text(&out.stderr)).contains("maxSkw"),
        "{out:?}"
    );
}

/// `data.<key>` of the ConfigMap `name` in a multi-document YAML file (via python3 + PyYAML,
/// which kubernetes-validate depends on).
fn configmap_entry(file: &Path, name: &str, key: &str) -> String {
    let py = tool("python3", "apt-get install python3");
    let script = "import sys, yaml\n\
        for d in yaml.safe_load_all(open(sys.argv[1])):\n\
        \x20   if d and d.get('kind') == 'ConfigMap' and d['metadata']['name'] == sys.argv[2]:\n\
        \x20       sys.stdout.write(d['data'][sys.argv[3]]); sys.exit(0)\n\
        sys.exit('no such ConfigMap entry')\n";
    let out = run(Command::new(py)
        .args(["-c", script])
        .arg(file)
        .args([name, key]));
    assert_ok("reading the ConfigMap with PyYAML", &out);
    text(&out.stdout)
}

#[test]
fn kubernetes_edge_configmap_passes_edge_check() {
    let file = deploy("kubernetes").join("30-edge.yaml");
    let config = configmap_entry(&file, "meshedge-edge", "edge.toml");
    let dir = TempDir::new("deploy-k8s-edge");
    edge_check(&config, &file, &dir);
}

// === Edge configs ===

/// A self-signed certificate and key (PEM), with a SPIFFE ID as URI SAN.
fn cert_pem() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["edge.example.org".into()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://example.org/edge".try_into().unwrap(),
    ));
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Runs `meshedge edge --check` on `config` (from `origin`) after moving every file it names
/// (listener certificates, identity, a file access log) under `dir`, where real PEM files
/// are written: the check loads them as serving would.
fn edge_check(config: &str, origin: &Path, dir: &TempDir) {
    let mut value: toml::Value =
        toml::from_str(config).unwrap_or_else(|e| panic!("{}: {e}", origin.display()));
    let (cert, key) = cert_pem();
    let relocate = |v: &mut toml::Value, content: Option<&str>| {
        let p = v
            .as_str()
            .expect("a path")
            .trim_start_matches('/')
            .to_owned();
        let target = dir.join(&p);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        if let Some(c) = content {
            std::fs::write(&target, c).unwrap();
        }
        *v = toml::Value::String(target.to_string_lossy().into_owned());
    };
    let root = value.as_table_mut().unwrap();
    let certs = root["listener"]["certificates"].as_array_mut().unwrap();
    assert!(!certs.is_empty());
    for c in certs {
        relocate(&mut c["cert"], Some(&cert));
        relocate(&mut c["key"], Some(&key));
    }
    let identity = root.get_mut("identity").expect("[identity]");
    relocate(&mut identity["cert"], Some(&cert));
    relocate(&mut identity["key"], Some(&key));
    relocate(&mut identity["bundle"], Some(&cert));
    if let Some(out) = root
        .get_mut("access_log")
        .and_then(|a| a.get_mut("output"))
        .filter(|o| o.as_str().is_some_and(|s| s.contains('/')))
    {
        relocate(out, None);
    }
    let path = dir.join("edge.toml");
    std::fs::write(&path, toml::to_string(&value).unwrap()).unwrap();
    let out = run(meshedge().args(["edge", "--check", "--config"]).arg(&path));
    assert_ok(
        &format!("meshedge edge --check ({})", origin.display()),
        &out,
    );
    assert!(text(&out.stdout).contains(": ok ("), "{out:?}");
}

#[test]
fn systemd_example_edge_configs_pass_edge_check() {
    let mut edges = 0;
    for file in files(&deploy("systemd"), &[".toml"]) {
        let config = std::fs::read_to_string(&file).unwrap();
        let value: toml::Value = toml::from_str(&config).unwrap();
        if value.get("listener").is_none() {
            continue; // not an edge config (agent.toml is checked below)
        }
        edges += 1;
        let dir = TempDir::new("deploy-systemd-edge");
        edge_check(&config, &file, &dir);
    }
    assert!(edges >= 1, "no edge config in deploy/systemd");
}

#[test]
fn systemd_example_agent_config_validates() {
    let file = deploy("systemd").join("agent.toml");
    let cfg = meshedge_agent::config::AgentFile::load(&file)
        .and_then(|f| f.validate())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.socket, Path::new("/run/meshedge/agent.sock"));
    assert_eq!(cfg.state_dir, Path::new("/var/lib/meshedge/agent"));
    // The unit's paths are the config's.
    let unit = std::fs::read_to_string(deploy("systemd").join("meshedge-agent.service")).unwrap();
    assert!(unit.contains("RuntimeDirectory=meshedge\n"), "{unit}");
    assert!(unit.contains("StateDirectory=meshedge/agent\n"), "{unit}");
}

// === systemd ===

#[test]
fn systemd_units_verify_and_are_hardened() {
    let analyze = tool("systemd-analyze", "apt-get install systemd");
    let version = run(Command::new(&analyze).arg("--version"));
    assert_ok("systemd-analyze --version", &version);
    eprintln!("{}", text(&version.stdout).lines().next().unwrap_or(""));
    let units = files(&deploy("systemd"), &[".service"]);
    // verify wants the ExecStart binaries to exist: point the units at the one under test.
    let dir = TempDir::new("deploy-systemd");
    let bin = env!("CARGO_BIN_EXE_meshedge");
    let mut copies = Vec::new();
    for unit in &units {
        let body = std::fs::read_to_string(unit).unwrap();
        for need in [
            "ProtectSystem=strict\n",
            "NoNewPrivileges=yes\n",
            "PrivateTmp=yes\n",
            "ProtectHome=yes\n",
            "CapabilityBoundingSet=",
            "Restart=on-failure\n",
            "/usr/local/bin/meshedge ",
        ] {
            assert!(body.contains(need), "{}: no `{need}`", unit.display());
        }
        let copy = dir.join(&unit.file_name().unwrap().to_string_lossy());
        std::fs::write(&copy, body.replace("/usr/local/bin/meshedge", bin)).unwrap();
        copies.push(copy);
    }
    let edge = std::fs::read_to_string(deploy("systemd").join("meshedge-edge.service")).unwrap();
    assert!(edge.contains("ExecReload=/bin/kill -HUP $MAINPID\n"));
    assert!(edge.contains("ExecStartPre=/usr/local/bin/meshedge edge --check --config"));
    let agent = std::fs::read_to_string(deploy("systemd").join("meshedge-agent.service")).unwrap();
    assert!(agent.contains("RuntimeDirectory=meshedge\n"));

    // All units together, so their dependencies on each other resolve. Unknown keys and
    // bad values are warnings on stderr with exit status 0: any output fails.
    let out = run(Command::new(&analyze)
        .args(["verify", "--man=no"])
        .args(&copies));
    assert_ok("systemd-analyze verify", &out);
    assert!(
        out.stderr.is_empty(),
        "systemd-analyze verify warned:\n{}",
        text(&out.stderr)
    );
    for unit in &units {
        let out = run(Command::new(&analyze)
            .args([
                "security",
                "--offline=true",
                &format!("--threshold={SYSTEMD_EXPOSURE_THRESHOLD}"),
            ])
            .arg(unit));
        assert_ok(
            &format!(
                "systemd-analyze security {} (exposure above {})",
                unit.display(),
                SYSTEMD_EXPOSURE_THRESHOLD
            ),
            &out,
        );
    }
}

#[test]
fn systemd_analyze_verify_reports_a_typo() {
    let analyze = tool("systemd-analyze", "apt-get install systemd");
    let dir = TempDir::new("deploy-systemd-bad");
    let body = std::fs::read_to_string(deploy("systemd").join("meshedge-ca.service"))
        .unwrap()
        .replace("/usr/local/bin/meshedge", env!("CARGO_BIN_EXE_meshedge"))
        .replace("ProtectSystem=strict", "ProtectSystm=strict");
    let path = dir.join("meshedge-ca.service");
    std::fs::write(&path, body).unwrap();
    let out = run(Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&path));
    assert!(
        text(&out.stderr).contains("ProtectSystm"),
        "the typo went unnoticed: {out:?}"
    );
}

// === Prometheus ===

#[test]
fn prometheus_config_rules_and_rule_tests_pass_promtool() {
    let promtool = tool("promtool", "apt-get install prometheus");
    let version = run(Command::new(&promtool).arg("--version"));
    assert_ok("promtool --version", &version);
    eprintln!("{}", text(&version.stdout).lines().next().unwrap_or(""));
    let dir = deploy("prometheus");
    let out = run(Command::new(&promtool)
        .args(["check", "config"])
        .arg(dir.join("prometheus.yml")));
    assert_ok("promtool check config", &out);
    let out = run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(dir.join("alerts.yml")));
    assert_ok("promtool check rules", &out);
    let out =
        run(Command::new(&promtool)
            .current_dir(&dir)
            .args(["test", "rules", "alerts_test.yml"]));
    assert_ok("promtool test rules", &out);
    assert!(text(&out.stdout).contains("SUCCESS"), "{out:?}");

    // The alerts issue 9 asks for, on metric names the binary exports.
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    for alert in [
        "MeshedgeGatewayDown",
        "MeshedgeZoneNoHealthyEndpoints",
        "MeshedgeEjectionsRising",
        "MeshedgeEdgeCertExpiring",
        "MeshedgeHigh5xxRate",
        "MeshedgeRateLimitSpike",
        "MeshedgeVipFlapping",
    ] {
        assert!(
            rules.contains(&format!("alert: {alert}\n")),
            "no alert {alert}"
        );
    }
    let known: Vec<&str> = [
        meshedge_edge::resilience::metrics::ALL,
        &[
            meshedge_edge::metrics::REQUESTS_TOTAL,
            meshedge_edge::metrics::READY,
            meshedge_edge::metrics::CERT_EXPIRY_SECONDS,
            meshedge_edge::metrics::IDENTITY_MISMATCH_TOTAL,
            meshedge_edge::metrics::CONFIG_RELOADS_TOTAL,
            meshedge_agent::metrics::NODE_SVID_EXPIRY_SECONDS,
            meshedge_agent::metrics::CA_REACHABLE,
            meshedge_ca::metrics::INTERMEDIATE_EXPIRY_SECONDS,
            meshedge_agent::fleet::metrics::FLEET_VIP_CHANGES_TOTAL,
        ],
    ]
    .concat();
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("meshedge_") {
            assert!(
                known.contains(&word),
                "alerts.yml uses {word}, which no crate exports"
            );
        }
    }
}

#[test]
fn promtool_refuses_a_broken_rule() {
    let promtool = tool("promtool", "apt-get install prometheus");
    let dir = TempDir::new("deploy-prom-bad");
    let rules = std::fs::read_to_string(deploy("prometheus").join("alerts.yml"))
        .unwrap()
        .replacen(
            "expr: up{component=\"edge\"} == 0",
            "expr: up{component=\"edge\" == 0",
            1,
        );
    let path = dir.join("alerts.yml");
    std::fs::write(&path, rules).unwrap();
    let out = run(Command::new(&promtool).args(["check", "rules"]).arg(&path));
    assert!(!out.status.success(), "a broken expression passed: {out:?}");
}

// === deploy/local: the 3-zone cluster out of network namespaces ===

/// Tears the cluster down when the test ends, whatever happened.
struct LocalCluster {
    script: PathBuf,
    dir: PathBuf,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("down")
            .arg(&self.dir)
            .output();
    }
}

fn curl_in(ns: &str, args: &[&str]) -> Output {
    run(Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sk", "--max-time", "5"])
        .args(args))
}

#[test]
fn local_cluster_script_serves_three_zones_and_fails_over() {
    let uid = run(Command::new("id").arg("-u"));
    assert_eq!(
        text(&uid.stdout).trim(),
        "0",
        "this test needs root (network namespaces); run as root"
    );
    tool("ip", "apt-get install iproute2");
    tool("nsupdate", "apt-get install bind9-dnsutils");
    tool("curl", "apt-get install curl");
    tool("openssl", "apt-get install openssl");
    let tmp = TempDir::new("deploy-local");
    // The namespace prefix is the directory's name: short and unique per run.
    let prefix = format!("ml{:06x}", rand::random::<u32>() & 0xff_ffff);
    let dir = tmp.join(&prefix);
    let cluster = LocalCluster {
        script: deploy("local").join("cluster.sh"),
        dir: dir.clone(),
    };
    let out = run(Command::new("bash")
        .arg(&cluster.script)
        .arg("up")
        .arg(&dir)
        .arg(env!("CARGO_BIN_EXE_meshedge")));
    assert_ok("deploy/local/cluster.sh up", &out);
    let banner = text(&out.stdout);
    assert!(banner.contains("ready."), "{banner}");
    let client = format!("{prefix}-cl");
    let call = |edge_ip: &str| {
        let resolve = format!("edge.local:8443:{edge_ip}");
        curl_in(
            &client,
            &[
                "--resolve",
                &resolve,
                "-w",
                "\n%{http_code}",
                "https://edge.local:8443/echo/",
            ],
        )
    };
    // Both gateways answer from their own zone while it is healthy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for (edge_ip, zone) in [("198.18.1.11", "a"), ("198.18.1.12", "b")] {
        loop {
            let body = text(&call(edge_ip).stdout);
            if body.ends_with("\n200") && body.contains(&format!("\"zone\":\"{zone}\"")) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "gateway {edge_ip} never answered from zone {zone}: {body}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    let status = run(Command::new("ip")
        .args(["netns", "exec", &client, env!("CARGO_BIN_EXE_meshedge")])
        .args(["status", "--admin", "198.18.1.11:9901"]));
    assert_ok("meshedge status", &status);
    let table = text(&status.stdout);
    for ep in ["198.18.1.11:9001", "198.18.1.12:9002", "198.18.1.13:9001"] {
        assert!(table.contains(ep), "{ep} not in\n{table}");
    }

    // Zone a's instances die: gateway a keeps answering 200, from another zone.
    for i in [1, 2] {
        let pid = std::fs::read_to_string(dir.join(format!("pids/echo-a{i}.pid"))).unwrap();
        assert_ok("kill echo", &run(Command::new("kill").arg(pid.trim())));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut moved = 0;
    while moved < 5 {
        let body = text(&call("198.18.1.11").stdout);
        if body.ends_with("\n200") && !body.contains("\"zone\":\"a\"") {
            moved += 1;
        } else {
            moved = 0;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gateway a did not fail over: {body}"
        );
    }

    // Down: no process and no namespace of this cluster is left.
    drop(cluster);
    let left = run(Command::new("pgrep")
        .arg("-f")
        .arg(dir.to_string_lossy().as_ref()));
    assert!(
        left.stdout.is_empty(),
        "processes left: {}",
        text(&left.stdout)
    );
    let list = run(Command::new("ip").args(["netns", "list"]));
    assert!(
        !text(&list.stdout).contains(&prefix),
        "namespaces left: {}",
        text(&list.stdout)
    );
}
