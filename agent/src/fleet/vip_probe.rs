//! Probing VIPs before a claim, off the lease loop: a probe runs as its own task (it may
//! wait its whole timeout after a link cut), starts a little before the lease would allow
//! a claim ([`super::lease::LeaseTiming::probe_lead`]), and its result is read at the
//! claim. Only a fresh "does not answer" allows a claim; no result yet counts as
//! "answers" (wait), and a positive answer is trusted for a while.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::vip;

/// How long a VIP that answered counts as served without probing again.
pub const PROBE_TRUSTED: Duration = Duration::from_millis(100);
/// How old a "does not answer" may be and still allow a claim.
pub const NEGATIVE_FRESH: Duration = Duration::from_millis(30);
/// Pause between two probes that both found nothing.
const NEGATIVE_REPEAT: Duration = Duration::from_millis(10);

/// A finished probe: VIP index, start time, whether something answered.
pub type ProbeResult = (usize, Instant, bool);

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    running: bool,
    last: Option<(Instant, bool)>,
}

/// Probe state of every VIP of this node.
#[derive(Debug)]
pub struct VipProbes {
    slots: Vec<Slot>,
    timeout: Duration,
    tx: mpsc::UnboundedSender<ProbeResult>,
}

impl VipProbes {
    /// State for `n` VIPs, each probe allowed `timeout`; results arrive on the returned
    /// receiver, to be passed to [`VipProbes::record`].
    pub fn new(n: usize, timeout: Duration) -> (Self, mpsc::UnboundedReceiver<ProbeResult>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let slots = vec![Slot::default(); n];
        (Self { slots, timeout, tx }, rx)
    }

    /// Starts a probe of VIP `i` at `target` unless one runs or a recent result stands.
    pub fn start(&mut self, i: usize, target: SocketAddr, now: Instant) {
        let slot = &mut self.slots[i];
        let recent = match slot.last {
            Some((at, true)) => now.saturating_duration_since(at) < PROBE_TRUSTED,
            Some((at, false)) => now.saturating_duration_since(at) < NEGATIVE_REPEAT,
            None => false,
        };
        if slot.running || recent {
            return;
        }
        slot.running = true;
        let (tx, timeout) = (self.tx.clone(), self.timeout);
        tokio::spawn(async move {
            let started = Instant::now();
            let answered = vip::address_serves(target, timeout).await;
            let _ = tx.send((i, started, answered));
        });
    }

    /// Records a finished probe.
    pub fn record(&mut self, (i, started, answered): ProbeResult) {
        if let Some(slot) = self.slots.get_mut(i) {
            slot.running = false;
            slot.last = Some((started, answered));
        }
    }

    /// What a claim at `now` may assume: `false` only after a fresh probe found nothing.
    pub fn answers(&self, i: usize, now: Instant) -> bool {
        match self.slots[i].last {
            Some((at, false)) => now.saturating_duration_since(at) >= NEGATIVE_FRESH,
            Some((_, true)) | None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_fresh_negative_allows_a_claim() {
        let (mut probes, _rx) = VipProbes::new(1, Duration::from_millis(20));
        let t0 = Instant::now();
        assert!(probes.answers(0, t0), "no result yet: wait");
        probes.record((0, t0, false));
        assert!(!probes.answers(0, t0 + Duration::from_millis(5)));
        assert!(probes.answers(0, t0 + NEGATIVE_FRESH), "stale negative");
        probes.record((0, t0, true));
        assert!(probes.answers(0, t0 + Duration::from_millis(5)));
    }

    #[tokio::test]
    async fn a_probe_of_an_unused_address_reports_nothing_answers() {
        let (mut probes, mut rx) = VipProbes::new(1, Duration::from_millis(20));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = listener.local_addr().unwrap();
        drop(listener);
        probes.start(0, closed, Instant::now());
        probes.start(0, closed, Instant::now());
        let result = rx.recv().await.unwrap();
        assert!(!result.2, "refused: nothing serves");
        probes.record(result);
        assert!(rx.try_recv().is_err(), "one probe at a time");
    }

    #[tokio::test]
    async fn a_process_that_reacts_answers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            drop(stream);
        });
        assert!(vip::address_serves(target, Duration::from_secs(2)).await);
    }

    #[tokio::test]
    async fn a_listener_nobody_accepts_on_does_not_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        assert!(!vip::address_serves(target, Duration::from_millis(50)).await);
        drop(listener);
    }
}
