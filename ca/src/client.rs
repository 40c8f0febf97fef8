//! Client of the CA's HTTPS API, used by agents, tests and the issuance benchmark.
//!
//! It keeps one keep-alive connection and fails over between CA addresses on connection
//! errors and 503 answers. The CA is authenticated as `spiffe://<td>/meshedge/ca`, the trust
//! domain being read from the bundle's roots.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::api::{
    self, ApiError, BatchRequest, BatchResponse, CsrRequest, EnrollRequest, SvidResponse,
};
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::store::RegistrationEntry;
use crate::tls::{AllowedIds, SpiffeServerVerifier};

/// Timeout of one connection attempt (TCP + TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of one request on an established connection.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Failure of a CA call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not reach the CA at `addr`.
    #[error("ca {addr}: {detail}")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// What happened.
        detail: String,
    },
    /// The CA answered with an error.
    #[error("ca {addr} refused: {} {}: {}", .error.status, .error.code, .error.message)]
    Refused {
        /// The address that answered.
        addr: String,
        /// Its answer.
        error: ApiError,
    },
    /// The bundle or identity given to the client is unusable.
    #[error("ca client setup: {0}")]
    Setup(String),
}

impl ClientError {
    /// True when another CA replica, or a later attempt, may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Refused { error, .. } => error.status == 503,
            Self::Setup(_) => false,
        }
    }

    /// The API error, when the CA answered.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Self::Refused { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The trust domain named by the roots of a bundle (their `spiffe://<td>` URI SAN).
pub fn trust_domain_of_bundle(roots: &[CertificateDer<'_>]) -> Option<TrustDomain> {
    roots.iter().find_map(|r| {
        let (_, cert) = x509_parser::parse_x509_certificate(r).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => {
                TrustDomain::parse(u.strip_prefix("spiffe://")?).ok()
            }
            _ => None,
        })
    })
}

/// A client of one or more CA replicas.
pub struct CaClient {
    addrs: Vec<String>,
    tls: Arc<rustls::ClientConfig>,
    conn: tokio::sync::Mutex<Option<(usize, SendRequest<Full<Bytes>>)>>,
}

