//! Request handling of the CA API: authentication, policy checks, signing, audit.

use std::sync::Arc;

use bytes::Bytes;
use time::OffsetDateTime;

use super::Ctx;
use crate::api::{
    self, ApiError, BatchItem, BatchRequest, BatchResponse, CsrRequest, EnrollRequest, SvidResponse,
};
use crate::audit::AuditEvent;
use crate::csr::ValidatedCsr;
use crate::metrics as m;
use crate::spiffe::SpiffeId;
use crate::store::{token_hash, Redemption, StoreError};
use crate::Authority;

/// What the caller proved at the TLS layer, and from where it came.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The SPIFFE ID of its verified client certificate.
    pub id: Option<SpiffeId>,
    /// Its socket address.
    pub remote: String,
}

/// A refusal: HTTP status, stable code, message.
#[derive(Debug, Clone)]
pub struct Refusal(pub ApiError);

impl Refusal {
    fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self(ApiError {
            status,
            code: code.to_owned(),
            message: message.into(),
        })
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        ::metrics::counter!(m::STORE_ERRORS_TOTAL).increment(1);
        tracing::error!(error = %e, "ca store failure");
        Refusal::new(
            503,
            "store_unavailable",
            format!("ca store unavailable: {e}"),
        )
    }
}

type Answer = Result<SvidResponse, Refusal>;

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Refusal> {
    serde_json::from_slice(body)
        .map_err(|e| Refusal::new(400, "bad_request", format!("invalid JSON body: {e}")))
}

fn validate_csr(auth: &Authority, pem: &str) -> Result<ValidatedCsr, Refusal> {
    ValidatedCsr::parse(pem.as_bytes(), &auth.keyset().trust_domain)
        .map_err(|e| Refusal::new(400, "bad_csr", e.to_string()))
}

fn sign(auth: &Authority, csr: &ValidatedCsr, dns: &[String], ttl: Option<u64>) -> Answer {
    let started = std::time::Instant::now();
    let svid = auth
        .sign(csr, dns, ttl, OffsetDateTime::now_utc())
        .map_err(|e| match e {
            crate::authority::SignError::Policy(p) => Refusal::new(400, "bad_ttl", p.to_string()),
            other => Refusal::new(503, "ca_unavailable", other.to_string()),
        })?;
    ::metrics::histogram!(m::SIGN_SECONDS).record(started.elapsed().as_secs_f64());
    Ok(SvidResponse {
        spiffe_id: csr.spiffe_id.to_string(),
        chain_pem: svid.chain_pem,
        bundle_pem: auth.bundle_pem().to_owned(),
        serial: svid.serial_hex,
        not_after: svid.not_after.unix_timestamp(),
    })
}

/// Records the outcome in the audit log and metrics, and passes it through.
fn audited(
    ctx: &Ctx,
    op: &'static str,
    caller: String,
    remote: &str,
    wanted: Option<String>,
    out: Answer,
) -> Answer {
    let ts = OffsetDateTime::now_utc().unix_timestamp();
    let ev = match &out {
        Ok(s) => {
            ::metrics::counter!(m::SVIDS_ISSUED_TOTAL, "op" => op).increment(1);
            AuditEvent {
                ts,
                event: "issued",
                op,
                caller,
                remote: remote.to_owned(),
                spiffe_id: Some(s.spiffe_id.clone()),
                serial: Some(s.serial.clone()),
                not_after: OffsetDateTime::from_unix_timestamp(s.not_after)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    }),
                reason: None,
            }
        }
        Err(Refusal(e)) => {
            ::metrics::counter!(m::REQUESTS_DENIED_TOTAL, "op" => op, "reason" => e.code.clone())
                .increment(1);
            tracing::info!(op, %caller, remote, code = %e.code, reason = %e.message, "ca request denied");
            AuditEvent {
                ts,
                event: "denied",
                op,
                caller,
                remote: remote.to_owned(),
                spiffe_id: wanted,
                serial: None,
                not_after: None,
                reason: Some(format!("{}: {}", e.code, e.message)),
            }
        }
    };
    ctx.audit.record(ev);
    out
}

