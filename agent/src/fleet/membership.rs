//! Fleet membership: SWIM failure detection by `foca` over UDP, every packet in an
//! authenticated envelope ([`envelope`]), plus the fleet's own messages (node state, VIP
//! leases) on the same socket.
//!
//! The driver is a plain struct polled by the fleet task: [`Membership::next`] waits for a
//! packet or a foca timer and returns the next [`Event`]. Forged, truncated or replayed
//! packets change nothing: they are dropped before foca or the fleet sees them, counted in
//! `meshedge_agent_gossip_rejected_total{reason}`.

pub mod envelope;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use rand_foca::rngs::StdRng;
use rand_foca::SeedableRng;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::metrics as m;
use super::policy::GatewayState;
use envelope::{Kind, Opener, Sealer};

/// A member's identity in SWIM: node, zone, gossip address, and a generation that grows
/// when the node rejoins after being declared down.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Node name.
    pub node: String,
    /// Zone.
    pub zone: String,
    /// Gossip UDP address.
    pub addr: SocketAddr,
    /// Rejoin generation.
    pub generation: u64,
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: self.generation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// What a node advertises about itself, several times a second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// Zone.
    pub zone: String,
    /// May host a gateway.
    pub eligible: bool,
    /// Its gateway's state.
    pub gateway: GatewayState,
    /// Capacity it offers.
    pub capacity: u32,
    /// Where its gateway serves (for probes and DNS-SD), when it has one.
    pub serve_addr: Option<SocketAddr>,
    /// VIPs it holds.
    pub vips: Vec<String>,
    /// What its policy is doing, for `meshedge status`.
    pub policy: String,
}

/// A fleet message (inside an authenticated envelope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FleetMessage {
    /// The sender's state.
    State(NodeState),
    /// A VIP lease heartbeat (or claim).
    Lease {
        /// The VIP.
        vip: String,
        /// Sequence number.
        seq: u64,
        /// True while claiming.
        claiming: bool,
    },
    /// An ack of a lease heartbeat.
    Ack {
        /// The VIP.
        vip: String,
        /// The acked sequence number.
        seq: u64,
    },
    /// The sender removed the VIP from its interface.
    Release {
        /// The VIP.
        vip: String,
    },
}

/// What [`Membership::next`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An authenticated fleet message.
    Message {
        /// Sender node.
        from: String,
        /// Sender address.
        addr: SocketAddr,
        /// The message.
        msg: FleetMessage,
    },
    /// A member joined (or rejoined).
    Up(NodeIdentity),
    /// A member was declared down.
    Down(NodeIdentity),
    /// This node sees no other member: the caller re-announces to its seeds.
    Idle,
}

/// SWIM timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GossipConfig {
    /// Probe period.
    pub probe_period: Duration,
    /// Probe round-trip budget.
    pub probe_rtt: Duration,
    /// Suspicion before a member is declared down.
    pub suspect_to_down: Duration,
    /// Expected fleet size (tunes dissemination).
    pub expected_members: u32,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            probe_period: Duration::from_millis(250),
            probe_rtt: Duration::from_millis(100),
            suspect_to_down: Duration::from_millis(750),
            expected_members: 6,
        }
    }
}

/// Why membership failed to start.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// Binding the gossip socket failed.
    #[error("binding gossip socket {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The shared key is too short.
    #[error("gossip key must be at least 32 bytes, got {len}")]
    ShortKey {
        /// Its length.
        len: usize,
    },
}

type Swim = Foca<NodeIdentity, PostcardCodec, StdRng, NoCustomBroadcast>;

/// The membership driver of one node.
pub struct Membership {
    socket: UdpSocket,
    sender: std::net::UdpSocket,
    me: NodeIdentity,
    foca: Swim,
    runtime: AccumulatingRuntime<NodeIdentity>,
    timers: BTreeMap<(Instant, u64), Timer<NodeIdentity>>,
    timer_seq: u64,
    sealer: Sealer,
    opener: Opener,
    pending: VecDeque<Event>,
    buf: Vec<u8>,
}

// === impl Membership ===

impl Membership {
    /// Binds `me.addr` and starts SWIM with `key` (≥ 32 bytes) and `config`; `epoch` must
    /// grow across restarts of this node (e.g. its start time in ms).
    pub async fn bind(
        me: NodeIdentity,
        key: &[u8],
        config: GossipConfig,
        epoch: u64,
    ) -> Result<Self, MembershipError> {
        if key.len() < 32 {
            return Err(MembershipError::ShortKey { len: key.len() });
        }
        let bind_err = |source| MembershipError::Bind {
            addr: me.addr,
            source,
        };
        // Sends go through a non-blocking std clone of the socket: a UDP send never waits.
        let std_socket = std::net::UdpSocket::bind(me.addr).map_err(bind_err)?;
        std_socket.set_nonblocking(true).map_err(bind_err)?;
        let sender = std_socket.try_clone().map_err(bind_err)?;
        let socket = UdpSocket::from_std(std_socket).map_err(bind_err)?;
        let mut me = me;
        if let Ok(local) = socket.local_addr() {
            me.addr = local;
        }
        let size = NonZeroU32::new(config.expected_members.max(1)).unwrap_or(NonZeroU32::MIN);
        let mut swim = foca::Config::new_lan(size);
        swim.probe_period = config.probe_period;
        swim.probe_rtt = config.probe_rtt;
        swim.suspect_to_down_after = config.suspect_to_down;
        swim.remove_down_after = Some(Duration::from_secs(30));
        let rng = StdRng::seed_from_u64(rand::random());
        let foca = Foca::new(me.clone(), swim, rng, PostcardCodec);
        info!(node = %me.node, addr = %me.addr, "gossip listening on {}", me.addr);
        Ok(Self {
            socket,
            sender,
            sealer: Sealer::new(key, &me.node, epoch),
            opener: Opener::new(key),
            me,
            foca,
            runtime: AccumulatingRuntime::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            pending: VecDeque::new(),
            buf: vec![0; 65536],
        })
    }

