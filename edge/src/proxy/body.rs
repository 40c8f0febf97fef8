//! The response body sent to clients: counts bytes and writes the access-log line when the
//! body ends or is dropped (client gone).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use crate::access_log::{AccessEntry, AccessLog};
use crate::upstream::BoxError;

/// Body type of every response the gateway sends.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A complete small body.
pub fn full(text: impl Into<Bytes>) -> ProxyBody {
    Full::new(text.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// Wraps `inner`, logging `entry` when it ends (`inner` as it is when the log is off).
pub fn logged<B>(inner: B, entry: AccessEntry, log: &Arc<AccessLog>, started: Instant) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    if !log.enabled() {
        return inner.map_err(Into::into).boxed_unsync();
    }
    LoggedBody {
        inner,
        pending: Some((entry, log.clone(), started)),
    }
    .boxed_unsync()
}

struct LoggedBody<B> {
    inner: B,
    pending: Option<(AccessEntry, Arc<AccessLog>, Instant)>,
}

impl<B> LoggedBody<B> {
    fn finish(&mut self) {
        if let Some((mut entry, log, started)) = self.pending.take() {
            entry.duration = crate::clock::since(started);
            log.write(&entry);
        }
    }
}

impl<B> Drop for LoggedBody<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<B> Body for LoggedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some((entry, _, _))) = (frame.data_ref(), this.pending.as_mut())
                {
                    entry.response_bytes += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some((entry, _, _)) = this.pending.as_mut() {
                    entry.error = "upstream_body";
                }
                this.finish();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
