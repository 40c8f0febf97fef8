//! Reading X509-SVIDs: the SPIFFE ID of a peer certificate and the X509-SVID rules.

use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::X509Certificate;

use crate::spiffe::SpiffeId;

/// A leaf certificate that breaks an X509-SVID rule, or cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    /// Not a DER X.509 certificate.
    #[error("not an X.509 certificate: {0}")]
    Malformed(String),
    /// Not exactly one URI SAN.
    #[error("an X509-SVID has exactly one URI SAN, this one has {0}")]
    UriSanCount(usize),
    /// The URI SAN is not a SPIFFE ID.
    #[error("URI SAN is not a SPIFFE ID: {0}")]
    BadSpiffeId(#[from] crate::spiffe::SpiffeIdError),
    /// A rule of the X509-SVID spec is broken.
    #[error("X509-SVID rule broken: {0}")]
    Rule(&'static str),
}

/// What an X509-SVID leaf says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidInfo {
    /// Its SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// Serial, lowercase hex without leading zero bytes.
    pub serial_hex: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// Expiry.
    pub not_after: OffsetDateTime,
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, SvidError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| SvidError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SvidError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(cert)
}

/// The expiry of any certificate (leaf or CA).
pub fn not_after_of(der: &[u8]) -> Result<OffsetDateTime, SvidError> {
    Ok(parse(der)?.validity().not_after.to_datetime())
}

/// The SPIFFE ID of a certificate (its single URI SAN). Use on verified peer certs.
pub fn spiffe_id_of(der: &[u8]) -> Result<SpiffeId, SvidError> {
    let cert = parse(der)?;
    let uris = uri_sans(&cert);
    match uris.as_slice() {
        [one] => Ok(SpiffeId::parse(one)?),
        other => Err(SvidError::UriSanCount(other.len())),
    }
}

fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a str> {
    san_names(cert)
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect()
}

fn san_names<'a>(cert: &'a X509Certificate<'_>) -> impl Iterator<Item = &'a GeneralName<'a>> {
    cert.extensions()
        .iter()
        .filter_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => Some(san.general_names.iter()),
            _ => None,
        })
        .flatten()
}

/// Checks a leaf against the X509-SVID rules: one SPIFFE URI SAN, not a CA, key usage
/// digitalSignature without keyCertSign/cRLSign, EKU serverAuth + clientAuth, AKI and SKI.
pub fn check_x509_svid(der: &[u8]) -> Result<SvidInfo, SvidError> {
    let cert = parse(der)?;
    let spiffe_id = spiffe_id_of(der)?;
    if spiffe_id.path().is_empty() {
        return Err(SvidError::Rule("leaf SPIFFE ID must have a path"));
    }
    let bc = cert
        .basic_constraints()
        .map_err(|e| SvidError::Malformed(e.to_string()))?;
    if bc.is_some_and(|b| b.value.ca) {
        return Err(SvidError::Rule("leaf must not be a CA"));
    }
    let ku = cert
        .key_usage()
        .map_err(|e| SvidError::Malformed(e.to_string()))?
        .ok_or(SvidError::Rule("key usage extension missing"))?;
    if !ku.critical {
        return Err(SvidError::Rule("key usage must be critical"));
    }
    if !ku.value.digital_signature() {
        return Err(SvidError::Rule("digitalSignature key usage missing"));
    }
    if ku.value.key_cert_sign() || ku.value.crl_sign() {
        return Err(SvidError::Rule("leaf must not have keyCertSign or cRLSign"));
    }
    let eku = cert
        .extended_key_usage()
        .map_err(|e| SvidError::Malformed(e.to_string()))?
        .ok_or(SvidError::Rule("extended key usage missing"))?;
    if !(eku.value.server_auth && eku.value.client_auth) {
        return Err(SvidError::Rule(
            "EKU must include serverAuth and clientAuth",
        ));
    }
    let has = |f: fn(&ParsedExtension<'_>) -> bool| {
        cert.extensions().iter().any(|e| f(e.parsed_extension()))
    };
    if !has(|e| matches!(e, ParsedExtension::AuthorityKeyIdentifier(_))) {
        return Err(SvidError::Rule("authority key identifier missing"));
    }
    if !has(|e| matches!(e, ParsedExtension::SubjectKeyIdentifier(_))) {
        return Err(SvidError::Rule("subject key identifier missing"));
    }
    let dns_names = san_names(&cert)
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect();
    Ok(SvidInfo {
        spiffe_id,
        dns_names,
        serial_hex: hex::encode(cert.raw_serial())
            .trim_start_matches("00")
            .to_owned(),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
    })
}
