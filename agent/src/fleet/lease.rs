//! Virtual IP ownership: exactly one holder per address, chosen from the membership view
//! and the gateways' readiness. Pure: the caller passes `now`, the view, and the messages
//! it received, and sends what the methods return.
//!
//! # The rule (release before claim)
//!
//! Ownership is a lease granted by a quorum, in the spirit of PaxosLease:
//!
//! - `quorum` is a majority of the configured fleet size, not of the current view.
//! - A holder sends a heartbeat `(vip, seq)` to every member every `renew_every`. A member
//!   *acks* a heartbeat only if it sees no live lease of another node
//!   (`now < lease_until + claim_margin`); when it acks, it records the sender's lease as
//!   `lease_until = received_at + lease`.
//! - The holder keeps the address only until `t + lease - holder_margin`, where `t` is the
//!   send time of the newest heartbeat acknowledged by a quorum (itself included). It
//!   releases the address **immediately** when its gateway is not ready, when it sees fewer
//!   than `quorum` members alive, or when that time passes, and then tells the members
//!   (`release`), so that a survivor may claim at once instead of waiting for the lease.
//! - A survivor claims only when its own view shows no live lease (expired plus
//!   `claim_margin`, released, or the holder declared dead plus `claim_margin`), its gateway
//!   is ready, it sees a quorum, it is the rendezvous choice among the ready members
//!   (weight of `(vip, node)`), and the address itself does not answer a probe
//!   (`VipView::address_answers`: a hung agent whose gateway still serves on the address
//!   keeps it). It then sends claim heartbeats and adds the address only once a quorum has
//!   acked one of them.
//! - Two quorums intersect: a member that acked the claim had seen the old lease expire,
//!   and refuses the old holder's renewals from then on, so the old holder's lease had run
//!   out (minus `holder_margin`) before the claim completed. `holder_margin` must cover
//!   one `renew_every` (the holder checks its lease on each tick) plus clock-rate drift.
//! - Stickiness: nobody claims while a live lease exists, so the address never moves back
//!   on its own when a higher-weight node returns (failback costs no request).
//! - Probe: "answers" means a process reacts on the address (the caller sends bytes and
//!   waits for any reply or close), not that the kernel completes a TCP handshake, which
//!   it does for a stopped process too. The handshake gets `probe_timeout`; once it
//!   completes, the process gets as long as its own agent's readiness probe gives it
//!   (500 ms), since a busy gateway is slow, not dead ([`super::vip_probe`]).
//! - Fence: the address lives on the gateway's fence device ([`super::fence`]), which the
//!   kernel removes the moment the gateway process exits. Killing a node's processes
//!   therefore removes the address before any lease can expire: a survivor's claim never
//!   meets the old address still configured.
//! - Pause: a holder whose process did not run for two heartbeats (SIGSTOP, a CPU stall)
//!   and whose lease lapsed meanwhile does not drop an address its gateway kept serving: it asks a quorum to confirm it
//!   (claim heartbeats for up to `claim_timeout`) and releases only if none does or a
//!   renewing holder exists. Survivors could not have claimed meanwhile, since the address
//!   answered their probes.
//!
//! Limits: if the whole node freezes (agent and gateway stopped), the probe gets no answer
//! within the reaction wait, a survivor claims, and the frozen node still has the address
//! until it resumes and releases (within `claim_timeout`); keepalived has the same window. Frozen clocks or a
//! clock-rate drift beyond the margins void the argument.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use tracing::info;

use super::rendezvous;

/// The default `vip_lease`. 30 ms (the first default) flapped on a saturated 2-core host:
/// a follower descheduled for 20 ms missed its ack and the holder gave the address up (in 3
/// of 5 runs of 30 s with four busy loops, `scripts/vip-stability.sh`); 100 ms in none.
pub const DEFAULT_LEASE: Duration = Duration::from_millis(100);

