//! Edge configs: every example in deploy/ parses and validates, an unknown key injected
//! into any of its tables is refused with that table's key path, and `meshedge edge --check`
//! reports problems with key paths and exit status 1.

mod support;

use std::path::{Path, PathBuf};

use meshedge_edge::config::{self, ConfigError, FileCheck};
use support::*;

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/edge");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/edge exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "examples in {}: {files:?}", dir.display());
    files
}

/// Every table of `v` (nested tables, arrays of tables, inline tables), with its key path.
fn tables(v: &toml::Value, path: String, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            out.push(path.clone());
            for (k, child) in t {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                tables(child, p, out);
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                tables(item, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// `v` with `bogus_key = 1` added to the table at `path`.
fn inject(v: &toml::Value, path: &str, here: &str) -> toml::Value {
    match v {
        toml::Value::Table(t) => {
            let mut t = t.clone();
            if path == here {
                t.insert("bogus_key".into(), toml::Value::Integer(1));
            }
            for (k, child) in t.clone() {
                let p = if here.is_empty() {
                    k.clone()
                } else {
                    format!("{here}.{k}")
                };
                t.insert(k, inject(&child, path, &p));
            }
            toml::Value::Table(t)
        }
        toml::Value::Array(items) => toml::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| inject(item, path, &format!("{here}[{i}]")))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn every_deploy_example_is_valid() {
    for file in examples() {
        let text = std::fs::read_to_string(&file).unwrap();
        if let Err(e) = config::parse(&text, &file, FileCheck::Skip) {
            panic!("{}: {e}", file.display());
        }
    }
}

#[test]
fn unknown_keys_are_refused_in_every_table() {
    for file in examples() {
        let text = std::fs::read_to_string(&file).unwrap();
        let value: toml::Value = toml::from_str(&text).unwrap();
        let mut paths = Vec::new();
        tables(&value, String::new(), &mut paths);
        assert!(paths.len() > 3, "{}: {paths:?}", file.display());
        // `clusters` and `match.headers` are maps whose keys are names the user picks.
        for path in paths
            .into_iter()
            .filter(|p| p != "clusters" && !p.ends_with(".headers"))
        {
            let bad = toml::to_string(&inject(&value, &path, "")).unwrap();
            match config::parse(&bad, &file, FileCheck::Skip) {
                Err(ConfigError::Syntax { key, message, .. }) => {
                    let want = if path.is_empty() {
                        "bogus_key".to_owned()
                    } else {
                        format!("{path}.bogus_key")
                    };
                    assert_eq!(key, want, "{}: {message}", file.display());
                    assert!(message.contains("bogus_key"), "{message}");
                }
                other => panic!(
                    "{}: bogus_key in [{path}] was not refused: {:?}",
                    file.display(),
                    other.map(|_| "accepted")
                ),
            }
        }
    }
}

#[test]
fn check_flag_reports_problems_with_key_paths() {
    let dir = TempDir::new("edge-check");
    for f in ["edge.crt", "edge.key", "svid.pem", "svid.key", "bundle.pem"] {
        std::fs::write(dir.join(f), "").unwrap();
    }
    let good = r#"
[listener]
address = "127.0.0.1:0"
[[listener.certificates]]
cert = "edge.crt"
key = "edge.key"
[identity]
cert = "svid.pem"
key = "svid.key"
bundle = "bundle.pem"
[clusters.payments]
endpoints = ["127.0.0.1:1", "x"]
allowed_ids = ["spiffe://example.org/svc/payments"]
[[routes]]
cluster = "payments"
"#;
    let path = dir.join("edge.toml");
    // Present but empty files: the config is valid, the certificates are not.
    std::fs::write(&path, good.replace(", \"x\"", "")).unwrap();
    let out = meshedge()
        .args(["edge", "--check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(": no certificate in the file"), "{err}");
    // Real certificate files: ok.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["edge.test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    for (c, k) in [("edge.crt", "edge.key"), ("svid.pem", "svid.key")] {
        std::fs::write(dir.join(c), cert.pem()).unwrap();
        std::fs::write(dir.join(k), key.serialize_pem()).unwrap();
    }
    std::fs::write(dir.join("bundle.pem"), cert.pem()).unwrap();
    let out = meshedge()
        .args(["edge", "--check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 clusters, 1 routes)"));

    std::fs::write(&path, good.replace("svid.key", "missing.key")).unwrap();
    let out = meshedge()
        .args(["edge", "--check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"clusters.payments.endpoints[1]: invalid address "x""#),
        "{err}"
    );
    assert!(err.contains("identity.key: file not found"), "{err}");

    std::fs::write(&path, good.replace("[[routes]]", "[[routes]]\ntimeout = 5")).unwrap();
    let out = meshedge()
        .args(["edge", "--check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("routes[0].timeout"), "{err}");
}
