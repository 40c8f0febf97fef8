//! Probing VIPs before a claim, off the lease loop: a probe runs as its own task (it may
//! wait its whole timeout after a link cut), starts a little before the lease would allow
//! a claim ([`super::lease::LeaseTiming::probe_lead`]), and its result is read at the
//! claim. Only a fresh "does not answer" allows a claim; no result yet counts as
//! "answers" (wait), and a positive answer is trusted for a while.
//!
//! A probe is short when nothing completes the TCP handshake (the lease's
//! `probe_timeout`, 10-20 ms) and long when a kernel does but its process is slow to react
//! (the gateway's readiness timeout): a silent process counts as "does not answer" only
//! from the moment that wait ended.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::metrics as m;
use super::vip::{self, ProbeOutcome};

/// How long a VIP that answered counts as served without probing again.
pub const PROBE_TRUSTED: Duration = Duration::from_millis(100);
/// How old a "does not answer" may be and still allow a claim.
pub const NEGATIVE_FRESH: Duration = Duration::from_millis(30);
/// Pause between two probes that both found nothing.
const NEGATIVE_REPEAT: Duration = Duration::from_millis(10);

/// A finished probe: VIP index, the time its evidence holds from (its start, or for a
/// silent process the end of the wait), whether something answered.
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
    connect_timeout: Duration,
    reaction_timeout: Duration,
    tx: mpsc::UnboundedSender<ProbeResult>,
}

impl VipProbes {
    /// State for `n` VIPs; a probe waits `connect_timeout` for the handshake and then
    /// `reaction_timeout` for the process ([`vip::probe_address`]). Results arrive on the
    /// returned receiver, to be passed to [`VipProbes::record`].
    pub fn new(
        n: usize,
        connect_timeout: Duration,
        reaction_timeout: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<ProbeResult>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let slots = vec![Slot::default(); n];
        let probes = Self {
            slots,
            connect_timeout,
            reaction_timeout,
            tx,
        };
        (probes, rx)
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
        let tx = self.tx.clone();
        let (connect, reaction) = (self.connect_timeout, self.reaction_timeout);
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = vip::probe_address(target, connect, reaction).await;
            metrics::counter!(m::FLEET_VIP_PROBES_TOTAL,
                "vip" => target.ip().to_string(), "result" => outcome.label())
            .increment(1);
            let evidence_at = match outcome {
                ProbeOutcome::Silent => Instant::now(),
                ProbeOutcome::Reacted | ProbeOutcome::Unreachable => started,
            };
            let _ = tx.send((i, evidence_at, outcome == ProbeOutcome::Reacted));
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

    const SHORT: Duration = Duration::from_millis(20);

    #[tokio::test]
    async fn only_a_fresh_negative_allows_a_claim() {
        let (mut probes, _rx) = VipProbes::new(1, SHORT, SHORT);
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
        let (mut probes, mut rx) = VipProbes::new(1, SHORT, SHORT);
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
        let outcome = vip::probe_address(target, SHORT, Duration::from_secs(2)).await;
        assert_eq!(outcome, ProbeOutcome::Reacted);
    }

    /// The regression: a serving gateway that is slow to react (a loaded machine) was taken
    /// for dead after 20 ms and a survivor claimed its address (two holders).
    #[tokio::test]
    async fn a_slow_process_gets_the_reaction_timeout_not_the_connect_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
            drop(stream);
        });
        let (mut probes, mut rx) = VipProbes::new(1, SHORT, Duration::from_secs(5));
        probes.start(0, target, Instant::now());
        let result = rx.recv().await.unwrap();
        assert!(result.2, "a process that reacts after 150 ms serves");
        probes.record(result);
        assert!(probes.answers(0, Instant::now()));
    }

    #[tokio::test]
    async fn a_silent_process_allows_a_claim_from_the_end_of_the_wait() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let reaction = Duration::from_millis(60);
        let (mut probes, mut rx) = VipProbes::new(1, SHORT, reaction);
        let started = Instant::now();
        probes.start(0, target, started);
        let result = rx.recv().await.unwrap();
        assert!(
            !result.2,
            "accepted by the kernel, no process: nothing serves"
        );
        assert!(
            result.1 >= started + reaction,
            "the evidence holds from the end of the wait"
        );
        probes.record(result);
        assert!(
            !probes.answers(0, result.1),
            "fresh negative: a claim may go ahead"
        );
        drop(listener);
    }

    #[tokio::test]
    async fn a_listener_nobody_accepts_on_is_silent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let outcome = vip::probe_address(target, SHORT, Duration::from_millis(50)).await;
        assert_eq!(outcome, ProbeOutcome::Silent);
        drop(listener);
    }
}
