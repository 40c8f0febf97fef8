use super::*;
use crate::keyset;
use crate::policy::IssuancePolicy;
use crate::spiffe::TrustDomain;
use crate::svid::check_x509_svid;
use rcgen::{CertificateParams, KeyPair, SanType};

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "meshedge-auth-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn csr(id: &str) -> ValidatedCsr {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    let der = p.serialize_request(&key).unwrap().der().to_vec();
    ValidatedCsr::parse_der(&der, &TrustDomain::parse("example.org").unwrap()).unwrap()
}

fn authority(dir: &std::path::Path) -> Authority {
    let td = TrustDomain::parse("example.org").unwrap();
    Authority::new(
        Keyset::init(
            dir,
            &td,
            IssuancePolicy::default(),
            OffsetDateTime::now_utc(),
        )
        .unwrap(),
    )
}

#[test]
fn issued_svid_follows_the_x509_svid_rules() {
    let dir = temp_dir("rules");
    let ca = authority(&dir);
    let now = OffsetDateTime::now_utc();
    let svid = ca
        .sign(
            &csr("spiffe://example.org/svc/a"),
            &["a.svc".into()],
            None,
            now,
        )
        .unwrap();
    let info = check_x509_svid(&svid.leaf).unwrap();
    assert_eq!(info.spiffe_id.as_str(), "spiffe://example.org/svc/a");
    assert_eq!(info.dns_names, vec!["a.svc".to_string()]);
    assert_eq!(info.serial_hex, svid.serial_hex.trim_start_matches("00"));
    let lifetime = info.not_after - info.not_before;
    assert_eq!(lifetime.whole_seconds(), 3600 + 30);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn serials_are_distinct_and_128_bit() {
    let dir = temp_dir("serial");
    let ca = authority(&dir);
    let now = OffsetDateTime::now_utc();
    let c = csr("spiffe://example.org/svc/a");
    let serials: std::collections::HashSet<String> = (0..200)
        .map(|_| ca.sign(&c, &[], None, now).unwrap().serial_hex)
        .collect();
    assert_eq!(serials.len(), 200);
    assert!(serials.iter().all(|s| s.len() == 32));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn chain_verifies_with_webpki_through_the_intermediate() {
    let dir = temp_dir("chain");
    let ca = authority(&dir);
    let now = OffsetDateTime::now_utc();
    let svid = ca
        .sign(&csr("spiffe://example.org/svc/a"), &[], None, now)
        .unwrap();
    let roots: Vec<_> = ca.keyset().roots.iter().map(|r| r.der.clone()).collect();
    let inter = ca.keyset().intermediate.der.clone();
    crate::tls::verify_chain(&roots, &svid.leaf, &[inter]).expect("chain verifies");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn root_rotation_keeps_both_roots_in_the_bundle() {
    let dir = temp_dir("rotate");
    let old = authority(&dir);
    let now = OffsetDateTime::now_utc();
    let before = old
        .sign(&csr("spiffe://example.org/svc/a"), &[], None, now)
        .unwrap();
    let old_inter = old.keyset().intermediate.der.clone();
    let g = keyset::add_root(&dir, now).unwrap();
    keyset::activate_root(&dir, g, now).unwrap();
    let new = Authority::new(Keyset::load(&dir).unwrap());
    assert_eq!(new.keyset().roots.len(), 2);
    let after = new
        .sign(&csr("spiffe://example.org/svc/a"), &[], None, now)
        .unwrap();
    let bundle: Vec<_> = new.keyset().roots.iter().map(|r| r.der.clone()).collect();
    let new_inter = new.keyset().intermediate.der.clone();
    crate::tls::verify_chain(&bundle, &before.leaf, std::slice::from_ref(&old_inter)).unwrap();
    crate::tls::verify_chain(&bundle, &after.leaf, std::slice::from_ref(&new_inter)).unwrap();
    // The new SVID chains to the new root only.
    let new_root_only = vec![new.keyset().active_root().der.clone()];
    crate::tls::verify_chain(&new_root_only, &after.leaf, &[new_inter]).unwrap();
    assert!(crate::tls::verify_chain(&new_root_only, &before.leaf, &[old_inter]).is_err());
    // Retiring the active root is refused; the old one can go.
    assert!(keyset::retire_root(&dir, g).is_err());
    keyset::retire_root(&dir, 1).unwrap();
    assert_eq!(Keyset::load(&dir).unwrap().roots.len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_files_are_named() {
    let dir = temp_dir("corrupt");
    let ca = authority(&dir);
    let g = ca.keyset().intermediate.generation;
    let key = dir.join(format!("keys/intermediate-{g}.key"));
    std::fs::write(&key, "garbage").unwrap();
    let err = Keyset::load(&dir)
        .err()
        .expect("corrupt key refused")
        .to_string();
    assert!(err.contains(&key.display().to_string()), "{err}");
    std::fs::write(dir.join("ca.json"), "{").unwrap();
    let err = Keyset::load(&dir).err().unwrap().to_string();
    assert!(err.contains("ca.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