/// `POST /v1/enroll`.
pub async fn enroll(ctx: &Ctx, caller: &Caller, body: &Bytes) -> Answer {
    let req: EnrollRequest = match parse_json(body) {
        Ok(r) => r,
        Err(e) => {
            return audited(
                ctx,
                "enroll",
                "token:?".into(),
                &caller.remote,
                None,
                Err(e),
            )
        }
    };
    let auth = ctx.authority();
    let hash = token_hash(&req.token);
    let mut who = "token:?".to_owned();
    let mut wanted = None;
    let out = async {
        let (record, used) = ctx
            .store
            .token(&hash)
            .await?
            .ok_or_else(|| Refusal::new(401, "token_unknown", "unknown join token"))?;
        who = format!("token:{}", record.node);
        if used {
            return Err(Refusal::new(
                401,
                "token_used",
                format!("join token for node {} was already used", record.node),
            ));
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if record.expires_at <= now {
            return Err(Refusal::new(
                401,
                "token_expired",
                format!("join token for node {} expired", record.node),
            ));
        }
        check_not_banned(ctx, &record.node).await?;
        let csr = validate_csr(&auth, &req.csr)?;
        wanted = Some(csr.spiffe_id.to_string());
        let node_id = auth
            .keyset()
            .trust_domain
            .node_id(&record.node)
            .map_err(|e| Refusal::new(400, "bad_node", e.to_string()))?;
        if csr.spiffe_id != node_id {
            return Err(Refusal::new(
                403,
                "id_mismatch",
                format!(
                    "csr asks for {}, the token enrolls {node_id}",
                    csr.spiffe_id
                ),
            ));
        }
        let attestation_key = req
            .attestation_key
            .as_deref()
            .map(decode_attestation_key)
            .transpose()?;
        match ctx.store.redeem_token(&hash, now).await? {
            Redemption::Redeemed { .. } => {
                if let Some(key) = attestation_key {
                    ctx.store.set_attestation_key(&record.node, &key).await?;
                }
                sign(&auth, &csr, &[], req.ttl_secs)
            }
            Redemption::AlreadyUsed => Err(Refusal::new(
                401,
                "token_used",
                format!("join token for node {} was already used", record.node),
            )),
            Redemption::Expired => Err(Refusal::new(401, "token_expired", "join token expired")),
            Redemption::Unknown => Err(Refusal::new(401, "token_unknown", "unknown join token")),
        }
    }
    .await;
    audited(ctx, "enroll", who, &caller.remote, wanted, out)
}

/// A P-256 public key as an uncompressed point (65 bytes, 0x04 prefix), base64.
fn decode_attestation_key(b64: &str) -> Result<Vec<u8>, Refusal> {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .filter(|k| k.len() == 65 && k[0] == 4)
        .ok_or_else(|| {
            Refusal::new(
                400,
                "bad_attestation_key",
                "attestation_key must be base64 of an uncompressed P-256 point",
            )
        })?;
    Ok(key)
}

/// `POST /v1/reattest`: a node proves possession of the attestation key registered at its
/// enrollment by signing (node, timestamp, nonce, CSR hash); replays and skewed clocks are
/// refused, and a ban stops it like any other issuance.
pub async fn reattest(ctx: &Ctx, caller: &Caller, body: &Bytes) -> Answer {
    use base64::Engine;
    let mut who = "reattest:?".to_owned();
    let mut wanted = None;
    let out = async {
        let req: api::ReattestRequest = parse_json(body)?;
        who = format!("reattest:{}", req.node);
        let auth = ctx.authority();
        let node_id = auth
            .keyset()
            .trust_domain
            .node_id(&req.node)
            .map_err(|e| Refusal::new(400, "bad_node", e.to_string()))?;
        check_not_banned(ctx, &req.node).await?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if (req.timestamp - now).abs() > api::REATTEST_SKEW_SECS {
            return Err(Refusal::new(
                401,
                "reattest_stale",
                format!(
                    "timestamp {} is more than {}s from the CA clock",
                    req.timestamp,
                    api::REATTEST_SKEW_SECS
                ),
            ));
        }
        let key = ctx.store.attestation_key(&req.node).await?.ok_or_else(|| {
            Refusal::new(
                401,
                "no_attestation_key",
                format!(
                    "node {} registered no attestation key; enroll it again with a join token",
                    req.node
                ),
            )
        })?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(&req.signature)
            .map_err(|_| Refusal::new(400, "bad_request", "signature is not base64"))?;
        let msg = api::reattest_message(&req.node, req.timestamp, &req.nonce, &req.csr);
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &key)
            .verify(&msg, &signature)
            .map_err(|_| {
                Refusal::new(
                    401,
                    "reattest_signature",
                    format!(
                        "signature does not verify with the attestation key of node {}",
                        req.node
                    ),
                )
            })?;
        if req.nonce.len() < 16
            || !ctx
                .store
                .use_nonce(&req.nonce, now, 2 * api::REATTEST_SKEW_SECS)
                .await?
        {
            return Err(Refusal::new(
                401,
                "reattest_replay",
                "nonce was used before",
            ));
        }
        let csr = validate_csr(&auth, &req.csr)?;
        wanted = Some(csr.spiffe_id.to_string());
        if csr.spiffe_id != node_id {
            return Err(Refusal::new(
                403,
                "id_mismatch",
                format!(
                    "csr asks for {}, re-attestation is for {node_id}",
                    csr.spiffe_id
                ),
            ));
        }
        sign(&auth, &csr, &[], None)
    }
    .await;
    audited(ctx, "reattest", who, &caller.remote, wanted, out)
}

