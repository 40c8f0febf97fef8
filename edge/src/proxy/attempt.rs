//! The tries of one request against a cluster: pick, per-try timeout, report; retries of
//! failed tries to another endpoint (another zone after a zone-level failure) with backoff
//! inside the retry budget; a hedged second try, to an endpoint not tried yet, for idempotent
//! requests that have not answered within the cluster's hedge delay (the first good answer wins; a losing hedge is
//! dropped and counted as cancelled, a losing first try runs on detached until its per-try
//! timeout so that a hung endpoint is still observed as one).
//!
//! A request is replayed only when its body is buffered ([`ReqBody::Buffered`]: empty or
//! small); a streamed body is handed to a try only when the try first polls it
//! ([`Deferred`]), so a try that failed before sending anything (connect, TLS, identity)
//! leaves it for another endpoint.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError};
use smallvec::SmallVec;
use tokio::time::Instant;
use tracing::Instrument;

use crate::cluster::{failure_outcome, Cluster, Pick, RetryRoom};
use crate::resilience::breaker::CircuitOpen;
use crate::resilience::retry::TryContext;
use crate::resilience::Outcome;
use crate::upstream::{
    find_cause, BoxError, ConnectError, FailureKind, Outgoing, RequestHead, ResponseBody,
    TryBudget, UpstreamBody,
};

/// Endpoints a request has tried, in order: on the stack for the usual one or two.
type Tried = SmallVec<[SocketAddr; 4]>;

/// A request body as the tries see it.
pub(super) enum ReqBody {
    /// Fully read: every try sends a copy.
    Buffered(Bytes),
    /// Streamed from the client: retried only while nothing of it was taken.
    Streaming(Slot),
}

/// A streamed body not yet taken by a try.
pub(super) type Slot = Arc<Mutex<Option<UpstreamBody>>>;

/// The body of one try over a [`Slot`]: takes the stream on its first poll.
struct Deferred {
    slot: Slot,
    inner: Option<UpstreamBody>,
    hint: SizeHint,
}

impl Body for Deferred {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.inner.is_none() {
            let taken = self
                .slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            match taken {
                Some(b) => self.inner = Some(b),
                None => return Poll::Ready(Some(Err("request body already sent".into()))),
            }
        }
        match self.inner.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or(self.hint, Body::size_hint)
    }
}

fn untouched(slot: &Slot) -> bool {
    slot.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_some()
}

/// How the request ended.
pub(super) enum Answer {
    /// An upstream response to forward, and who sent it.
    Upstream(Response<ResponseBody>, SocketAddr),
    /// The gateway answers itself; the last endpoint tried, if any.
    Local(StatusCode, &'static str, Option<SocketAddr>),
    /// The cluster's breaker refused a new connection: 503 naming the limit.
    CircuitOpen(CircuitOpen, SocketAddr),
}

enum TryResult {
    Response(Response<ResponseBody>),
    Failed(Outcome, &'static str),
    BodyTooLarge,
    CircuitOpen(CircuitOpen),
}

impl TryResult {
    /// A result a hedge race may end with at once.
    fn is_good(&self) -> bool {
        matches!(self, TryResult::Response(r) if r.status().as_u16() < 500)
    }
}

/// What a try sends: a buffered body with the shared head, or a request of its own whose
/// body takes the stream when first polled.
fn outgoing(head: &Arc<RequestHead>, body: &ReqBody) -> Outgoing {
    let slot = match body {
        ReqBody::Buffered(b) => return Outgoing::Buffered(head.clone(), b.clone()),
        ReqBody::Streaming(slot) => slot,
    };
    let hint = slot
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(Body::size_hint)
        .unwrap_or_default();
    let body = Deferred {
        slot: slot.clone(),
        inner: None,
        hint,
    }
    .boxed_unsync();
    Outgoing::Request(head.to_request(body))
}

/// One try, bounded by `per_try`, reported to the cluster.
async fn one(
    cluster: Arc<Cluster>,
    pick: Pick,
    req: Outgoing,
    budget: TryBudget,
    over_limit: Option<Arc<AtomicBool>>,
) -> (TryResult, SocketAddr) {
    let addr = pick.address();
    let span = tracing::info_span!(
        "upstream",
        cluster = %cluster.name(),
        zone = pick.endpoint().zone.as_deref().unwrap_or(""),
        endpoint = %addr,
        reason = pick.decision().reason.as_str(),
    );
    // Boxed: the upstream call's state (connection, exchange, timers) is the bulk of a
    // request's future; inline, every layer above copied it when it moved a future.
    let result = Box::pin(cluster.send(&pick, req, Some(budget)))
        .instrument(span)
        .await;
    let now = crate::clock::now();
    let r = match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            cluster.report(pick, Outcome::Response { status }, now);
            TryResult::Response(resp)
        }
        Err(e)
            if over_limit.is_some_and(|f| f.load(Ordering::SeqCst))
                || find_cause::<LengthLimitError>(&e).is_some() =>
        {
            cluster.report(pick, Outcome::Cancelled, now);
            TryResult::BodyTooLarge
        }
        Err(e) if e.kind == FailureKind::CircuitOpen => {
            cluster.report(pick, Outcome::Cancelled, now);
            match find_cause::<ConnectError>(&e) {
                Some(ConnectError::CircuitOpen { open, .. }) => TryResult::CircuitOpen(*open),
                _ => TryResult::Failed(Outcome::Cancelled, "circuit_open"),
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, cause = ?e.source, endpoint = %addr, per_try = ?budget.per_try, "upstream try failed");
            cluster.report(pick, failure_outcome(e.kind), now);
            TryResult::Failed(failure_outcome(e.kind), e.kind.as_str())
        }
    };
    (r, addr)
}

