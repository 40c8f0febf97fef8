use super::*;
use rcgen::{CertificateParams, KeyPair, SanType};

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn csr_with(alg: &'static SignatureAlgorithm, sans: Vec<SanType>) -> Vec<u8> {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params.serialize_request(&key).unwrap().der().to_vec()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

#[test]
fn accepts_each_allowed_ec_and_ed_key() {
    for (alg, kind) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, KeyKind::EcdsaP256),
        (&rcgen::PKCS_ECDSA_P384_SHA384, KeyKind::EcdsaP384),
        (&rcgen::PKCS_ED25519, KeyKind::Ed25519),
    ] {
        let der = csr_with(alg, vec![uri("spiffe://example.org/svc/a")]);
        let csr = ValidatedCsr::parse_der(&der, &td()).unwrap();
        assert_eq!(csr.key_kind, kind);
        assert_eq!(csr.spiffe_id.as_str(), "spiffe://example.org/svc/a");
    }
}

#[test]
fn accepts_pem() {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![uri("spiffe://example.org/svc/a")];
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    assert!(ValidatedCsr::parse(pem.as_bytes(), &td()).is_ok());
}

#[test]
fn rejects_wrong_san_counts_and_ids() {
    let none = csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, vec![]);
    assert_eq!(
        ValidatedCsr::parse_der(&none, &td()).unwrap_err(),
        CsrError::UriSanCount { count: 0 }
    );
    let two = csr_with(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        vec![uri("spiffe://example.org/a"), uri("spiffe://example.org/b")],
    );
    assert_eq!(
        ValidatedCsr::parse_der(&two, &td()).unwrap_err(),
        CsrError::UriSanCount { count: 2 }
    );
    let foreign = csr_with(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        vec![uri("spiffe://evil.org/a")],
    );
    assert!(matches!(
        ValidatedCsr::parse_der(&foreign, &td()).unwrap_err(),
        CsrError::ForeignTrustDomain { .. }
    ));
    let not_spiffe = csr_with(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        vec![uri("https://example.org/a")],
    );
    assert!(matches!(
        ValidatedCsr::parse_der(&not_spiffe, &td()).unwrap_err(),
        CsrError::BadSpiffeId(_)
    ));
}

#[test]
fn rejects_tampered_signature() {
    let mut der = csr_with(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        vec![uri("spiffe://example.org/a")],
    );
    // The URI's last byte sits inside the signed CertificationRequestInfo.
    let pos = der.windows(1).rposition(|w| w == b"a").unwrap();
    der[pos] = b'b';
    assert_eq!(
        ValidatedCsr::parse_der(&der, &td()).unwrap_err(),
        CsrError::BadSignature
    );
}

#[test]
fn rejects_garbage_and_oversize_without_panicking() {
    for input in [
        &b""[..],
        b"\x30\x03\x02\x01",
        b"-----BEGIN X-----\nAA==\n-----END X-----\n",
    ] {
        assert!(matches!(
            ValidatedCsr::parse(input, &td()).unwrap_err(),
            CsrError::Malformed { .. }
        ));
    }
    let big = vec![0x30u8; MAX_CSR_DER_LEN + 1];
    assert!(matches!(
        ValidatedCsr::parse_der(&big, &td()).unwrap_err(),
        CsrError::TooLarge { .. }
    ));
}
