//! Per-route rate limiting with token buckets keyed by route, client IP, caller SPIFFE ID
//! or a header (an API key). A bucket holds `burst` tokens and refills at
//! `requests_per_second`; a request takes one token or is answered 429 with `Retry-After`
//! (whole seconds until a token is back, at least 1) and the `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset` fields of the IETF RateLimit header draft
//! (reset: seconds until the bucket is full again).
//!
//! Memory is bounded: at most `max_keys` buckets. Past that, buckets that have refilled
//! completely are dropped first (a full bucket is the same as a new one, so nothing is
//! forgotten), then the least recently used, down to 90% of the limit.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;
use tokio::time::Instant;

use crate::headers::RequestFields;

use super::config::{RateLimitConfig, RateLimitKey};

/// The key of requests that lack the header or identity the limit is keyed by: they
/// share one bucket.
pub const ANONYMOUS: &str = "-";

/// What the limiter said about one request; also the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateDecision {
    /// Let it through.
    pub allowed: bool,
    /// `RateLimit-Limit`: the bucket size.
    pub limit: u32,
    /// `RateLimit-Remaining`: tokens left after this request.
    pub remaining: u32,
    /// `RateLimit-Reset`: seconds until the bucket is full.
    pub reset_secs: u64,
    /// `Retry-After` for a refused request: seconds until a token is back (0 if allowed).
    pub retry_after_secs: u64,
}

impl RateDecision {
    /// The HTTP status of a refusal.
    pub const STATUS: u16 = 429;

    /// The header fields to add to the response (all of them on a 429; the three
    /// `RateLimit-*` ones on an allowed request).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("ratelimit-limit", self.limit.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            ("ratelimit-reset", self.reset_secs.to_string()),
        ];
        if !self.allowed {
            h.push(("retry-after", self.retry_after_secs.to_string()));
        }
        h
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The limiter of one route.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    burst: f64,
    buckets: HashMap<String, Bucket>,
}

fn ceil_secs(secs: f64) -> u64 {
    if secs <= 0.0 {
        0
    } else {
        secs.min(1e9).ceil() as u64
    }
}

// === impl RateLimiter ===

impl RateLimiter {
    /// A limiter for a validated `config` (see [`RateLimitConfig::validate`]).
    pub fn new(config: RateLimitConfig) -> Self {
        let burst = f64::from(config.effective_burst());
        Self {
            config,
            burst,
            buckets: HashMap::new(),
        }
    }