/// A try, hedged with a second one to another zone after `hedge` when given.
async fn race(
    cluster: &Arc<Cluster>,
    first: Pick,
    head: &Arc<RequestHead>,
    body: &ReqBody,
    (per_try, hedge, deadline): (Duration, Option<Duration>, Instant),
    tried: &mut Tried,
    over_limit: Option<&Arc<AtomicBool>>,
) -> (TryResult, SocketAddr) {
    let a = one(
        cluster.clone(),
        first,
        outgoing(head, body),
        TryBudget { per_try, deadline },
        over_limit.cloned(),
    );
    let Some(delay) = hedge else {
        return a.await;
    };
    let mut a = Box::pin(a);
    tokio::select! {
        r = &mut a => return r,
        () = tokio::time::sleep(delay) => {}
    }
    let Ok(second) = cluster.pick(tried, true) else {
        return a.await;
    };
    // A hedge goes to another endpoint: a second request to the one that is slow only adds
    // load where it hurts (with one endpoint left, or a saturated gateway, it fed a cascade
    // of per-try timeouts in the benchmark). Room is taken (and the hedge counted) after.
    if tried.contains(&second.address()) {
        return a.await;
    }
    let Ok(room) = cluster.hedge_room() else {
        return a.await;
    };
    tried.push(second.address());
    let remaining = per_try.saturating_sub(delay).max(Duration::from_millis(1));
    // Boxed like `a`: inline, the rare hedge doubled the size of every request's future.
    let mut b = Box::pin(one(
        cluster.clone(),
        second,
        outgoing(head, body),
        TryBudget {
            per_try: remaining,
            deadline,
        },
        over_limit.cloned(),
    ));
    let (first_done, a_won) = tokio::select! {
        r = &mut a => (r, true),
        r = &mut b => (r, false),
    };
    if first_done.0.is_good() {
        if !a_won {
            metrics::counter!(crate::resilience::metrics::HEDGES_WON_TOTAL, "cluster" => cluster.name().to_owned())
                .increment(1);
            // The first try runs on, detached, until its per-try timeout: how it ends is
            // what tells a hung endpoint (or zone) from a slow one.
            tokio::spawn(async move {
                let _ = a.await;
            });
        }
        return first_done;
    }
    let other = if a_won { b.await } else { a.await };
    drop(room);
    other
}

