//! Certificate templates: the root, the intermediate and X509-SVID leaves.
//!
//! The root is not name-constrained: RFC 5280 URI name constraints are the only form that
//! could pin a SPIFFE trust domain, and rustls-webpki fails closed on URI constraints (it
//! would reject every SVID). Trust-domain membership is enforced at issuance instead.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::spiffe::{SpiffeId, TrustDomain};

/// How far back `not_before` is set, to absorb clock skew between hosts.
pub const BACKDATE: Duration = Duration::seconds(30);

/// A fresh random 128-bit serial number.
pub fn random_serial() -> SerialNumber {
    let bytes: [u8; 16] = rand::random();
    SerialNumber::from_slice(&bytes)
}

fn ca_name(td: &TrustDomain, role: &str, generation: u64) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "meshedge");
    dn.push(
        DnType::CommonName,
        format!("meshedge {role} {td} g{generation}"),
    );
    dn
}

fn trust_domain_san(td: &TrustDomain) -> SanType {
    SanType::URI(
        td.id_string()
            .try_into()
            .expect("a validated trust domain is an IA5 string"),
    )
}

/// Parameters of a root CA: path length 1 (one intermediate below it), keyCertSign + cRLSign.
pub fn root_params(
    td: &TrustDomain,
    generation: u64,
    now: OffsetDateTime,
    lifetime: Duration,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = ca_name(td, "root", generation);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.subject_alt_names = vec![trust_domain_san(td)];
    p.serial_number = Some(random_serial());
    p.not_before = now - BACKDATE;
    p.not_after = now + lifetime;
    p
}

/// Parameters of the signing intermediate: path length 0, signs leaves only.
pub fn intermediate_params(
    td: &TrustDomain,
    generation: u64,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = ca_name(td, "intermediate", generation);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.subject_alt_names = vec![trust_domain_san(td)];
    p.serial_number = Some(random_serial());
    p.use_authority_key_identifier_extension = true;
    p.not_before = now - BACKDATE;
    p.not_after = not_after;
    p
}

/// Parameters of an X509-SVID leaf: one URI SAN, not a CA, digitalSignature,
/// serverAuth + clientAuth, random serial, AKI + SKI.
pub fn svid_params(
    id: &SpiffeId,
    dns_names: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "meshedge");
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let mut sans = vec![SanType::URI(id.as_str().try_into()?)];
    for name in dns_names {
        sans.push(SanType::DnsName(name.as_str().try_into()?));
    }
    p.subject_alt_names = sans;
    p.serial_number = Some(random_serial());
    p.use_authority_key_identifier_extension = true;
    p.not_before = not_before;
    p.not_after = not_after;
    Ok(p)
}

/// A new ECDSA P-256 key for a CA certificate.
pub fn new_ca_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ring generates P-256 keys")
}