async fn check_not_banned(ctx: &Ctx, node: &str) -> Result<(), Refusal> {
    match ctx.store.ban_of(node).await? {
        Some(ban) => Err(Refusal::new(
            403,
            "banned",
            format!("node {node} is banned: {}", ban.reason),
        )),
        None => Ok(()),
    }
}

/// The node name of an mTLS caller, or 401/403.
async fn caller_node(ctx: &Ctx, caller: &Caller) -> Result<String, Refusal> {
    let id = caller.id.as_ref().ok_or_else(|| {
        Refusal::new(
            401,
            "no_client_cert",
            "this operation needs a node SVID (mTLS)",
        )
    })?;
    let node = id
        .node_name()
        .ok_or_else(|| Refusal::new(403, "not_a_node", format!("{id} is not a node identity")))?
        .to_owned();
    check_not_banned(ctx, &node).await?;
    Ok(node)
}

fn caller_name(caller: &Caller) -> String {
    caller
        .id
        .as_ref()
        .map_or_else(|| "anonymous".to_owned(), |i| i.to_string())
}

/// `POST /v1/renew`.
pub async fn renew(ctx: &Ctx, caller: &Caller, body: &Bytes) -> Answer {
    let mut wanted = None;
    let out = async {
        let node = caller_node(ctx, caller).await?;
        let req: CsrRequest = parse_json(body)?;
        let auth = ctx.authority();
        let csr = validate_csr(&auth, &req.csr)?;
        wanted = Some(csr.spiffe_id.to_string());
        if Some(&csr.spiffe_id) != caller.id.as_ref() {
            return Err(Refusal::new(
                403,
                "id_mismatch",
                format!(
                    "node {node} may renew only its own ID, csr asks for {}",
                    csr.spiffe_id
                ),
            ));
        }
        sign(&auth, &csr, &[], req.ttl_secs)
    }
    .await;
    audited(
        ctx,
        "renew",
        caller_name(caller),
        &caller.remote,
        wanted,
        out,
    )
}

async fn one_workload(
    ctx: &Ctx,
    auth: &Arc<Authority>,
    node: &str,
    req: &CsrRequest,
    caller: &Caller,
) -> Answer {
    let mut wanted = None;
    let out = async {
        let csr = validate_csr(auth, &req.csr)?;
        wanted = Some(csr.spiffe_id.to_string());
        let entries = ctx.store.entries(Some(node)).await?;
        let entry = entries
            .iter()
            .find(|e| e.spiffe_id == csr.spiffe_id.as_str())
            .ok_or_else(|| {
                Refusal::new(
                    403,
                    "not_registered",
                    format!(
                        "no registration entry for {} with parent node {node}",
                        csr.spiffe_id
                    ),
                )
            })?;
        sign(
            auth,
            &csr,
            &entry.dns_names,
            req.ttl_secs.or(entry.ttl_secs),
        )
    }
    .await;
    audited(
        ctx,
        "workload",
        caller_name(caller),
        &caller.remote,
        wanted,
        out,
    )
}

/// `POST /v1/workload`.
pub async fn workload(ctx: &Ctx, caller: &Caller, body: &Bytes) -> Answer {
    let node = match caller_node(ctx, caller).await {
        Ok(n) => n,
        Err(e) => {
            return audited(
                ctx,
                "workload",
                caller_name(caller),
                &caller.remote,
                None,
                Err(e),
            )
        }
    };
    let req: CsrRequest = match parse_json(body) {
        Ok(r) => r,
        Err(e) => {
            return audited(
                ctx,
                "workload",
                caller_name(caller),
                &caller.remote,
                None,
                Err(e),
            )
        }
    };
    one_workload(ctx, &ctx.authority(), &node, &req, caller).await
}

/// `POST /v1/workload/batch`.
pub async fn workload_batch(
    ctx: &Ctx,
    caller: &Caller,
    body: &Bytes,
) -> Result<BatchResponse, Refusal> {
    let node = caller_node(ctx, caller).await?;
    let req: BatchRequest = parse_json(body)?;
    if req.csrs.len() > api::MAX_BATCH {
        return Err(Refusal::new(
            400,
            "batch_too_large",
            format!(
                "{} CSRs in one batch, limit {}",
                req.csrs.len(),
                api::MAX_BATCH
            ),
        ));
    }
    let auth = ctx.authority();
    let mut results = Vec::with_capacity(req.csrs.len());
    for item in &req.csrs {
        results.push(match one_workload(ctx, &auth, &node, item, caller).await {
            Ok(s) => BatchItem::Ok(s),
            Err(Refusal(e)) => BatchItem::Err(e),
        });
    }
    Ok(BatchResponse { results })
}

/// `GET /v1/entries`.
pub async fn entries(
    ctx: &Ctx,
    caller: &Caller,
) -> Result<Vec<crate::store::RegistrationEntry>, Refusal> {
    let node = caller_node(ctx, caller).await?;
    Ok(ctx.store.entries(Some(&node)).await?)
}
