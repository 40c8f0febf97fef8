//! Gateway placement: which agent starts, keeps or drains a gateway so that every zone has
//! `min_per_zone` ready gateways. Pure: the caller passes the membership view and `now`.
//!
//! # The rule
//!
//! For this agent's zone, with the members the agent currently sees alive (itself
//! included):
//!
//! - *covering* gateways are those `Starting` or `Ready`; the *deficit* is
//!   `min_per_zone - covering` (never negative).
//! - *Candidates* are members of the zone that are eligible, advertise a capacity above 0
//!   and whose gateway is `Stopped`. (`Down` means "crash-looped, gave up": such a node is
//!   no candidate until its supervisor recovers; `Draining` is on its way out.)
//! - For deficit slot `s` in `0..deficit`, the candidate with the highest rendezvous weight
//!   of `(zone, "start", s, node)` not already picked for an earlier slot takes the slot.
//!   Every agent computes the same picks from the same view, so exactly one agent acts per
//!   missing gateway.
//! - Hysteresis: the picked agent starts only once the zone's deficit has lasted
//!   `start_delay` (as seen by this agent). A flapping member does not start gateways.
//! - Surplus: when more than `min_per_zone` gateways are `Ready`, the ready members are
//!   ranked by the weight of `(zone, "keep", node)`; the first `min_per_zone` keep theirs,
//!   the others drain once the surplus has lasted `drain_delay`. `Starting` gateways never
//!   count towards a surplus, so a drain never takes the zone below its target.
//!
//! Views may differ between agents for a moment (gossip is eventually consistent): two
//! agents may then both start; the surplus rule removes the extra one after `drain_delay`.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::rendezvous;

/// Lifecycle of a node's gateway, as its agent advertises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GatewayState {
    /// No gateway process (the node is standby capacity).
    Stopped,
    /// Started, not ready yet.
    Starting,
    /// Serving: its readiness endpoint answers 200.
    Ready,
    /// Being stopped (SIGTERM sent, connections draining).
    Draining,
    /// Crash-looping: the supervisor gave up for now.
    Down,
}

impl GatewayState {
    /// True for `Starting` and `Ready`: the gateway counts towards the zone's target.
    pub fn is_covering(self) -> bool {
        matches!(self, GatewayState::Starting | GatewayState::Ready)
    }

    /// Lowercase name for logs, status tables and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayState::Stopped => "stopped",
            GatewayState::Starting => "starting",
            GatewayState::Ready => "ready",
            GatewayState::Draining => "draining",
            GatewayState::Down => "down",
        }
    }

    /// The value of the gateway-state gauge.
    pub fn as_gauge(self) -> f64 {
        match self {
            GatewayState::Stopped => 0.0,
            GatewayState::Starting => 1.0,
            GatewayState::Ready => 2.0,
            GatewayState::Draining => 3.0,
            GatewayState::Down => 4.0,
        }
    }
}

impl fmt::Display for GatewayState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member as the membership layer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Node name.
    pub node: String,
    /// Zone of the node.
    pub zone: String,
    /// Whether the node may host a gateway.
    pub eligible: bool,
    /// Its gateway's state.
    pub gateway: GatewayState,
    /// Capacity it advertises (0: cannot take a gateway now).
    pub capacity: u32,
    /// Membership incarnation (higher is newer).
    pub incarnation: u64,
}

/// The placement settings of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementConfig {
    /// Ready gateways wanted in every zone.
    pub min_per_zone: usize,
    /// How long a deficit must last before the picked agent starts a gateway.
    pub start_delay: Duration,
    /// How long a surplus must last before the extra gateway drains.
    pub drain_delay: Duration,
}

/// What this agent should do with its gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayAction {
    /// Start a gateway.
    Start,
    /// Keep the running gateway.
    Keep,
    /// Drain and stop the running gateway.
    Drain,
    /// Nothing to do (no gateway, none wanted here).
    Idle,
}

/// Why the policy decided what it did (for `meshedge status` and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// This agent is not in its own view yet.
    NotInView,
    /// The zone has its target; this node is standby.
    Covered,
    /// This node is picked for a deficit that has not lasted `start_delay` yet.
    DeficitPending,
    /// This node is picked for a deficit that lasted `start_delay`.
    DeficitPicked,
    /// Another node is picked for the deficit.
    OtherPicked {
        /// The picked nodes.
        nodes: Vec<String>,
    },
    /// This node may not host a gateway, or its gateway is down or draining.
    NotCandidate,
    /// This node's gateway is one the zone needs.
    Needed,
    /// This node's gateway is extra, waiting for `drain_delay`.
    SurplusPending,
    /// This node's gateway is extra and drains.
    Surplus,
}