/// Runs the tries of a request until an answer, the deadline or the end of retries; the
/// tries start at `now` (the caller's clock reading). `over_limit` is set by a streamed body
/// that went over the route's limit.
pub(super) async fn run(
    cluster: &Arc<Cluster>,
    head: RequestHead,
    body: ReqBody,
    (mut now, deadline): (Instant, Instant),
    over_limit: Option<&Arc<AtomicBool>>,
) -> Answer {
    if let Some(not_after) = cluster.own_svid_expired() {
        tracing::warn!(
            cluster = %cluster.name(),
            %not_after,
            "gateway SVID expired at {not_after} (CA unreachable?); request to cluster {} not sent",
            cluster.name()
        );
        return Answer::Local(StatusCode::SERVICE_UNAVAILABLE, "own_svid_expired", None);
    }
    let idempotent = crate::resilience::retry::is_idempotent(&head.method);
    let head = Arc::new(head);
    let replayable = matches!(body, ReqBody::Buffered(_));
    let mut tried = Tried::new();
    let mut prefer_other_zone = false;
    let mut retries = 0u32;
    let mut _room: Option<RetryRoom> = None;
    let mut last: Option<Answer> = None;
    loop {
        let remaining = deadline.saturating_duration_since(now);
        if remaining.is_zero() {
            return Answer::Local(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                tried.last().copied(),
            );
        }
        let pick = match cluster.pick(&tried, prefer_other_zone) {
            Ok(p) => p,
            // None left (every endpoint tried): answer with the last failure.
            Err(_) => {
                return last.unwrap_or(Answer::Local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_endpoint",
                    None,
                ))
            }
        };
        tried.push(pick.address());
        // Per-try timeouts only where a retry can follow: a request that cannot be replayed
        // or retried, and the last try, get the time the request has left.
        let last_try = retries >= cluster.config().resilience.retry.max_retries;
        let retryable = idempotent && replayable;
        let (per_try, hedge) =
            cluster.try_timing(&pick, remaining, retryable && !last_try, retryable);
        let (result, addr) = race(
            cluster,
            pick,
            &head,
            &body,
            (per_try, hedge, deadline),
            &mut tried,
            over_limit,
        )
        .await;
        let (outcome, local) = match result {
            TryResult::Response(resp) => {
                let status = resp.status().as_u16();
                if status < 500 || !replayable {
                    return Answer::Upstream(resp, addr);
                }
                (Outcome::Response { status }, Answer::Upstream(resp, addr))
            }
            TryResult::BodyTooLarge => {
                return Answer::Local(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", Some(addr));
            }
            // Another endpoint of the same cluster would meet the same limit.
            TryResult::CircuitOpen(open) => return Answer::CircuitOpen(open, addr),
            TryResult::Failed(outcome, reason) => {
                let status = if outcome == Outcome::Timeout {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::BAD_GATEWAY
                };
                (outcome, Answer::Local(status, reason, Some(addr)))
            }
        };
        let never_sent = outcome == Outcome::ConnectFailure
            && match &body {
                ReqBody::Buffered(_) => true,
                ReqBody::Streaming(slot) => untouched(slot),
            };
        if !replayable && !never_sent {
            return local;
        }
        let ctx = TryContext {
            idempotent: idempotent && replayable,
            never_sent,
            retries,
        };
        match cluster.retry(outcome, ctx) {
            Ok((retry, room)) => {
                last = Some(local);
                retries += 1;
                prefer_other_zone = retry.prefer_other_zone;
                _room = Some(room);
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(retry.backoff.min(left)).await;
                now = crate::clock::now();
            }
            Err(_) => return local,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method, Uri};
    use http_body_util::Full;

    fn head() -> Arc<RequestHead> {
        Arc::new(RequestHead {
            method: Method::POST,
            uri: Uri::from_static("/upload"),
            headers: HeaderMap::new(),
            fields: None,
        })
    }

    #[tokio::test]
    async fn a_streamed_body_goes_to_the_first_try_that_polls_it() {
        let stream = Full::new(Bytes::from_static(b"payload"))
            .map_err(|never| match never {})
            .boxed_unsync();
        let slot: Slot = Arc::new(Mutex::new(Some(stream)));
        let body = ReqBody::Streaming(slot.clone());
        // A try that never sent its body (connect failure) leaves it in the slot.
        let unsent = outgoing(&head(), &body).into_request();
        assert_eq!(unsent.body().size_hint().exact(), Some(7));
        drop(unsent);
        assert!(untouched(&slot));
        // The next try takes it.
        let sent = outgoing(&head(), &body).into_request();
        let got = sent.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"payload");
        assert!(!untouched(&slot));
        // A later try cannot send it twice.
        let again = outgoing(&head(), &body).into_request();
        assert!(again.into_body().collect().await.is_err());
    }

    #[tokio::test]
    async fn a_buffered_body_is_sent_by_every_try() {
        let body = ReqBody::Buffered(Bytes::from_static(b"small"));
        for _ in 0..2 {
            let req = outgoing(&head(), &body).into_request();
            assert_eq!(req.method(), Method::POST);
            let got = req.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&got[..], b"small");
        }
    }
}