    /// This node's identity (with the bound address).
    pub fn me(&self) -> &NodeIdentity {
        &self.me
    }

    /// Announces this node to `seeds` (their gossip addresses).
    pub fn join(&mut self, seeds: &[SocketAddr]) {
        for &addr in seeds.iter().filter(|a| **a != self.me.addr) {
            let seed = NodeIdentity {
                node: String::new(),
                zone: String::new(),
                addr,
                generation: 0,
            };
            if let Err(e) = self.foca.announce(seed, &mut self.runtime) {
                debug!(%addr, error = %e, "announce failed");
            }
        }
        self.flush();
    }

    /// The members seen alive (or suspected), this node excluded.
    pub fn members(&self) -> Vec<NodeIdentity> {
        self.foca.iter_members().map(|m| m.id().clone()).collect()
    }

    /// Sends `msg` to `addr`.
    pub fn send(&mut self, addr: SocketAddr, msg: &FleetMessage) {
        match postcard::to_allocvec(msg) {
            Ok(body) => {
                let packet = self.sealer.seal(Kind::Fleet, &body);
                self.send_raw(addr, &packet);
            }
            Err(e) => warn!(error = %e, "encoding a fleet message failed"),
        }
    }

    /// Sends `msg` to every member seen alive.
    pub fn broadcast(&mut self, msg: &FleetMessage) {
        let addrs: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        for addr in addrs {
            self.send(addr, msg);
        }
    }

    /// Waits for the next event (cancel-safe).
    pub async fn next(&mut self) -> Event {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return event;
            }
            let deadline = self.timers.keys().next().map(|(at, _)| *at);
            tokio::select! {
                received = self.socket.recv_from(&mut self.buf) => match received {
                    Ok((len, from)) => self.on_packet(len, from),
                    Err(e) => debug!(error = %e, "gossip receive failed"),
                },
                _ = sleep_until(deadline) => self.fire_timers(),
            }
        }
    }

    fn on_packet(&mut self, len: usize, from: SocketAddr) {
        let packet = self.buf[..len].to_vec();
        let opened = match self.opener.open(&packet) {
            Ok(opened) => opened,
            Err(reason) => {
                metrics::counter!(m::GOSSIP_REJECTED_TOTAL, "reason" => reason.as_str())
                    .increment(1);
                debug!(%from, %reason, "gossip packet rejected");
                return;
            }
        };
        match opened.kind {
            Kind::Swim => {
                if let Err(e) = self.foca.handle_data(opened.body, &mut self.runtime) {
                    metrics::counter!(m::GOSSIP_REJECTED_TOTAL, "reason" => "decode").increment(1);
                    debug!(%from, error = %e, "SWIM packet refused");
                } else {
                    metrics::counter!(m::GOSSIP_RECEIVED_TOTAL, "kind" => "swim").increment(1);
                }
                self.flush();
            }
            Kind::Fleet => match postcard::from_bytes::<FleetMessage>(opened.body) {
                Ok(msg) => {
                    metrics::counter!(m::GOSSIP_RECEIVED_TOTAL, "kind" => kind_label(&msg))
                        .increment(1);
                    self.pending.push_back(Event::Message {
                        from: opened.sender,
                        addr: from,
                        msg,
                    });
                }
                Err(e) => {
                    metrics::counter!(m::GOSSIP_REJECTED_TOTAL, "reason" => "decode").increment(1);
                    debug!(%from, error = %e, "fleet message did not decode");
                }
            },
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                debug!(error = %e, "SWIM timer");
            }
        }
        self.flush();
    }

    /// Sends what foca queued, schedules its timers, turns notifications into events.
    fn flush(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            let packet = self.sealer.seal(Kind::Swim, &data);
            self.send_raw(to.addr, &packet);
        }
        let now = Instant::now();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timer_seq += 1;
            self.timers.insert((now + after, self.timer_seq), timer);
        }
        while let Some(note) = self.runtime.to_notify() {
            let event = match note {
                OwnedNotification::MemberUp(id) => Event::Up(id),
                OwnedNotification::Rename(_, id) => Event::Up(id),
                OwnedNotification::MemberDown(id) => Event::Down(id),
                OwnedNotification::Idle => Event::Idle,
                OwnedNotification::Defunct => {
                    warn!(node = %self.me.node, "declared down by the cluster; rejoining");
                    Event::Idle
                }
                _ => continue,
            };
            if let Event::Up(id) | Event::Down(id) = &event {
                info!(node = %id.node, zone = %id.zone, up = matches!(event, Event::Up(_)), "membership change");
            }
            self.pending.push_back(event);
        }
        metrics::gauge!(m::GOSSIP_MEMBERS).set(self.foca.iter_members().count() as f64 + 1.0);
    }

    fn send_raw(&self, addr: SocketAddr, packet: &[u8]) {
        if let Err(e) = self.sender.send_to(packet, addr) {
            debug!(%addr, error = %e, "gossip send failed");
        }
    }
}

fn kind_label(msg: &FleetMessage) -> &'static str {
    match msg {
        FleetMessage::State(_) => "state",
        FleetMessage::Lease { .. } => "lease",
        FleetMessage::Ack { .. } => "ack",
        FleetMessage::Release { .. } => "release",
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
