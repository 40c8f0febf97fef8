//! `meshedge ca` as real processes: enrollment, renewal, entry-bound issuance, denials,
//! restarts, kill -9 during issuance, root rotation. Chains are checked with `openssl verify`
//! and field by field against the X509-SVID rules.

mod casupport;
mod support;

use std::process::Command;
use std::time::Duration;

use casupport::{csr, leaf_of, status, Node};
use meshedge_ca::client::CaClient;
use meshedge_ca::svid::check_x509_svid;
use meshedge_ca::tls::certs_from_pem;
use support::*;

struct Ca {
    dir: TempDir,
    guard: ChildGuard,
    addr: String,
}

impl Ca {
    fn init(tag: &str) -> TempDir {
        let dir = TempDir::new(tag);
        run_ok(
            meshedge()
                .args(["ca", "init", "--trust-domain", "example.org", "--state-dir"])
                .arg(dir.join("ca")),
        );
        dir
    }

    fn start(dir: TempDir) -> Self {
        let mut cmd = meshedge();
        cmd.args(["ca", "serve", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(dir.join("ca"));
        let (guard, addr) = spawn_until(cmd, "ca listening on", dir.path());
        Self { dir, guard, addr }
    }

    fn restart(self) -> Self {
        let Ca { dir, mut guard, .. } = self;
        guard.kill9();
        Ca::start(dir)
    }

    fn state(&self) -> std::path::PathBuf {
        self.dir.join("ca")
    }

    fn cli(&self, args: &[&str]) -> String {
        stdout_of(meshedge().args(args).arg("--state-dir").arg(self.state()))
    }

    fn bundle(&self) -> String {
        self.cli(&["ca", "bundle"])
    }

    fn anonymous(&self) -> CaClient {
        CaClient::new(
            vec![self.addr.clone()],
            &certs_from_pem(&self.bundle()).unwrap(),
            None,
        )
        .unwrap()
    }
}

/// Enrolls `node` with a fresh join token.
async fn enrolled(ca: &Ca, node: &str) -> Node {
    let token = ca.cli(&["ca", "token", "create", "--node", node]);
    Node::enroll(&ca.anonymous(), &token, node)
        .await
        .expect("enrollment succeeds")
}

trait NodeOn {
    fn client_for(&self, addr: &str, bundle_pem: &str) -> CaClient;
}

impl NodeOn for Node {
    fn client_for(&self, addr: &str, bundle_pem: &str) -> CaClient {
        self.client(&[addr.to_owned()], bundle_pem)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn enroll_renew_and_entry_bound_issuance() {
    let ca = Ca::start(Ca::init("flow"));
    let n1 = enrolled(&ca, "n1").await;
    let bundle = ca.bundle();
    let node = n1.client_for(&ca.addr, &bundle);
    let node_chain = n1.chain_pem.clone();
    openssl_verify(ca.dir.path(), &bundle, &node_chain).expect("openssl accepts the node SVID");
    let info = check_x509_svid(&leaf_of(&node_chain)).unwrap();
    assert_eq!(info.spiffe_id.as_str(), "spiffe://example.org/node/n1");
    assert_eq!(
        (info.not_after - info.not_before).whole_seconds(),
        3600 + 30
    );

    // Renewal over mTLS with the node SVID.
    let (_, renew_csr) = csr("spiffe://example.org/node/n1");
    let renewed = node.renew(&renew_csr, Some(600)).await.unwrap();
    openssl_verify(ca.dir.path(), &bundle, &renewed.chain_pem).unwrap();
    assert_ne!(renewed.serial, info.serial_hex);

    // A node may not renew another node's ID.
    let (_, other) = csr("spiffe://example.org/node/n2");
    assert_eq!(
        status(node.renew(&other, None).await.unwrap_err()),
        (403, "id_mismatch".into())
    );

    // Workload SVIDs only for entries whose parent is this node; DNS SANs from the entry.
    ca.cli(&[
        "ca",
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/svc/web",
        "--parent",
        "n1",
        "--selector",
        "unix:uid:1000",
        "--dns",
        "web.example.org",
    ]);
    ca.cli(&[
        "ca",
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/svc/db",
        "--parent",
        "n2",
        "--selector",
        "unix:uid:1000",
    ]);
    let (_, web) = csr("spiffe://example.org/svc/web");
    let svid = node.workload(&web, None).await.unwrap();
    openssl_verify(ca.dir.path(), &bundle, &svid.chain_pem).unwrap();
    let info = check_x509_svid(&leaf_of(&svid.chain_pem)).unwrap();
    assert_eq!(info.dns_names, vec!["web.example.org".to_string()]);
    let (_, db) = csr("spiffe://example.org/svc/db");
    assert_eq!(
        status(node.workload(&db, None).await.unwrap_err()),
        (403, "not_registered".into())
    );

    // Keys from openssl: P-384, Ed25519, RSA-2048 accepted; RSA-1024 refused with the reason.
    for spec in [
        &["ec", "-pkeyopt", "ec_paramgen_curve:P-384"][..],
        &["ed25519"],
        &["rsa:2048"],
    ] {
        let (_, pem) = openssl_csr(ca.dir.path(), "spiffe://example.org/svc/web", spec);
        let svid = node
            .workload(&pem, None)
            .await
            .unwrap_or_else(|e| panic!("{spec:?}: {e}"));
        openssl_verify(ca.dir.path(), &bundle, &svid.chain_pem).unwrap();
        check_x509_svid(&leaf_of(&svid.chain_pem)).unwrap();
    }
    let (_, weak) = openssl_csr(ca.dir.path(), "spiffe://example.org/svc/web", &["rsa:1024"]);
    let err = node.workload(&weak, None).await.unwrap_err();
    assert_eq!(status(err).0, 400);

    // The audit log has one line per issuance and per denial, each naming the ID.
    let audit = std::fs::read_to_string(ca.state().join("audit.log")).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let issued = lines.iter().filter(|l| l["event"] == "issued").count();
    let denied = lines.iter().filter(|l| l["event"] == "denied").count();
    assert_eq!((issued, denied), (6, 3), "{audit}");
    assert!(lines.iter().any(|l| l["reason"]
        .as_str()
        .is_some_and(|r| r.contains("spiffe://example.org/svc/db"))));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_and_changes_nothing() {
    let ca = Ca::start(Ca::init("bad"));
    let anon = ca.anonymous();
    let token = ca.cli(&["ca", "token", "create", "--node", "n1"]);

    // Malformed CSR -> 400; CSR for another node -> 403; neither consumes the token.
    let err = anon
        .enroll(
            &token,
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(status(err), (400, "bad_csr".into()));
    let (_, other) = csr("spiffe://example.org/node/n2");
    assert_eq!(
        status(anon.enroll(&token, &other, None).await.unwrap_err()),
        (403, "id_mismatch".into())
    );
    let (_, foreign) = csr("spiffe://evil.org/node/n1");
    assert_eq!(
        status(anon.enroll(&token, &foreign, None).await.unwrap_err()).0,
        400
    );
    let (_, ok) = csr("spiffe://example.org/node/n1");
    anon.enroll(&token, &ok, None)
        .await
        .expect("token still valid after refusals");

    // Used, unknown and expired tokens -> 401.
    assert_eq!(
        status(anon.enroll(&token, &ok, None).await.unwrap_err()),
        (401, "token_used".into())
    );
    assert_eq!(
        status(anon.enroll("nope", &ok, None).await.unwrap_err()),
        (401, "token_unknown".into())
    );
    let expired = ca.cli(&["ca", "token", "create", "--node", "n1", "--ttl", "0s"]);
    assert_eq!(
        status(anon.enroll(&expired, &ok, None).await.unwrap_err()),
        (401, "token_expired".into())
    );

    // Renewal without a client certificate -> 401.
    assert_eq!(
        status(anon.renew(&ok, None).await.unwrap_err()),
        (401, "no_client_cert".into())
    );

    // Body over the limit -> 413, via curl.
    let big = ca.dir.join("big.json");
    std::fs::write(&big, vec![b'x'; 300 * 1024]).unwrap();
    let bundle_file = ca.dir.join("bundle.pem");
    std::fs::write(&bundle_file, ca.bundle()).unwrap();
    let code = stdout_of(
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&bundle_file)
            .arg("--data-binary")
            .arg(format!("@{}", big.display()))
            .arg(format!("https://{}/v1/enroll", ca.addr)),
    );
    assert_eq!(code, "413");

    // A client certificate that does not chain to the bundle: handshake refused.
    let rogue = ca.dir.join("rogue");
    std::fs::create_dir_all(&rogue).unwrap();
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=rogue",
                "-addext",
                "subjectAltName=URI:spiffe://example.org/node/n1",
                "-keyout",
            ])
            .arg(rogue.join("k.pem"))
            .arg("-out")
            .arg(rogue.join("c.pem")),
    );
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&bundle_file)
        .arg("--cert")
        .arg(rogue.join("c.pem"))
        .arg("--key")
        .arg(rogue.join("k.pem"))
        .arg(format!("https://{}/v1/entries", ca.addr))
        .output()
        .unwrap();
    assert!(!out.status.success(), "rogue client cert was accepted");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "000");

