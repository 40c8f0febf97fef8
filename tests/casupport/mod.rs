//! CA test helpers shared by the CA process tests: CSRs, node identities, API errors.
#![allow(dead_code)]

use meshedge_ca::client::{CaClient, ClientError};
use meshedge_ca::tls::certs_from_pem;
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A fresh P-256 key and a PEM CSR for `id`.
pub fn csr(id: &str) -> (KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    let pem = p.serialize_request(&key).unwrap().pem().unwrap();
    (key, pem)
}

/// A chain and key in the form rustls wants.
pub fn identity(
    chain_pem: &str,
    key: &KeyPair,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    (
        certs_from_pem(chain_pem).unwrap(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// A node's SVID chain and key.
pub struct Node {
    pub chain_pem: String,
    pub key: KeyPair,
}

impl Node {
    /// Enrolls `node` with `token` through `anon`.
    pub async fn enroll(anon: &CaClient, token: &str, node: &str) -> Result<Self, ClientError> {
        let (key, pem) = csr(&format!("spiffe://example.org/node/{node}"));
        let svid = anon.enroll(token, &pem, None).await?;
        Ok(Self {
            chain_pem: svid.chain_pem,
            key,
        })
    }

    /// A client of `addrs` presenting this node SVID.
    pub fn client(&self, addrs: &[String], bundle_pem: &str) -> CaClient {
        let bundle = certs_from_pem(bundle_pem).unwrap();
        CaClient::new(
            addrs.to_vec(),
            &bundle,
            Some(identity(&self.chain_pem, &self.key)),
        )
        .unwrap()
    }
}

/// An anonymous client of `addrs`.
pub fn anonymous(addrs: &[String], bundle_pem: &str) -> CaClient {
    CaClient::new(addrs.to_vec(), &certs_from_pem(bundle_pem).unwrap(), None).unwrap()
}

/// The API status and code of an error (panics when the CA did not answer).
pub fn status(e: ClientError) -> (u16, String) {
    let api = e
        .api_error()
        .unwrap_or_else(|| panic!("expected an API error, got {e}"));
    (api.status, api.code.clone())
}

/// The DER leaf of a PEM chain.
pub fn leaf_of(chain_pem: &str) -> Vec<u8> {
    certs_from_pem(chain_pem).unwrap()[0].to_vec()
}
