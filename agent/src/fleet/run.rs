//! The fleet task: membership, placement, supervision, DNS-SD advertising and VIPs wired
//! together. It prints one line per fleet event on stdout (`fleet: ...`) for operators and
//! process tests, and logs the same through tracing.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{interval, Instant, MissedTickBehavior};
use tracing::{info, warn};

use super::advertise::{AdvertiseError, Advertiser};
use super::config::{ConfigError, FleetConfig, VipConfig};
use super::lease::{Candidate, Heartbeat, LeaseTiming, VipAction, VipOwnership, VipView};
use super::membership::{
    Event, FleetMessage, GossipConfig, Membership, MembershipError, NodeIdentity, NodeState,
};
use super::metrics as m;
use super::policy::{GatewayAction, GatewayState, MemberView, PlacementConfig, PlacementPolicy};
use super::status::{self, FleetStatus, MemberStatus, VipStatus};
use super::supervisor::{GatewaySpec, Supervisor, SupervisorConfig};
use super::vip_probe::{ProbeResult, VipProbes};
use super::{rendezvous, vip};

/// Longest time between two broadcasts of an unchanged node state.
const STATE_REFRESH: Duration = Duration::from_secs(2);

/// `meshedge fleet` / the agent's fleet role: the flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// Fleet config file (TOML; see `meshedge_agent::fleet::config`).
    #[arg(long = "config")]
    pub config: PathBuf,
}

