//! What one try sends upstream: a complete body with a head shared by every try of the
//! request (the in-task HTTP/1.1 client writes it from there, nothing copied per try), or
//! a request of its own (streamed bodies, health checks; hyper's client takes those).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full};

use super::UpstreamBody;
use crate::raw_head::RawHead;

/// The head of a request sent upstream; the URI's path and query are what is sent (the
/// client sets scheme and authority for the endpoint).
#[derive(Debug)]
pub struct RequestHead {
    /// Method.
    pub method: Method,
    /// URI (only its path and query are used).
    pub uri: Uri,
    /// Headers, already prepared for the upstream (none when `fields` has them).
    pub headers: HeaderMap,
    /// The client's header fields as received on the HTTP/1.1 fast path, prepared for the
    /// upstream: the in-task HTTP/1.1 client writes them through, others get them in a map.
    pub fields: Option<RawHead>,
}

impl RequestHead {
    /// A request with a copy of this head (every field in its map) and `body`.
    pub fn to_request(&self, body: UpstreamBody) -> Request<UpstreamBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        if let Some(fields) = &self.fields {
            fields.append_to(req.headers_mut());
        }
        req
    }
}

impl From<http::request::Parts> for RequestHead {
    fn from(parts: http::request::Parts) -> Self {
        Self {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            fields: None,
        }
    }
}

/// What one try sends.
#[derive(Debug)]
pub enum Outgoing {
    /// A complete body and the head every try of the request shares.
    Buffered(Arc<RequestHead>, Bytes),
    /// A request of its own.
    Request(Request<UpstreamBody>),
}

impl Outgoing {
    /// As an `http::Request` (the shared head copied).
    pub fn into_request(self) -> Request<UpstreamBody> {
        match self {
            Outgoing::Request(req) => req,
            Outgoing::Buffered(head, body) => head.to_request(
                Full::new(body)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            ),
        }
    }
}

impl From<Request<UpstreamBody>> for Outgoing {
    fn from(req: Request<UpstreamBody>) -> Self {
        Outgoing::Request(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_shared_head_becomes_a_request_with_its_body() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", "1".parse().unwrap());
        let head = Arc::new(RequestHead {
            method: Method::PUT,
            uri: Uri::from_static("/p?q=1"),
            headers,
            fields: Some(RawHead::from_pairs(&[("X-B", "2"), ("x-a", "3")])),
        });
        let req = Outgoing::Buffered(head, Bytes::from_static(b"body")).into_request();
        assert_eq!(req.method(), Method::PUT);
        assert_eq!(req.uri(), "/p?q=1");
        let all = |name| req.headers().get_all(name).iter().collect::<Vec<_>>();
        assert_eq!(all("x-a"), ["1", "3"], "the map's first, then the fields'");
        assert_eq!(all("x-b"), ["2"]);
        let got = req.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"body");
    }
}