/// The decision for one agent, with the zone's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// What to do.
    pub action: GatewayAction,
    /// Why.
    pub reason: Reason,
    /// Ready gateways in the zone.
    pub ready: usize,
    /// Starting or ready gateways in the zone.
    pub covering: usize,
    /// The target (`min_per_zone`).
    pub target: usize,
}

/// The placement decisions of one agent, with the hysteresis state they need.
#[derive(Debug, Clone)]
pub struct PlacementPolicy {
    me: String,
    config: PlacementConfig,
    deficit_since: Option<Instant>,
    surplus_since: Option<Instant>,
}

// === impl PlacementPolicy ===

impl PlacementPolicy {
    /// The policy of agent `me`.
    pub fn new(me: impl Into<String>, config: PlacementConfig) -> Self {
        Self {
            me: me.into(),
            config,
            deficit_since: None,
            surplus_since: None,
        }
    }

    /// Decides for this agent from `members` (the live members, this agent included).
    pub fn decide(&mut self, now: Instant, members: &[MemberView]) -> Placement {
        let target = self.config.min_per_zone;
        let Some(me) = members.iter().find(|m| m.node == self.me) else {
            self.deficit_since = None;
            self.surplus_since = None;
            return Placement {
                action: GatewayAction::Idle,
                reason: Reason::NotInView,
                ready: 0,
                covering: 0,
                target,
            };
        };
        let zone: Vec<&MemberView> = members.iter().filter(|m| m.zone == me.zone).collect();
        let ready = zone
            .iter()
            .filter(|m| m.gateway == GatewayState::Ready)
            .count();
        let covering = zone.iter().filter(|m| m.gateway.is_covering()).count();
        let deficit = target.saturating_sub(covering);
        let surplus = ready.saturating_sub(target);
        track(&mut self.deficit_since, deficit > 0, now);
        track(&mut self.surplus_since, surplus > 0, now);
        let decided = |action, reason| Placement {
            action,
            reason,
            ready,
            covering,
            target,
        };

        match me.gateway {
            GatewayState::Ready if surplus > 0 => {
                let ranked = rendezvous::rank(
                    &[&me.zone, "keep"],
                    zone.iter()
                        .filter(|m| m.gateway == GatewayState::Ready)
                        .map(|m| m.node.as_str()),
                );
                if ranked[..target].contains(&me.node.as_str()) {
                    decided(GatewayAction::Keep, Reason::Needed)
                } else if elapsed(self.surplus_since, now) >= self.config.drain_delay {
                    decided(GatewayAction::Drain, Reason::Surplus)
                } else {
                    decided(GatewayAction::Keep, Reason::SurplusPending)
                }
            }
            GatewayState::Ready | GatewayState::Starting => {
                decided(GatewayAction::Keep, Reason::Needed)
            }
            GatewayState::Draining | GatewayState::Down => {
                decided(GatewayAction::Idle, Reason::NotCandidate)
            }
            GatewayState::Stopped if !is_candidate(me) => {
                decided(GatewayAction::Idle, Reason::NotCandidate)
            }
            GatewayState::Stopped if deficit == 0 => decided(GatewayAction::Idle, Reason::Covered),
            GatewayState::Stopped => {
                let picked = pick(&me.zone, deficit, &zone);
                if !picked.contains(&me.node.as_str()) {
                    let nodes = picked.iter().map(|n| n.to_string()).collect();
                    decided(GatewayAction::Idle, Reason::OtherPicked { nodes })
                } else if elapsed(self.deficit_since, now) >= self.config.start_delay {
                    decided(GatewayAction::Start, Reason::DeficitPicked)
                } else {
                    decided(GatewayAction::Idle, Reason::DeficitPending)
                }
            }
        }
    }
}

fn is_candidate(m: &MemberView) -> bool {
    m.eligible && m.capacity > 0 && m.gateway == GatewayState::Stopped
}

/// The candidates picked for `deficit` slots of `zone`, one per slot.
fn pick<'a>(zone: &str, deficit: usize, members: &[&'a MemberView]) -> Vec<&'a str> {
    let mut left: Vec<&str> = members
        .iter()
        .filter(|m| is_candidate(m))
        .map(|m| m.node.as_str())
        .collect();
    let mut picked = Vec::new();
    for slot in 0..deficit {
        let slot = slot.to_string();
        let Some(node) = rendezvous::choose(&[zone, "start", &slot], left.iter().copied()) else {
            break;
        };
        left.retain(|n| *n != node);
        picked.push(node);
    }
    picked
}

fn track(since: &mut Option<Instant>, active: bool, now: Instant) {
    match (active, *since) {
        (true, None) => *since = Some(now),
        (false, Some(_)) => *since = None,
        _ => {}
    }
}

fn elapsed(since: Option<Instant>, now: Instant) -> Duration {
    since.map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
}

#[cfg(test)]
mod tests;