/// Why the fleet role stopped.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The config is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Membership could not start.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// DNS-SD advertising could not be set up.
    #[error(transparent)]
    Advertise(#[from] AdvertiseError),
    /// The agent's own executable is unknown (for the default gateway command).
    #[error("locating the agent executable")]
    CurrentExe(#[source] std::io::Error),
}

/// Runs the fleet role with `args` until `shutdown` completes; then releases its VIPs,
/// withdraws its DNS-SD record and drains its gateway.
pub async fn run_fleet(
    args: FleetArgs,
    shutdown: impl Future<Output = ()>,
) -> Result<(), FleetError> {
    let config = FleetConfig::load(&args.config)?;
    m::describe();
    let mut fleet = Fleet::try_new(config).await?;
    fleet.run(shutdown).await;
    Ok(())
}

struct Peer {
    state: NodeState,
}

struct Fleet {
    config: FleetConfig,
    membership: Membership,
    supervisor: Supervisor,
    spec: GatewaySpec,
    placement: PlacementPolicy,
    vips: Vec<(VipConfig, VipOwnership)>,
    /// Probes of the VIPs before a claim.
    probes: VipProbes,
    probe_results: mpsc::UnboundedReceiver<ProbeResult>,
    peers: HashMap<String, Peer>,
    advertiser: Option<Advertiser>,
    advertised: bool,
    gateway: GatewayState,
    /// The running gateway's VIP fence device.
    fence: Option<String>,
    wanted: bool,
    note: String,
    written: Option<(FleetStatus, Instant)>,
    /// The state last broadcast and when.
    broadcast: Option<(NodeState, Instant)>,
}

impl Fleet {
    async fn try_new(config: FleetConfig) -> Result<Self, FleetError> {
        let key = config.read_key()?;
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let me = NodeIdentity {
            node: config.node.clone(),
            zone: config.zone.clone(),
            addr: config.listen,
            generation: epoch,
        };
        let gossip = GossipConfig {
            probe_period: config.probe_period,
            probe_rtt: config.probe_period.min(Duration::from_millis(100)),
            suspect_to_down: config.suspect_to_down,
            expected_members: config.expected_members,
        };
        let mut membership = Membership::bind(me, &key, gossip, epoch).await?;
        println!("fleet listening on {}", membership.me().addr);
        membership.join(&config.peers);
        let program_args = match &config.gateway.command {
            Some(cmd) => cmd.clone(),
            None => {
                let exe = std::env::current_exe().map_err(FleetError::CurrentExe)?;
                let edge = config.gateway.config.clone().unwrap_or_default();
                vec![
                    exe.display().to_string(),
                    "edge".into(),
                    "--config".into(),
                    edge.display().to_string(),
                ]
            }
        };
        let spec = GatewaySpec {
            program: program_args[0].clone().into(),
            args: program_args[1..].to_vec(),
            ready_addr: config.gateway.ready,
            ready_path: config.gateway.ready_path.clone(),
        };
        let placement = PlacementPolicy::new(
            config.node.clone(),
            PlacementConfig {
                min_per_zone: config.min_per_zone,
                start_delay: config.start_delay,
                drain_delay: config.drain_delay,
            },
        );
        let vips = config
            .vip
            .iter()
            .map(|v| {
                let name = v.address.to_string();
                let own = VipOwnership::new(
                    &name,
                    v.zone.as_deref(),
                    &config.node,
                    LeaseTiming::for_lease(config.vip_lease),
                );
                (v.clone(), own)
            })
            .collect();
        let advertiser = config.dns.as_ref().map(Advertiser::try_new).transpose()?;
        let timing = LeaseTiming::for_lease(config.vip_lease);
        let supervision = SupervisorConfig {
            fence: config.vip.iter().any(|v| v.fence),
            ..SupervisorConfig::default()
        };
        // A gateway that answers its own readiness probe in time is alive: a survivor's
        // probe waits as long for it before calling the address unserved.
        let (probes, probe_results) = VipProbes::new(
            config.vip.len(),
            timing.probe_timeout,
            supervision.probe_timeout,
        );
        Ok(Self {
            supervisor: Supervisor::spawn(supervision),
            fence: None,
            probes,
            probe_results,
            config,
            membership,
            spec,
            placement,
            vips,
            peers: HashMap::new(),
            advertiser,
            advertised: false,
            gateway: GatewayState::Stopped,
            wanted: false,
            note: String::new(),
            written: None,
            broadcast: None,
        })
    }

    async fn run(&mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut status = self.supervisor.status();
        let mut policy = interval(Duration::from_millis(100));
        let mut lease = interval(LeaseTiming::for_lease(self.config.vip_lease).renew_every);
        let mut state = interval(Duration::from_millis(200));
        let mut announce = interval(Duration::from_secs(1));
        for t in [&mut policy, &mut lease, &mut state, &mut announce] {
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        loop {
            let claim_at = self.next_claim_moment();
            tokio::select! {
                _ = &mut shutdown => break,
                _ = sleep_until(claim_at) => self.on_lease().await,
                event = self.membership.next() => self.on_event(event).await,
                _ = policy.tick() => self.on_policy(),
                _ = lease.tick(), if !self.vips.is_empty() => self.on_lease().await,
                Some(result) = self.probe_results.recv() => {
                    let i = result.0;
                    self.probes.record(result);
                    if !self.vips[i].1.is_holder() {
                        let alive = self.candidates();
                        self.tick_vip(i, &alive).await;
                    }
                }
                _ = state.tick() => {
                    self.broadcast_state();
                    self.write_status();
                }
                _ = announce.tick() => {
                    if self.membership.members().is_empty() {
                        self.membership.join(&self.config.peers);
                    }
                }
                Ok(()) = status.changed() => {
                    let now = status.borrow_and_update().clone();
                    self.fence = now.fence.clone();
                    self.on_gateway(now.state, now.pid).await;
                }
            }
        }
        info!("fleet role stopping");
        for i in 0..self.vips.len() {
            if self.vips[i].1.is_holder() {
                self.release(i, "shutdown").await;
            }
        }
        self.unadvertise().await;
        let _ = self.supervisor.stop().await;
    }

    async fn on_event(&mut self, event: Event) {
        let now = Instant::now().into_std();
        match event {
            Event::Message { from, addr, msg } => match msg {
                FleetMessage::State(state) => {
                    self.peers.insert(from, Peer { state });
                }
                FleetMessage::Lease { vip, seq, claiming } => {
                    let Some(i) = self.vip_index(&vip) else {
                        return;
                    };
                    let reply =
                        self.vips[i]
                            .1
                            .on_heartbeat(now, &from, Heartbeat { seq, claiming });
                    if reply.ack {
                        self.membership.send(addr, &FleetMessage::Ack { vip, seq });
                    }
                    if reply.action == VipAction::Release {
                        self.release(i, self.release_reason(i)).await;
                    }
                }
                FleetMessage::Ack { vip, seq } => {
                    if let Some(i) = self.vip_index(&vip) {
                        self.vips[i].1.on_ack(&from, seq);
                        if self.vips[i].1.is_claiming() {
                            // Claim as soon as a quorum acked, not at the next tick.
                            let alive = self.candidates();
                            self.tick_vip(i, &alive).await;
                        }
                    }
                }
                FleetMessage::Release { vip } => {
                    if let Some(i) = self.vip_index(&vip) {
                        self.vips[i].1.on_release(now, &from);
                    }
                }
            },
            Event::Down(id) => {
                println!("fleet: member {} down", id.node);
                for (_, own) in &mut self.vips {
                    own.on_member_down(now, &id.node);
                }
                if let Some(dead) = self.peers.remove(&id.node) {
                    self.withdraw_dead(&id.node, dead).await;
                }
            }
            Event::Up(id) => {
                println!("fleet: member {} up", id.node);
                // It has not heard our state yet: send it on the next tick.
                self.broadcast = None;
            }
            Event::Idle => self.membership.join(&self.config.peers),
        }
    }

    /// The live members with a known state, this node first.
    fn view(&self) -> Vec<MemberView> {
        let mut view = vec![MemberView {
            node: self.config.node.clone(),
            zone: self.config.zone.clone(),
            eligible: self.config.eligible,
            gateway: self.gateway,
            capacity: self.config.capacity,
            incarnation: 0,
        }];
        for id in self.membership.members() {
            if let Some(peer) = self.peers.get(&id.node) {
                view.push(MemberView {
                    node: id.node.clone(),
                    zone: peer.state.zone.clone(),
                    eligible: peer.state.eligible,
                    gateway: peer.state.gateway,
                    capacity: peer.state.capacity,
                    incarnation: id.generation,
                });
            }
        }
        view
    }

    fn on_policy(&mut self) {
        let decision = self
            .placement
            .decide(Instant::now().into_std(), &self.view());
        self.note = format!("{:?} ({:?})", decision.action, decision.reason);
        match decision.action {
            GatewayAction::Start if !self.wanted => {
                self.wanted = true;
                println!("fleet: starting gateway ({:?})", decision.reason);
                metrics::counter!(m::FLEET_ACTIONS_TOTAL, "action" => "start").increment(1);
                let (sup, spec) = (self.supervisor.clone(), self.spec.clone());
                tokio::spawn(async move { sup.start(spec).await });
            }
            GatewayAction::Drain if self.wanted => {
                self.wanted = false;
                println!("fleet: draining gateway ({:?})", decision.reason);
                metrics::counter!(m::FLEET_ACTIONS_TOTAL, "action" => "drain").increment(1);
                let sup = self.supervisor.clone();
                tokio::spawn(async move { sup.stop().await });
            }
            _ => {}
        }
    }

    async fn on_gateway(&mut self, state: GatewayState, pid: Option<u32>) {
        if state != self.gateway {
            println!("fleet: gateway {state} pid {}", pid.unwrap_or(0));
        }
        self.gateway = state;
        self.broadcast_state();
        if state == GatewayState::Ready && !self.advertised {
            if let Some(adv) = &self.advertiser {
                adv.register(
                    &self.config.node,
                    &self.config.zone,
                    self.config.gateway.serve,
                )
                .await;
                println!("fleet: advertised {}", self.config.node);
            }
            self.advertised = true;
        } else if state != GatewayState::Ready {
            self.unadvertise().await;
        }
    }

    async fn unadvertise(&mut self) {
        if !std::mem::take(&mut self.advertised) {
            return;
        }
        if let Some(adv) = &self.advertiser {
            let c = &self.config;
            adv.withdraw("deregister", &c.node, &c.zone, c.gateway.serve)
                .await;
            println!("fleet: withdrew {}", c.node);
        }
    }

    /// A dead member's record is withdrawn by the live member with the highest weight.
    async fn withdraw_dead(&mut self, node: &str, dead: Peer) {
        let live: Vec<String> = self.view().into_iter().map(|v| v.node).collect();
        let chosen = rendezvous::choose(&["withdraw", node], live.iter().map(String::as_str));
        if chosen != Some(self.config.node.as_str()) {
            return;
        }
        if let (Some(adv), Some(serve)) = (&self.advertiser, dead.state.serve_addr) {
            adv.withdraw("withdraw", node, &dead.state.zone, serve)
                .await;
            println!("fleet: withdrew dead {node}");
        }
    }

    /// Sends this node's state to every member when it changed, when a member joined, and
    /// at least every [`STATE_REFRESH`] (a lost datagram is repaired by the next one).
    fn broadcast_state(&mut self) {
        let state = NodeState {
            zone: self.config.zone.clone(),
            eligible: self.config.eligible,
            gateway: self.gateway,
            capacity: self.config.capacity,
            serve_addr: Some(self.config.gateway.serve),
            vips: self.held_vips(),
            policy: self.note.clone(),
        };
        if let Some((last, at)) = &self.broadcast {
            if *last == state && at.elapsed() < STATE_REFRESH {
                return;
            }
        }
        self.membership
            .broadcast(&FleetMessage::State(state.clone()));
        self.broadcast = Some((state, Instant::now()));
    }

    /// The VIPs this node holds.
    fn held_vips(&self) -> Vec<String> {
        self.vips
            .iter()
            .filter(|(_, o)| o.is_holder())
            .map(|(_, o)| o.vip().to_owned())
            .collect()
    }

    /// The fleet as this node sees it, for `status_file`.
    fn status(&self) -> FleetStatus {
        let me = MemberStatus {
            node: self.config.node.clone(),
            zone: self.config.zone.clone(),
            state: "alive",
            gateway: self.gateway,
            eligible: self.config.eligible,
            capacity: self.config.capacity,
            serve: Some(self.config.gateway.serve.to_string()),
            vips: self.held_vips(),
            policy: self.note.clone(),
            local: true,
        };
        let mut members = vec![me];
        for id in self.membership.members() {
            if let Some(peer) = self.peers.get(&id.node) {
                let s = &peer.state;
                members.push(MemberStatus {
                    node: id.node.clone(),
                    zone: s.zone.clone(),
                    state: "alive",
                    gateway: s.gateway,
                    eligible: s.eligible,
                    capacity: s.capacity,
                    serve: s.serve_addr.map(|a| a.to_string()),
                    vips: s.vips.clone(),
                    policy: s.policy.clone(),
                    local: false,
                });
            }
        }
        members[1..].sort_by(|a, b| (&a.zone, &a.node).cmp(&(&b.zone, &b.node)));
        let vips = self
            .vips
            .iter()
            .map(|(cfg, own)| {
                let address = cfg.address.to_string();
                let holder = members
                    .iter()
                    .find(|m| m.vips.contains(&address))
                    .map(|m| m.node.clone());
                VipStatus {
                    address,
                    zone: cfg.zone.clone(),
                    holder,
                    last_release: own.last_release().map(|r| r.label()),
                }
            })
            .collect();
        FleetStatus {
            node: self.config.node.clone(),
            zone: self.config.zone.clone(),
            min_per_zone: self.config.min_per_zone,
            members,
            vips,
        }
    }

    /// Rewrites `status_file` when the fleet as seen from here changed, and at least every
    /// [`status::REFRESH`] so that its `written_at` shows the agent is alive.
    fn write_status(&mut self) {
        let Some(path) = self.config.status_file.clone() else {
            return;
        };
        let now = self.status();
        if let Some((last, at)) = &self.written {
            if *last == now && at.elapsed() < status::REFRESH {
                return;
            }
        }
        match status::write(&path, &now) {
            Ok(()) => self.written = Some((now, Instant::now())),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "could not write the fleet status file")
            }
        }
    }

    /// The next moment a lease this node follows ends, if it is still ahead.
    fn next_claim_moment(&self) -> Option<Instant> {
        let now = std::time::Instant::now();
        self.vips
            .iter()
            .filter_map(|(_, own)| own.claim_possible_at())
            .filter(|at| *at > now)
            .min()
            .map(Instant::from_std)
    }

    fn candidates(&self) -> Vec<Candidate> {
        self.view()
            .into_iter()
            .map(|v| Candidate {
                node: v.node,
                zone: v.zone,
                gateway_ready: v.gateway == GatewayState::Ready,
            })
            .collect()
    }

    async fn on_lease(&mut self) {
        let alive = self.candidates();
        for i in 0..self.vips.len() {
            self.tick_vip(i, &alive).await;
        }
    }

    /// One lease step of VIP `i`: probe when a claim comes near, act, send the heartbeat.
    async fn tick_vip(&mut self, i: usize, alive: &[Candidate]) {
        let now = Instant::now().into_std();
        let mut view = VipView {
            alive,
            quorum: self.config.quorum(),
            gateway_ready: self.gateway == GatewayState::Ready,
            address_answers: true,
        };
        if self.vips[i].1.wants_probe(now, &view) {
            let cfg = &self.vips[i].0;
            let port = cfg.probe_port.unwrap_or(self.config.gateway.serve.port());
            self.probes
                .start(i, SocketAddr::new(cfg.address, port), now);
        }
        view.address_answers = self.probes.answers(i, now);
        let tick = self.vips[i].1.tick(now, &view);
        match tick.action {
            VipAction::Claim => self.claim(i).await,
            VipAction::Release => self.release(i, self.release_reason(i)).await,
            VipAction::None => {}
        }
        if let Some(hb) = tick.heartbeat {
            let vip = self.vips[i].1.vip().to_owned();
            let (seq, claiming) = (hb.seq, hb.claiming);
            self.membership
                .broadcast(&FleetMessage::Lease { vip, seq, claiming });
        }
    }

    async fn claim(&mut self, i: usize) {
        let cfg = &self.vips[i].0;
        let fence = self.fence.as_deref().filter(|_| cfg.fence);
        if cfg.fence && fence.is_none() {
            warn!(address = %cfg.address, interface = %cfg.interface,
                "the gateway has no fence device; the VIP goes on the interface and would outlive a killed gateway");
        }
        match vip::add(cfg, fence).await {
            Ok(()) => println!("fleet: vip {} claimed", cfg.address),
            Err(e) => warn!(error = %e, "claiming the VIP failed"),
        }
        let label = cfg.address.to_string();
        metrics::counter!(m::FLEET_VIP_CHANGES_TOTAL,
            "vip" => label.clone(), "event" => "claim", "reason" => "elected")
        .increment(1);
        metrics::gauge!(m::FLEET_VIP_HELD, "vip" => label).set(1.0);
    }

    /// The metric label of why VIP `i` was just given up.
    fn release_reason(&self, i: usize) -> &'static str {
        self.vips[i]
            .1
            .last_release()
            .map_or("unknown", |r| r.label())
    }

    /// Removes the address first, then tells the members; `reason` labels the metric.
    async fn release(&mut self, i: usize, reason: &'static str) {
        let cfg = self.vips[i].0.clone();
        let fence = self.fence.as_deref().filter(|_| cfg.fence);
        if let Err(e) = vip::remove(&cfg, fence).await {
            warn!(error = %e, "removing the VIP failed");
        }
        println!("fleet: vip {} released", cfg.address);
        let label = cfg.address.to_string();
        metrics::counter!(m::FLEET_VIP_CHANGES_TOTAL,
            "vip" => label.clone(), "event" => "release", "reason" => reason)
        .increment(1);
        metrics::gauge!(m::FLEET_VIP_HELD, "vip" => label).set(0.0);
        let vip = self.vips[i].1.vip().to_owned();
        self.membership.broadcast(&FleetMessage::Release { vip });
    }

    fn vip_index(&self, vip: &str) -> Option<usize> {
        self.vips.iter().position(|(_, o)| o.vip() == vip)
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