impl CaClient {
    /// A client for `addrs` (HOST:PORT) trusting `bundle`, presenting `identity` (a node
    /// SVID chain and key) when given.
    pub fn new(
        addrs: Vec<String>,
        bundle: &[CertificateDer<'static>],
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<Self, ClientError> {
        if addrs.is_empty() {
            return Err(ClientError::Setup("no CA address".into()));
        }
        let td = trust_domain_of_bundle(bundle).ok_or_else(|| {
            ClientError::Setup("bundle roots name no spiffe:// trust domain".into())
        })?;
        let ca_id = SpiffeId::parse(&format!("{}{}", td.id_string(), api::CA_ID_PATH))
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        let verifier = SpiffeServerVerifier::new(bundle, AllowedIds::Exact(vec![ca_id]))
            .map_err(|e| ClientError::Setup(format!("bundle: {e}")))?;
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
        let mut cfg = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Setup(format!("client identity: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            addrs,
            tls: Arc::new(cfg),
            conn: tokio::sync::Mutex::new(None),
        })
    }

    async fn connect(&self, i: usize) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let addr = &self.addrs[i];
        let unreachable = |detail: String| ClientError::Unreachable {
            addr: addr.clone(),
            detail,
        };
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| unreachable(format!("connect: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from("meshedge-ca").expect("static name");
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| unreachable(format!("tls: {e}")))?;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| unreachable(format!("http: {e}")))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(send)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let mut guard = self.conn.lock().await;
        let start = guard.as_ref().map_or(0, |(i, _)| *i);
        let mut last = None;
        for k in 0..self.addrs.len() {
            let i = (start + k) % self.addrs.len();
            let mut send = match guard.take() {
                Some((j, s)) if j == i && !s.is_closed() => s,
                _ => match self.connect(i).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "ca unreachable, trying the next address");
                        last = Some(e);
                        continue;
                    }
                },
            };
            match self
                .send(&mut send, i, method.clone(), path, body.clone())
                .await
            {
                Ok(bytes) => {
                    *guard = Some((i, send));
                    return Ok(bytes);
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "ca call failed, trying the next address");
                    last = Some(e);
                }
                Err(e) => {
                    *guard = Some((i, send));
                    return Err(e);
                }
            }
        }
        Err(last.expect("at least one address was tried"))
    }

    async fn send(
        &self,
        send: &mut SendRequest<Full<Bytes>>,
        i: usize,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let addr = self.addrs[i].clone();
        let unreachable = |detail: String| ClientError::Unreachable {
            addr: addr.clone(),
            detail,
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "meshedge-ca")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        let exchange = async {
            send.ready().await.map_err(|e| unreachable(e.to_string()))?;
            let resp = send
                .send_request(req)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, ClientError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable("request timed out".into()))??;
        if status.is_success() {
            return Ok(bytes);
        }
        let error = serde_json::from_slice::<ApiError>(&bytes).unwrap_or_else(|_| ApiError {
            status: status.as_u16(),
            code: "http".into(),
            message: String::from_utf8_lossy(&bytes).into_owned(),
        });
        Err(ClientError::Refused { addr, error })
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        let bytes = self
            .call(
                Method::POST,
                path,
                Some(serde_json::to_vec(body).expect("serializes")),
            )
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unreachable {
            addr: self.addrs.join(","),
            detail: format!("bad answer: {e}"),
        })
    }

    /// The trust bundle, PEM.
    pub async fn bundle(&self) -> Result<String, ClientError> {
        let b = self.call(Method::GET, api::PATH_BUNDLE, None).await?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// First enrollment with a join token.
    pub async fn enroll(
        &self,
        token: &str,
        csr_pem: &str,
        ttl_secs: Option<u64>,
    ) -> Result<SvidResponse, ClientError> {
        self.enroll_with_attestation(token, csr_pem, ttl_secs, None)
            .await
    }

    /// First enrollment, registering the node's attestation public key (raw P-256 point)
    /// so that it can [`CaClient::reattest`] after its SVID expired.
    pub async fn enroll_with_attestation(
        &self,
        token: &str,
        csr_pem: &str,
        ttl_secs: Option<u64>,
        attestation_key: Option<&[u8]>,
    ) -> Result<SvidResponse, ClientError> {
        use base64::Engine;
        let req = EnrollRequest {
            token: token.to_owned(),
            csr: csr_pem.to_owned(),
            ttl_secs,
            attestation_key: attestation_key
                .map(|k| base64::engine::general_purpose::STANDARD.encode(k)),
        };
        self.post(api::PATH_ENROLL, &req).await
    }

    /// Gets a new node SVID for `node` by signing a challenge with its attestation key
    /// (for a node whose SVID expired while the CA was unreachable).
    pub async fn reattest(
        &self,
        node: &str,
        csr_pem: &str,
        attestation_key: &rcgen::KeyPair,
    ) -> Result<SvidResponse, ClientError> {
        use base64::Engine;
        use rcgen::SigningKey;
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let msg = api::reattest_message(node, timestamp, &nonce, csr_pem);
        let signature = attestation_key
            .sign(&msg)
            .map_err(|e| ClientError::Setup(format!("attestation key cannot sign: {e}")))?;
        let req = api::ReattestRequest {
            node: node.to_owned(),
            csr: csr_pem.to_owned(),
            timestamp,
            nonce,
            signature: base64::engine::general_purpose::STANDARD.encode(signature),
        };
        self.post(api::PATH_REATTEST, &req).await
    }

    /// Renews the node SVID this client presents.
    pub async fn renew(
        &self,
        csr_pem: &str,
        ttl_secs: Option<u64>,
    ) -> Result<SvidResponse, ClientError> {
        let req = CsrRequest {
            csr: csr_pem.to_owned(),
            ttl_secs,
        };
        self.post(api::PATH_RENEW, &req).await
    }

    /// One workload SVID.
    pub async fn workload(
        &self,
        csr_pem: &str,
        ttl_secs: Option<u64>,
    ) -> Result<SvidResponse, ClientError> {
        let req = CsrRequest {
            csr: csr_pem.to_owned(),
            ttl_secs,
        };
        self.post(api::PATH_WORKLOAD, &req).await
    }

    /// Several workload SVIDs in one round trip.
    pub async fn workload_batch(
        &self,
        csrs: Vec<CsrRequest>,
    ) -> Result<BatchResponse, ClientError> {
        self.post(api::PATH_WORKLOAD_BATCH, &BatchRequest { csrs })
            .await
    }

    /// Registration entries whose parent is this node.
    pub async fn entries(&self) -> Result<Vec<RegistrationEntry>, ClientError> {
        let b = self.call(Method::GET, api::PATH_ENTRIES, None).await?;
        serde_json::from_slice(&b).map_err(|e| ClientError::Unreachable {
            addr: self.addrs.join(","),
            detail: format!("bad answer: {e}"),
        })
    }
}