/// Why a holder gives its address up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    /// Its local gateway is not ready.
    GatewayNotReady,
    /// It sees fewer than a quorum of members alive.
    NoQuorumAlive,
    /// No quorum acked a heartbeat within the lease (a cut link, or members starved of CPU).
    LeaseLapsed,
    /// After its own pause, no quorum confirmed the lease in time.
    PauseUnconfirmed,
    /// After its own pause, another node renews the lease.
    RenewedElsewhere,
    /// A second holder with a higher weight exists.
    SecondHolder,
}

impl ReleaseReason {
    fn unfit(gateway_ready: bool) -> Self {
        if gateway_ready {
            Self::NoQuorumAlive
        } else {
            Self::GatewayNotReady
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::GatewayNotReady => "gateway_not_ready",
            Self::NoQuorumAlive => "no_quorum_alive",
            Self::LeaseLapsed => "lease_lapsed",
            Self::PauseUnconfirmed => "pause_unconfirmed",
            Self::RenewedElsewhere => "renewed_elsewhere",
            Self::SecondHolder => "second_holder",
        }
    }

    /// The log line's reason.
    pub fn describe(self) -> &'static str {
        match self {
            Self::GatewayNotReady => "the local gateway is not ready",
            Self::NoQuorumAlive => "fewer than a quorum of members seen alive",
            Self::LeaseLapsed => "no quorum acked a heartbeat within the lease",
            Self::PauseUnconfirmed => "no quorum confirmed the lease after a pause",
            Self::RenewedElsewhere => "another node renews the lease after this node's pause",
            Self::SecondHolder => "a second holder with a higher weight",
        }
    }
}

/// Timing of the lease protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// Lease length granted by an ack.
    pub lease: Duration,
    /// Heartbeat and tick interval.
    pub renew_every: Duration,
    /// How long before its quorum-acked lease ends a holder gives the address up.
    pub holder_margin: Duration,
    /// How long after a lease ends (in a member's view) a claim may be acked.
    pub claim_margin: Duration,
    /// A claim without a quorum of acks within this time is abandoned.
    pub claim_timeout: Duration,
    /// How long before a claim would be allowed the address is probed (the probe's
    /// timeout then overlaps the end of the lease instead of following it).
    pub probe_lead: Duration,
    /// How long a probe of the address may take.
    pub probe_timeout: Duration,
}

impl LeaseTiming {
    /// The timing for a lease of `lease` (the `vip_lease` key): heartbeats every sixth of
    /// it, the holder gives up a third before its end, a claim waits a sixth after it and
    /// for at most one lease; the probe takes half a lease, within 10..=20 ms, and starts
    /// one heartbeat more before the claim.
    pub fn for_lease(lease: Duration) -> Self {
        let renew_every = lease / 6;
        let probe_timeout = (lease / 2).clamp(Duration::from_millis(10), Duration::from_millis(20));
        Self {
            lease,
            renew_every,
            holder_margin: lease / 3,
            claim_margin: lease / 6,
            claim_timeout: lease,
            probe_lead: probe_timeout + renew_every,
            probe_timeout,
        }
    }
}

/// A member as seen for VIP decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Node name.
    pub node: String,
    /// Zone.
    pub zone: String,
    /// Whether its gateway is ready.
    pub gateway_ready: bool,
}

/// This node's view at a tick.
#[derive(Debug, Clone, Copy)]
pub struct VipView<'a> {
    /// Members seen alive, this node included.
    pub alive: &'a [Candidate],
    /// Majority of the configured fleet size.
    pub quorum: usize,
    /// Whether this node's gateway is ready.
    pub gateway_ready: bool,
    /// Whether the address answers a probe (the caller probes when
    /// [`VipOwnership::wants_probe`] says so; `false` otherwise).
    pub address_answers: bool,
}

/// What the caller does with the address after a tick or a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipAction {
    /// Nothing changes.
    None,
    /// Add the address to the interface and announce it (gratuitous ARP).
    Claim,
    /// Remove the address now, then send `release` to the members.
    Release,
}

