//! Metric names of the fleet role (`meshedge_agent_fleet_*`, `meshedge_agent_gossip_*`,
//! `meshedge_agent_gateway_*`) and their descriptions.

/// Gateway restarts by the supervisor, label `reason` (`exit`, `unready`).
pub const GATEWAY_RESTARTS_TOTAL: &str = "meshedge_agent_gateway_restarts_total";
/// 1 while the supervised gateway is crash-looping (restarts faster than the window allows).
pub const GATEWAY_CRASHLOOP: &str = "meshedge_agent_gateway_crashloop";
/// State of the local gateway: 0 stopped, 1 starting, 2 ready, 3 draining, 4 down.
pub const GATEWAY_STATE: &str = "meshedge_agent_gateway_state";
/// VIP fence devices that could not be created (the gateway started without one).
pub const FENCE_FAILURES_TOTAL: &str = "meshedge_agent_fleet_fence_failures_total";
/// Policy actions taken, label `action` (`start`, `drain`).
pub const FLEET_ACTIONS_TOTAL: &str = "meshedge_agent_fleet_actions_total";
/// Virtual IP ownership changes of this node, labels `vip`, `event` (`claim`, `release`)
/// and `reason` (`elected` for claims; for releases `gateway_not_ready`,
/// `no_quorum_alive`, `lease_lapsed`, `pause_unconfirmed`, `renewed_elsewhere`,
/// `second_holder`, `shutdown`).
pub const FLEET_VIP_CHANGES_TOTAL: &str = "meshedge_agent_fleet_vip_changes_total";
/// Probes of a virtual IP before a claim, labels `vip`, `result` (`reacted`,
/// `unreachable`, `silent`).
pub const FLEET_VIP_PROBES_TOTAL: &str = "meshedge_agent_fleet_vip_probes_total";
/// 1 for each virtual IP this node holds, label `vip`.
pub const FLEET_VIP_HELD: &str = "meshedge_agent_fleet_vip_held";
/// DNS-SD registrations and withdrawals, labels `op` (`register`, `deregister`,
/// `withdraw`) and `result` (`ok`, `error`).
pub const FLEET_ADVERTISE_TOTAL: &str = "meshedge_agent_fleet_advertise_total";
/// Members this node sees alive (itself included).
pub const GOSSIP_MEMBERS: &str = "meshedge_agent_gossip_members";
/// Gossip packets rejected, label `reason` (`short`, `magic`, `mac`, `replay`, `decode`,
/// `sender`).
pub const GOSSIP_REJECTED_TOTAL: &str = "meshedge_agent_gossip_rejected_total";
/// Gossip packets accepted, label `kind` (`swim`, `state`, `lease`, `ack`, `release`).
pub const GOSSIP_RECEIVED_TOTAL: &str = "meshedge_agent_gossip_received_total";

/// Registers the descriptions of every fleet metric with the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        GATEWAY_RESTARTS_TOTAL,
        "Gateway restarts by the agent's supervisor"
    );
    describe_gauge!(
        GATEWAY_CRASHLOOP,
        "1 while the supervised gateway crash-loops"
    );
    describe_gauge!(GATEWAY_STATE, "Local gateway state (0 stopped .. 4 down)");
    describe_counter!(
        FENCE_FAILURES_TOTAL,
        "VIP fence devices that could not be created"
    );
    describe_counter!(FLEET_ACTIONS_TOTAL, "Fleet policy actions (start, drain)");
    describe_counter!(FLEET_VIP_CHANGES_TOTAL, "Virtual IP claims and releases");
    describe_counter!(
        FLEET_VIP_PROBES_TOTAL,
        "Virtual IP probes before a claim by result"
    );
    describe_gauge!(FLEET_VIP_HELD, "1 for each virtual IP held by this node");
    describe_counter!(
        FLEET_ADVERTISE_TOTAL,
        "DNS-SD registrations and withdrawals"
    );
    describe_gauge!(GOSSIP_MEMBERS, "Members seen alive, this node included");
    describe_counter!(GOSSIP_REJECTED_TOTAL, "Gossip packets rejected by reason");
    describe_counter!(GOSSIP_RECEIVED_TOTAL, "Gossip packets accepted by kind");
}