    // Banned node: renewal refused until unbanned.
    let node = enrolled(&ca, "n3").await.client_for(&ca.addr, &ca.bundle());
    let (_, n3) = csr("spiffe://example.org/node/n3");
    ca.cli(&["ca", "ban", "--node", "n3", "--reason", "lost laptop"]);
    let (code, reason) = status(node.renew(&n3, None).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (403, "banned"));
    ca.cli(&["ca", "unban", "--node", "n3"]);
    node.renew(&n3, None).await.unwrap();

    // Still serving, and the metrics count the denials by reason.
    let metrics = stdout_of(
        Command::new("curl")
            .args(["-s", "--cacert"])
            .arg(&bundle_file)
            .arg(format!("https://{}/metrics", ca.addr)),
    );
    assert!(
        metrics
            .contains("meshedge_ca_requests_denied_total{op=\"enroll\",reason=\"token_used\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshedge_ca_tls_handshake_failures_total"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_join_token_raced_by_many_clients_is_redeemed_once() {
    let ca = Ca::start(Ca::init("race"));
    let token = ca.cli(&["ca", "token", "create", "--node", "n1"]);
    let bundle = certs_from_pem(&ca.bundle()).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = CaClient::new(vec![ca.addr.clone()], &bundle, None).unwrap();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let (_, pem) = csr("spiffe://example.org/node/n1");
            client.enroll(&token, &pem, None).await.is_ok()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn state_survives_restart_and_kill_9_during_issuance() {
    let ca = Ca::start(Ca::init("restart"));
    let node = enrolled(&ca, "n1").await;
    ca.cli(&[
        "ca",
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/svc/web",
        "--parent",
        "n1",
        "--selector",
        "unix:uid:1000",
    ]);
    let used = ca.cli(&["ca", "token", "create", "--node", "n9"]);
    let (_, n9) = csr("spiffe://example.org/node/n9");
    ca.anonymous().enroll(&used, &n9, None).await.unwrap();
    let bundle_before = ca.bundle();

    // A burst of issuance from 4 keep-alive clients, killed (-9) in the middle.
    let issued = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut burst = Vec::new();
    for _ in 0..4 {
        let client = node.client_for(&ca.addr, &bundle_before);
        let issued = issued.clone();
        burst.push(tokio::spawn(async move {
            let (_, web) = csr("spiffe://example.org/svc/web");
            for _ in 0..20_000 {
                if client.workload(&web, None).await.is_err() {
                    return;
                }
                issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    poll(Duration::from_secs(60), || {
        (issued.load(std::sync::atomic::Ordering::SeqCst) >= 200).then_some(())
    })
    .expect("issuance burst makes progress");
    let ca = ca.restart();
    for b in burst {
        b.await.unwrap();
    }
    let handed_out = issued.load(std::sync::atomic::Ordering::SeqCst);

    // Same roots; spent tokens stay spent; the node's old SVID renews; entries still apply.
    assert_eq!(ca.bundle(), bundle_before);
    let anon = ca.anonymous();
    assert_eq!(
        status(anon.enroll(&used, &n9, None).await.unwrap_err()).1,
        "token_used"
    );
    let client = node.client_for(&ca.addr, &ca.bundle());
    let (_, renew) = csr("spiffe://example.org/node/n1");
    client
        .renew(&renew, None)
        .await
        .expect("renewal after restart");
    let (_, web) = csr("spiffe://example.org/svc/web");
    client
        .workload(&web, None)
        .await
        .expect("issuance after restart");

    // Every SVID handed out before the kill has its audit line; no line is torn.
    let audit = std::fs::read_to_string(ca.state().join("audit.log")).unwrap();
    let mut logged = 0;
    for line in audit.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("torn audit line {line:?}: {e}"));
        if v["event"] == "issued" && v["op"] == "workload" {
            logged += 1;
        }
    }
    assert!(
        logged > handed_out,
        "{logged} workload issuances logged, {handed_out} handed out before the kill"
    );
}

fn wait_for_bundle_roots(ca: &Ca, n: usize) {
    poll(Duration::from_secs(10), || {
        let out = Command::new("curl")
            .args(["-s", "--cacert"])
            .arg(write_bundle(ca))
            .arg(format!("https://{}/v1/bundle", ca.addr))
            .output()
            .ok()?;
        (pem::parse_many(&out.stdout).ok()?.len() == n).then_some(())
    })
    .unwrap_or_else(|| panic!("the API never served {n} roots"));
}

fn write_bundle(ca: &Ca) -> std::path::PathBuf {
    let p = ca.dir.join("current-bundle.pem");
    std::fs::write(&p, ca.bundle()).unwrap();
    p
}

fn root_only(bundle_pem: &str, index: usize) -> String {
    pem::encode(&pem::parse_many(bundle_pem).unwrap()[index])
}

#[tokio::test(flavor = "multi_thread")]
async fn root_rotation_overlaps_old_and_new() {
    let ca = Ca::start(Ca::init("roots"));
    let node = enrolled(&ca, "n1").await.client_for(&ca.addr, &ca.bundle());
    ca.cli(&[
        "ca",
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/svc/web",
        "--parent",
        "n1",
        "--selector",
        "unix:uid:1000",
    ]);
    let (_, web) = csr("spiffe://example.org/svc/web");
    let old = node.workload(&web, None).await.unwrap();

    let added = ca.cli(&["ca", "root", "add"]);
    assert!(added.contains("added root g3"), "{added}");
    wait_for_bundle_roots(&ca, 2);
    ca.cli(&["ca", "root", "activate", "--generation", "3"]);
    let bundle = ca.bundle();
    let new_root = root_only(&bundle, 1);
    // The server picks up the new intermediate; poll until an SVID chains to the new root.
    let new = poll(Duration::from_secs(10), || {
        let svid = futures_block(node.workload(&web, None)).ok()?;
        openssl_verify(ca.dir.path(), &new_root, &svid.chain_pem)
            .ok()
            .map(|_| svid)
    })
    .expect("SVIDs chain to the new root after activation");
    // During the overlap the full bundle accepts both sides; the new root alone only the new.
    openssl_verify(ca.dir.path(), &bundle, &old.chain_pem)
        .expect("old SVID verifies against the overlap bundle");
    openssl_verify(ca.dir.path(), &bundle, &new.chain_pem)
        .expect("new SVID verifies against the overlap bundle");
    assert!(openssl_verify(ca.dir.path(), &new_root, &old.chain_pem).is_err());
    // Retire the old root: the bundle shrinks to the new one.
    ca.cli(&["ca", "root", "retire", "--generation", "1"]);
    wait_for_bundle_roots(&ca, 1);
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

fn curl_post(ca: &Ca, path: &str, body: &str) -> (String, String) {
    let bundle = write_bundle(ca);
    let file = ca.dir.join(&format!("body-{}.json", rand::random::<u32>()));
    std::fs::write(&file, body).unwrap();
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--cacert"])
        .arg(bundle)
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("https://{}{path}", ca.addr))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_reattests_with_its_attestation_key_but_never_by_replay() {
    use base64::Engine;
    use rcgen::{PublicKeyData, SigningKey};
    let ca = Ca::start(Ca::init("reattest"));
    let anon = ca.anonymous();
    let attest = rcgen::KeyPair::generate().unwrap();
    let token = ca.cli(&["ca", "token", "create", "--node", "n1"]);
    let (_, pem) = csr("spiffe://example.org/node/n1");
    anon.enroll_with_attestation(&token, &pem, Some(60), Some(attest.der_bytes()))
        .await
        .unwrap();

    // Without any client certificate, the attestation key gets a fresh node SVID.
    let (_, pem) = csr("spiffe://example.org/node/n1");
    let svid = anon
        .reattest("n1", &pem, &attest)
        .await
        .expect("re-attestation");
    openssl_verify(ca.dir.path(), &ca.bundle(), &svid.chain_pem).unwrap();
    assert_eq!(svid.spiffe_id, "spiffe://example.org/node/n1");

    // Another key, another node's ID, or a replayed request are refused.
    let thief = rcgen::KeyPair::generate().unwrap();
    assert_eq!(
        status(anon.reattest("n1", &pem, &thief).await.unwrap_err()).1,
        "reattest_signature"
    );
    let (_, other) = csr("spiffe://example.org/node/n2");
    assert_eq!(
        status(anon.reattest("n1", &other, &attest).await.unwrap_err()).1,
        "id_mismatch"
    );
    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
    let nonce = "00112233445566778899aabbccddeeff";
    let sig = attest
        .sign(&meshedge_ca::api::reattest_message("n1", ts, nonce, &pem))
        .unwrap();
    let body = serde_json::json!({
        "node": "n1", "csr": pem, "timestamp": ts, "nonce": nonce,
        "signature": base64::engine::general_purpose::STANDARD.encode(sig),
    })
    .to_string();
    assert_eq!(curl_post(&ca, "/v1/reattest", &body).0, "200");
    let (code, answer) = curl_post(&ca, "/v1/reattest", &body);
    assert_eq!(code, "401");
    assert!(answer.contains("reattest_replay"), "{answer}");
    let old = serde_json::json!({
        "node": "n1", "csr": pem, "timestamp": ts - 3600, "nonce": "ffeeddccbbaa99887766554433221100",
        "signature": base64::engine::general_purpose::STANDARD.encode(attest.sign(&meshedge_ca::api::reattest_message("n1", ts - 3600, "ffeeddccbbaa99887766554433221100", &pem)).unwrap()),
    })
    .to_string();
    assert!(curl_post(&ca, "/v1/reattest", &old)
        .1
        .contains("reattest_stale"));

    // A ban stops re-attestation; a node enrolled without a key cannot re-attest.
    ca.cli(&["ca", "ban", "--node", "n1", "--reason", "key stolen"]);
    assert_eq!(
        status(anon.reattest("n1", &pem, &attest).await.unwrap_err()).1,
        "banned"
    );
    enrolled(&ca, "n3").await;
    let (_, n3) = csr("spiffe://example.org/node/n3");
    assert_eq!(
        status(anon.reattest("n3", &n3, &attest).await.unwrap_err()).1,
        "no_attestation_key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_intermediate_rotates_before_it_expires_and_caps_svid_lifetimes() {
    let dir = TempDir::new("rotate-inter");
    run_ok(
        meshedge()
            .args([
                "ca",
                "init",
                "--trust-domain",
                "example.org",
                "--min-ttl",
                "1s",
                "--default-ttl",
                "3s",
                "--max-ttl",
                "3s",
                "--intermediate-ttl",
                "8s",
                "--root-ttl",
                "1h",
                "--state-dir",
            ])
            .arg(dir.join("ca")),
    );
    let ca = Ca::start(dir);
    let node = enrolled(&ca, "n1").await;
    let first = leaf_of(&node.chain_pem);
    let first_not_after = check_x509_svid(&first).unwrap().not_after;
    let listing = ca.cli(&["ca", "root", "list"]);
    assert!(listing.contains("intermediate g2"), "{listing}");
    // Rotation is due once less than 2 x max_ttl (6 s) remains of the 8 s intermediate.
    let rotated = poll(Duration::from_secs(20), || {
        let l = ca.cli(&["ca", "root", "list"]);
        (!l.contains("intermediate g2")).then_some(l)
    })
    .expect("the intermediate was rotated");
    assert!(rotated.contains("intermediate g3"), "{rotated}");
    // New SVIDs come from the new intermediate and verify with openssl.
    let fresh = poll(Duration::from_secs(10), || {
        let node_name = format!("m{}", rand::random::<u32>());
        let token = ca.cli(&["ca", "token", "create", "--node", &node_name]);
        let n = futures_block(Node::enroll(&ca.anonymous(), &token, &node_name)).ok()?;
        (n.chain_pem != node.chain_pem && !n.chain_pem.contains(&pem_block(&node.chain_pem, 1)))
            .then_some(n)
    })
    .expect("an SVID signed by the new intermediate");
    openssl_verify(ca.dir.path(), &ca.bundle(), &fresh.chain_pem).unwrap();
    // SVIDs never outlive their intermediate.
    let inter = certs_from_pem(&fresh.chain_pem).unwrap()[1].to_vec();
    let inter_not_after = meshedge_ca::svid::not_after_of(&inter).unwrap();
    assert!(
        check_x509_svid(&leaf_of(&fresh.chain_pem))
            .unwrap()
            .not_after
            <= inter_not_after
    );
    assert!(first_not_after <= time::OffsetDateTime::now_utc() + time::Duration::seconds(10));
}

fn pem_block(chain_pem: &str, i: usize) -> String {
    pem::encode(&pem::parse_many(chain_pem).unwrap()[i])
}