/// Result of a tick: the address action and the heartbeat to send to every member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Address action.
    pub action: VipAction,
    /// Sequence number of a heartbeat to send, if any.
    pub heartbeat: Option<Heartbeat>,
}

/// A heartbeat to send (or received).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Sequence number (per sender).
    pub seq: u64,
    /// True while the sender is claiming (does not hold the address yet).
    pub claiming: bool,
}

/// How to answer a received heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Send an ack for the heartbeat's `seq`.
    pub ack: bool,
    /// Address action (a conflict with another holder).
    pub action: VipAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Follower,
    Claiming {
        since: Instant,
    },
    Holder {
        since: Instant,
    },
    /// Held the address through a pause of this process and asks a quorum to confirm it.
    Reasserting {
        since: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RemoteLease {
    holder: String,
    until: Instant,
}

const SENT_KEPT: usize = 64;

/// The ownership state of one VIP on one node.
#[derive(Debug, Clone)]
pub struct VipOwnership {
    vip: String,
    zone: Option<String>,
    me: String,
    timing: LeaseTiming,
    role: Role,
    next_seq: u64,
    sent: VecDeque<(u64, Instant)>,
    acked: BTreeMap<String, Instant>,
    remote: Option<RemoteLease>,
    last_tick: Option<Instant>,
    /// When the last holder said it released the address.
    released_at: Option<Instant>,
    /// Why this node last gave the address up.
    last_release: Option<ReleaseReason>,
}

// === impl VipOwnership ===

impl VipOwnership {
    /// Ownership of `vip` (its name in messages, e.g. the address) on node `me`; with a
    /// `zone`, only members of that zone may hold it.
    pub fn new(vip: &str, zone: Option<&str>, me: &str, timing: LeaseTiming) -> Self {
        Self {
            vip: vip.to_owned(),
            zone: zone.map(str::to_owned),
            me: me.to_owned(),
            timing,
            role: Role::Follower,
            next_seq: 1,
            sent: VecDeque::new(),
            acked: BTreeMap::new(),
            remote: None,
            last_tick: None,
            released_at: None,
            last_release: None,
        }
    }

    /// The VIP's name.
    pub fn vip(&self) -> &str {
        &self.vip
    }

    /// True while this node holds the address.
    pub fn is_holder(&self) -> bool {
        matches!(self.role, Role::Holder { .. } | Role::Reasserting { .. })
    }

    /// The holder this node knows of: itself, or the node whose lease it granted last.
    pub fn holder(&self) -> Option<&str> {
        if self.is_holder() {
            return Some(&self.me);
        }
        self.remote.as_ref().map(|r| r.holder.as_str())
    }

    /// True when this node would claim within `probe_lead` unless the address answers: the
    /// caller then probes the address and reports it as [`VipView::address_answers`].
    pub fn wants_probe(&self, now: Instant, view: &VipView<'_>) -> bool {
        let soon = now + self.timing.probe_lead;
        self.role == Role::Follower
            && !self.just_released(now)
            && self.should_claim(soon, view, view.alive.len() >= view.quorum)
    }

    /// When the lease this node knows of ends for a claim (`until + claim_margin`), while
    /// it follows one: the caller ticks right then instead of at the next interval.
    pub fn claim_possible_at(&self) -> Option<Instant> {
        let r = self
            .remote
            .as_ref()
            .filter(|_| self.role == Role::Follower)?;
        Some(r.until + self.timing.claim_margin)
    }

    /// True while this node claims the address (waits for a quorum of acks).
    pub fn is_claiming(&self) -> bool {
        matches!(self.role, Role::Claiming { .. })
    }

    /// Advances the protocol; call every `renew_every`.
    pub fn tick(&mut self, now: Instant, view: &VipView<'_>) -> Tick {
        let quorate = view.alive.len() >= view.quorum;
        // This process did not run for two heartbeats: a lease that lapsed meanwhile lapsed
        // for want of heartbeats this node did not send, not for want of acks.
        let paused = self
            .last_tick
            .is_some_and(|t| now.saturating_duration_since(t) > 2 * self.timing.renew_every);
        self.last_tick = Some(now);
        match self.role {
            Role::Holder { .. } => {
                let valid = self.valid_until(view).is_some_and(|until| now < until);
                if !view.gateway_ready || !quorate {
                    return self.give_up(ReleaseReason::unfit(view.gateway_ready));
                }
                if !valid && paused {
                    self.role = Role::Reasserting { since: now };
                    let hb = self.send(now, true);
                    return self.action(VipAction::None, Some(hb));
                }
                if !valid {
                    return self.give_up(ReleaseReason::LeaseLapsed);
                }
                let hb = self.send(now, false);
                self.action(VipAction::None, Some(hb))
            }
            Role::Reasserting { since } => {
                if !view.gateway_ready || !quorate {
                    return self.give_up(ReleaseReason::unfit(view.gateway_ready));
                }
                if self.valid_until(view).is_some_and(|until| now < until) {
                    self.role = Role::Holder { since };
                    let hb = self.send(now, false);
                    return self.action(VipAction::None, Some(hb));
                }
                if now.saturating_duration_since(since) >= self.timing.claim_timeout {
                    return self.give_up(ReleaseReason::PauseUnconfirmed);
                }
                let hb = self.send(now, true);
                self.action(VipAction::None, Some(hb))
            }
            Role::Claiming { since } => {
                if !view.gateway_ready || !quorate {
                    self.become_follower();
                    return self.action(VipAction::None, None);
                }
                if self.valid_until(view).is_some_and(|until| now < until) {
                    self.role = Role::Holder { since: now };
                    let hb = self.send(now, false);
                    return self.action(VipAction::Claim, Some(hb));
                }
                if now.saturating_duration_since(since) >= self.timing.claim_timeout {
                    self.become_follower();
                    return self.action(VipAction::None, None);
                }
                let hb = self.send(now, true);
                self.action(VipAction::None, Some(hb))
            }
            Role::Follower => {
                let answers = view.address_answers && !self.just_released(now);
                if answers || !self.should_claim(now, view, quorate) {
                    return self.action(VipAction::None, None);
                }
                self.role = Role::Claiming { since: now };
                self.remote = None;
                let hb = self.send(now, true);
                self.action(VipAction::None, Some(hb))
            }
        }
    }

    /// Handles a heartbeat from `from`; the caller acks it when told to.
    pub fn on_heartbeat(&mut self, now: Instant, from: &str, hb: Heartbeat) -> Reply {
        let refuse = |action| Reply { ack: false, action };
        if from == self.me {
            return refuse(VipAction::None);
        }
        let other_live = self
            .remote
            .as_ref()
            .is_some_and(|r| r.holder != from && now < r.until + self.timing.claim_margin);
        if other_live {
            return refuse(VipAction::None);
        }
        match self.role {
            Role::Holder { .. } | Role::Reasserting { .. } if hb.claiming => {
                return refuse(VipAction::None)
            }
            Role::Reasserting { .. } => {
                // A renewing holder exists: this node's pause cost it the address.
                self.give_up(ReleaseReason::RenewedElsewhere);
                return refuse(VipAction::Release);
            }
            Role::Holder { .. } => {
                // Two holders must never happen; if it does, the lower weight yields now.
                if self.weight(from) > self.weight(&self.me) {
                    self.give_up(ReleaseReason::SecondHolder);
                    return refuse(VipAction::Release);
                }
                return refuse(VipAction::None);
            }
            Role::Claiming { .. } if hb.claiming && self.weight(from) < self.weight(&self.me) => {
                return refuse(VipAction::None);
            }
            Role::Claiming { .. } => self.become_follower(),
            Role::Follower => {}
        }
        self.remote = Some(RemoteLease {
            holder: from.to_owned(),
            until: now + self.timing.lease,
        });
        Reply {
            ack: true,
            action: VipAction::None,
        }
    }

    /// Handles an ack of heartbeat `seq` from `from`.
    pub fn on_ack(&mut self, from: &str, seq: u64) {
        if self.role == Role::Follower || from == self.me {
            return;
        }
        if let Some(&(_, sent_at)) = self.sent.iter().find(|(s, _)| *s == seq) {
            let entry = self.acked.entry(from.to_owned()).or_insert(sent_at);
            *entry = (*entry).max(sent_at);
        }
    }

    /// Handles a release from `from`: its lease ends now, and since a holder removes the
    /// address before it says so, a claim within the next lease needs no probe.
    pub fn on_release(&mut self, now: Instant, from: &str) {
        if self.remote.as_ref().is_some_and(|r| r.holder == from) {
            self.remote = None;
            self.released_at = Some(now);
        }
    }

    /// Handles the membership declaring `node` dead: its lease ends after `claim_margin`.
    pub fn on_member_down(&mut self, now: Instant, node: &str) {
        if let Some(r) = self.remote.as_mut().filter(|r| r.holder == node) {
            r.until = r.until.min(now + self.timing.claim_margin);
        }
        self.acked.remove(node);
    }

    // === private ===

    fn just_released(&self, now: Instant) -> bool {
        self.released_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.timing.lease)
    }

    fn should_claim(&self, now: Instant, view: &VipView<'_>, quorate: bool) -> bool {
        if !view.gateway_ready || !quorate {
            return false;
        }
        if let Some(r) = &self.remote {
            if now < r.until + self.timing.claim_margin {
                return false;
            }
        }
        let parts = [self.vip.as_str()];
        let ready = view
            .alive
            .iter()
            .filter(|c| c.gateway_ready && self.zone.as_ref().is_none_or(|z| *z == c.zone))
            .filter(|c| self.remote.as_ref().is_none_or(|r| r.holder != c.node))
            .map(|c| c.node.as_str());
        rendezvous::choose(&parts, ready) == Some(self.me.as_str())
    }

    /// End of the lease a quorum (this node included) has granted, minus the margin.
    fn valid_until(&self, view: &VipView<'_>) -> Option<Instant> {
        let mine = self.sent.back().map(|(_, at)| *at)?;
        let mut times: Vec<Instant> = view
            .alive
            .iter()
            .filter(|c| c.node != self.me)
            .filter_map(|c| self.acked.get(&c.node).copied())
            .collect();
        times.push(mine);
        times.sort_unstable_by(|a, b| b.cmp(a));
        let granted = *times.get(view.quorum.checked_sub(1)?)?;
        Some(granted + self.timing.lease - self.timing.holder_margin)
    }

    fn send(&mut self, now: Instant, claiming: bool) -> Heartbeat {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.sent.push_back((seq, now));
        if self.sent.len() > SENT_KEPT {
            self.sent.pop_front();
        }
        Heartbeat { seq, claiming }
    }

    fn become_follower(&mut self) {
        self.role = Role::Follower;
        self.sent.clear();
        self.acked.clear();
    }

    /// Why this node last gave the address up (for the caller's metric).
    pub fn last_release(&self) -> Option<ReleaseReason> {
        self.last_release
    }

    /// Becomes a follower and releases the address, saying why.
    fn give_up(&mut self, reason: ReleaseReason) -> Tick {
        info!(vip = %self.vip, reason = reason.describe(), "giving the virtual IP up");
        self.last_release = Some(reason);
        self.become_follower();
        self.action(VipAction::Release, None)
    }

    fn weight(&self, node: &str) -> u64 {
        rendezvous::weight(&[&self.vip], node)
    }

    fn action(&self, action: VipAction, heartbeat: Option<Heartbeat>) -> Tick {
        Tick { action, heartbeat }
    }
}

#[cfg(test)]
mod tests;
