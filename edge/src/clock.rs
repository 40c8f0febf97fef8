//! The clock of the request path, read at most once per poll of a connection's task (as
//! nginx updates its cached time once per turn of its event loop). A proxied HTTP/1.1
//! request is two polls of its connection's task (the request arrives; the upstream's
//! answer arrives), and its path asks the time about ten times (request start, endpoint
//! pick, pool checkout, the try's deadline, the answer, pool checkin, metrics, the next
//! head's deadline); each read is a `clock_gettime` call. Inside [`PerPoll`], every
//! [`now`] of one poll returns the first reading of that poll: the instant the task woke
//! for the event that poll handles, microseconds old at most. Outside it (tasks not
//! wrapped, tests), [`now`] reads the clock each time.
//!
//! Only what measures or schedules request-scale durations (milliseconds and up) reads this
//! clock; a loop that must see time pass within one poll reads `Instant::now()` itself.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
enum Reading {
    /// Not inside a [`PerPoll`]: every call reads the clock.
    Outside,
    /// Inside a poll that has not read the clock yet.
    Unread,
    /// Inside a poll that read it: the monotonic instant, and the Unix seconds once asked.
    Read(Instant, Option<i64>),
}

thread_local! {
    static READING: Cell<Reading> = const { Cell::new(Reading::Outside) };
}

/// The monotonic time: the poll's reading inside a [`PerPoll`], the clock outside.
pub fn now() -> Instant {
    READING.with(|r| match r.get() {
        Reading::Read(at, _) => at,
        Reading::Unread => {
            let at = Instant::now();
            r.set(Reading::Read(at, None));
            at
        }
        Reading::Outside => Instant::now(),
    })
}

/// The time since `earlier` by [`now`] (zero if `earlier` is later).
pub fn since(earlier: Instant) -> std::time::Duration {
    now().saturating_duration_since(earlier)
}

/// Seconds since the Unix epoch by the system clock (0 before it), read once per poll
/// inside a [`PerPoll`] like [`now`].
pub fn unix_seconds() -> i64 {
    let read = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    };
    READING.with(|r| match r.get() {
        Reading::Read(_, Some(secs)) => secs,
        Reading::Read(at, None) => {
            let secs = read();
            r.set(Reading::Read(at, Some(secs)));
            secs
        }
        Reading::Unread => {
            let secs = read();
            r.set(Reading::Read(Instant::now(), Some(secs)));
            secs
        }
        Reading::Outside => read(),
    })
}

/// Runs a future with one clock reading per poll (see the module docs).
#[derive(Debug)]
pub struct PerPoll<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> PerPoll<F> {
    /// `inner`, boxed once (a connection's task: one allocation per connection).
    pub fn new(inner: F) -> Self {
        Self {
            inner: Box::pin(inner),
        }
    }
}

/// Puts back the reading of the enclosing scope when a poll ends, even by a panic.
struct Restore(Reading);

impl Drop for Restore {
    fn drop(&mut self) {
        READING.with(|r| r.set(self.0));
    }
}

impl<F: Future> Future for PerPoll<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _restore = Restore(READING.with(|r| r.replace(Reading::Unread)));
        self.inner.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn outside_a_scope_every_call_reads_the_clock() {
        let a = now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() > a);
    }

    #[tokio::test]
    async fn one_poll_reads_the_clock_once_and_the_next_poll_again() {
        let mut seen = Vec::new();
        PerPoll::new(async {
            let a = now();
            std::thread::sleep(Duration::from_millis(2));
            seen.push((a, now(), unix_seconds()));
            tokio::task::yield_now().await;
            let b = now();
            seen.push((b, now(), unix_seconds()));
        })
        .await;
        let [(a, a2, s1), (b, b2, s2)] = seen[..] else {
            panic!("two polls: {seen:?}")
        };
        assert_eq!(a, a2, "the same poll reuses its reading");
        assert_eq!(b, b2);
        assert!(b >= a + Duration::from_millis(2), "a new poll reads again");
        assert!(s1 > 1_700_000_000 && s2 >= s1);
        // The scope ends with the poll.
        let outside = now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() > outside);
    }

    #[test]
    fn a_panicking_poll_leaves_no_reading_behind() {
        let caught = std::panic::catch_unwind(|| {
            let fut = PerPoll::new(async {
                let _ = now();
                panic!("inside the poll");
            });
            futures_util::FutureExt::now_or_never(fut)
        });
        assert!(caught.is_err());
        let outside = now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() > outside, "the thread is back outside any scope");
    }
}