    /// The bucket key of a request.
    pub fn key(
        &self,
        client_ip: IpAddr,
        headers: RequestFields<'_>,
        spiffe_id: Option<&str>,
    ) -> String {
        match &self.config.key {
            RateLimitKey::Route => String::new(),
            RateLimitKey::ClientIp => client_ip.to_string(),
            RateLimitKey::SpiffeId => spiffe_id.unwrap_or(ANONYMOUS).to_owned(),
            RateLimitKey::Header(name) => headers
                .first(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .filter(|v| !v.is_empty())
                .unwrap_or(ANONYMOUS)
                .to_owned(),
        }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
        (b.tokens + elapsed * self.config.requests_per_second).min(self.burst)
    }

    /// Takes one token from `key`'s bucket at `now`.
    pub fn check(&mut self, now: Instant, key: &str) -> RateDecision {
        let fresh = Bucket {
            tokens: self.burst,
            updated: now,
        };
        let bucket = self.buckets.get(key).copied().unwrap_or(fresh);
        let mut tokens = self.refilled(bucket, now);
        let allowed = tokens >= 1.0;
        if allowed {
            tokens -= 1.0;
        }
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.config.max_keys {
            self.evict(now);
        }
        self.buckets.insert(
            key.to_owned(),
            Bucket {
                tokens,
                updated: now,
            },
        );
        let rate = self.config.requests_per_second;
        RateDecision {
            allowed,
            limit: self.burst as u32,
            remaining: tokens.floor() as u32,
            reset_secs: ceil_secs((self.burst - tokens) / rate),
            retry_after_secs: if allowed {
                0
            } else {
                ceil_secs((1.0 - tokens) / rate).max(1)
            },
        }
    }

    fn evict(&mut self, now: Instant) {
        let target = self.config.max_keys * 9 / 10;
        let burst = self.burst;
        let rate = self.config.requests_per_second;
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens + elapsed * rate < burst
        });
        if self.buckets.len() > target {
            let mut ages: Vec<(Instant, String)> = self
                .buckets
                .iter()
                .map(|(k, b)| (b.updated, k.clone()))
                .collect();
            ages.sort();
            let excess = self.buckets.len() - target;
            for (_, k) in ages.into_iter().take(excess) {
                self.buckets.remove(&k);
            }
        }
    }

    /// Buckets held.
    pub fn keys(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limiter(rps: f64, burst: Option<u32>, key: RateLimitKey, max_keys: usize) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            requests_per_second: rps,
            burst,
            key,
            max_keys,
        })
    }

    #[test]
    fn bucket_refills_and_computes_headers() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut l = limiter(2.0, Some(3), RateLimitKey::Route, 10);
        // (ms after t0, allowed, remaining, reset, retry-after)
        let cases = [
            (0, true, 2, 1, 0),
            (0, true, 1, 1, 0),
            (0, true, 0, 2, 0),
            (0, false, 0, 2, 1),
            (400, false, 0, 2, 1), // 0.8 tokens
            (500, true, 0, 2, 0),  // 1.0 token
            (3000, true, 2, 1, 0), // full again (3), one taken
        ];
        for (at, allowed, remaining, reset, retry) in cases {
            let d = l.check(t0 + ms(at), "");
            assert_eq!(
                (d.allowed, d.remaining, d.reset_secs, d.retry_after_secs),
                (allowed, remaining, reset, retry),
                "at {at}ms"
            );
            assert_eq!(d.limit, 3);
        }
        let slow = &mut limiter(0.1, None, RateLimitKey::Route, 10);
        slow.check(t0, "");
        let d = slow.check(t0, "");
        assert_eq!(
            (d.allowed, d.retry_after_secs),
            (false, 10),
            "retry after a whole token"
        );
        assert!(d.headers().contains(&("retry-after", "10".to_owned())));
    }

    #[test]
    fn keys_come_from_ip_header_or_identity() {
        let ip: IpAddr = "192.0.2.7".parse().expect("valid ip");
        let mut headers = http::HeaderMap::new();
        headers.insert("x-api-key", http::HeaderValue::from_static("k1"));
        let raw = crate::raw_head::RawHead::from_pairs(&[("X-Api-Key", "k1")]);
        let id = Some("spiffe://example.org/svc/a");
        let cases = [
            (RateLimitKey::Route, ""),
            (RateLimitKey::ClientIp, "192.0.2.7"),
            (RateLimitKey::SpiffeId, "spiffe://example.org/svc/a"),
            (RateLimitKey::Header("x-api-key".into()), "k1"),
            (RateLimitKey::Header("x-other".into()), ANONYMOUS),
        ];
        for (key, want) in cases {
            let l = limiter(1.0, None, key.clone(), 10);
            assert_eq!(l.key(ip, RequestFields::Map(&headers), id), want, "{key:?}");
            assert_eq!(l.key(ip, RequestFields::Raw(&raw), id), want, "{key:?}");
        }
        let l = limiter(1.0, None, RateLimitKey::SpiffeId, 10);
        assert_eq!(l.key(ip, RequestFields::Map(&headers), None), ANONYMOUS);
    }

    #[test]
    fn distinct_keys_are_isolated_and_memory_is_bounded() {
        let t0 = Instant::now();
        let mut l = limiter(1.0, Some(1), RateLimitKey::ClientIp, 100);
        assert!(l.check(t0, "a").allowed);
        assert!(!l.check(t0, "a").allowed);
        assert!(l.check(t0, "b").allowed, "another key has its own bucket");
        for i in 0..10_000 {
            l.check(t0 + Duration::from_millis(i), &format!("k{i}"));
            assert!(l.keys() <= 100, "{} buckets", l.keys());
        }
        // A recently limited key survives eviction of older ones only while it is recent:
        // the newest keys are kept.
        assert!(!l.check(t0 + Duration::from_millis(9_999), "k9999").allowed);
    }
}
