//! SVID issuance benchmark (not a test). Run through `scripts/bench-ca.sh`.
//!
//! `ca_bench core`: the signing core alone (CSR check + sign) against ring's raw ECDSA P-256
//! sign + verify, in the same process and run.
//! `ca_bench api --ca-addr A[,B,...] --bundle F --token T --spiffe-id ID`: enrolls once, then drives
//! `POST /v1/workload` from `--clients` keep-alive mTLS connections with CSRs prepared
//! beforehand, for `--total` issuances or `--seconds`, whichever ends first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshedge_ca::client::CaClient;
use meshedge_ca::csr::ValidatedCsr;
use meshedge_ca::keyset::Keyset;
use meshedge_ca::policy::IssuancePolicy;
use meshedge_ca::tls::certs_from_pem;
use meshedge_ca::{Authority, TrustDomain};
use rcgen::{CertificateParams, KeyPair, SanType};
use ring::signature::{
    EcdsaKeyPair, KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
    ECDSA_P256_SHA256_ASN1_SIGNING,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn csr_pem(id: &str) -> String {
    let key = KeyPair::generate().expect("p256 key");
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(id.try_into().expect("ia5"))];
    p.serialize_request(&key).expect("csr").pem().expect("pem")
}

fn core(n: usize) {
    let dir = std::env::temp_dir().join(format!("meshedge-ca-bench-{}", std::process::id()));
    let td = TrustDomain::parse("bench.test").expect("td");
    let ca = Authority::new(
        Keyset::init(
            &dir,
            &td,
            IssuancePolicy::default(),
            OffsetDateTime::now_utc(),
        )
        .expect("init"),
    );
    let pems: Vec<String> = (0..256)
        .map(|_| csr_pem("spiffe://bench.test/svc/load"))
        .collect();
    let now = OffsetDateTime::now_utc();

    let t = Instant::now();
    for i in 0..n {
        let csr = ValidatedCsr::parse(pems[i % pems.len()].as_bytes(), &td).expect("valid csr");
        std::hint::black_box(ca.sign(&csr, &[], None, now).expect("sign"));
    }
    let full = n as f64 / t.elapsed().as_secs_f64();

    let parsed: Vec<ValidatedCsr> = pems
        .iter()
        .map(|p| ValidatedCsr::parse(p.as_bytes(), &td).expect("csr"))
        .collect();
    let t = Instant::now();
    for i in 0..n {
        std::hint::black_box(
            ca.sign(&parsed[i % parsed.len()], &[], None, now)
                .expect("sign"),
        );
    }
    let sign_only = n as f64 / t.elapsed().as_secs_f64();

    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("key");
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .expect("key");
    let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, kp.public_key().as_ref().to_vec());
    let msg = [7u8; 300];
    let t = Instant::now();
    for _ in 0..n {
        let sig = kp.sign(&rng, &msg).expect("sign");
        public.verify(&msg, sig.as_ref()).expect("verify");
    }
    let raw = n as f64 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    println!("core: {n} iterations, one thread");
    println!("  CSR check + sign:            {full:>9.0} SVIDs/s");
    println!("  sign only (CSR pre-checked): {sign_only:>9.0} SVIDs/s");
    println!("  ring P-256 sign+verify:      {raw:>9.0} ops/s");
    println!("  ratio (check+sign / raw):    {:>9.2}", full / raw);
}

async fn api(args: &[String]) {
    // Several replicas: `--ca-addr A,B,C`; client c starts at replica c mod n.
    let addrs: Vec<String> = arg(args, "--ca-addr")
        .expect("--ca-addr")
        .split(',')
        .map(str::to_owned)
        .collect();
    let bundle_pem =
        std::fs::read_to_string(arg(args, "--bundle").expect("--bundle")).expect("bundle file");
    let token = arg(args, "--token").expect("--token");
    let node = arg(args, "--node").unwrap_or_else(|| "bench".into());
    let id = arg(args, "--spiffe-id").expect("--spiffe-id");
    let clients: usize = arg(args, "--clients").map_or(32, |s| s.parse().expect("number"));
    let total: u64 = arg(args, "--total").map_or(200_000, |s| s.parse().expect("number"));
    let seconds: u64 = arg(args, "--seconds").map_or(20, |s| s.parse().expect("number"));
    let bundle = certs_from_pem(&bundle_pem).expect("bundle");

    let node_key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(
        format!("spiffe://{}/node/{node}", id.split('/').nth(2).expect("td"))
            .as_str()
            .try_into()
            .expect("ia5"),
    )];
    let node_csr = p
        .serialize_request(&node_key)
        .expect("csr")
        .pem()
        .expect("pem");
    let anon = CaClient::new(addrs.clone(), &bundle, None).expect("client");
    let node_svid = anon.enroll(&token, &node_csr, None).await.expect("enroll");
    let chain = certs_from_pem(&node_svid.chain_pem).expect("chain");

    eprintln!("preparing {} CSRs...", 1024);
    let pems: Arc<Vec<String>> = Arc::new((0..1024).map(|_| csr_pem(&id)).collect());
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let identity = (
            chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(node_key.serialize_der())),
        );
        let mut rotated = addrs.clone();
        rotated.rotate_left(c % addrs.len());
        let client = CaClient::new(rotated, &bundle, Some(identity)).expect("client");
        let (pems, done, failed) = (pems.clone(), done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            let mut lat = Vec::new();
            while Instant::now() < deadline && done.load(Ordering::Relaxed) < total {
                let t = Instant::now();
                match client.workload(&pems[i % pems.len()], None).await {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        lat.push(t.elapsed());
                    }
                    Err(e) => {
                        if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("request failed: {e}");
                        }
                    }
                }
                i += clients;
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let n = done.load(Ordering::Relaxed);
    println!(
        "api: {clients} keep-alive mTLS clients, {n} SVIDs in {secs:.1}s, {} failed",
        failed.load(Ordering::Relaxed)
    );
    println!("  throughput: {:.0} SVIDs/s", n as f64 / secs);
    println!("  latency ms: p50 {:.2}  p99 {:.2}", pct(0.5), pct(0.99));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("core") => core(arg(&args, "-n").map_or(20_000, |s| s.parse().expect("number"))),
        Some("api") => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(api(&args)),
        _ => eprintln!("usage: ca_bench core [-n N] | ca_bench api --ca-addr A --bundle F --token T --spiffe-id ID [--clients C] [--total N] [--seconds S]"),
    }
}
