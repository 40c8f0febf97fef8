use super::*;
use GatewayState::*;

const START: Duration = Duration::from_millis(500);
const DRAIN: Duration = Duration::from_secs(2);

fn config(min: usize) -> PlacementConfig {
    PlacementConfig {
        min_per_zone: min,
        start_delay: START,
        drain_delay: DRAIN,
    }
}

fn m(node: &str, zone: &str, gateway: GatewayState) -> MemberView {
    MemberView {
        node: node.into(),
        zone: zone.into(),
        eligible: true,
        gateway,
        capacity: 1,
        incarnation: 0,
    }
}

/// Runs every member's policy once at `now` and returns the nodes whose action is `action`.
fn acting(
    policies: &mut [PlacementPolicy],
    now: Instant,
    view: &[MemberView],
    action: GatewayAction,
) -> Vec<String> {
    policies
        .iter_mut()
        .filter_map(|p| (p.decide(now, view).action == action).then(|| p.me.clone()))
        .collect()
}

fn policies(view: &[MemberView], min: usize) -> Vec<PlacementPolicy> {
    view.iter()
        .map(|v| PlacementPolicy::new(v.node.clone(), config(min)))
        .collect()
}

#[test]
fn table() {
    let t0 = Instant::now();
    struct Case {
        name: &'static str,
        view: Vec<MemberView>,
        me: &'static str,
        min: usize,
        after: Duration,
        want: GatewayAction,
    }
    let cases = [
        Case {
            name: "zone covered: standby stays idle",
            view: vec![m("a1", "a", Ready), m("a2", "a", Stopped)],
            me: "a2",
            min: 1,
            after: Duration::from_secs(10),
            want: GatewayAction::Idle,
        },
        Case {
            name: "ready gateway at target is kept",
            view: vec![m("a1", "a", Ready), m("a2", "a", Stopped)],
            me: "a1",
            min: 1,
            after: Duration::ZERO,
            want: GatewayAction::Keep,
        },
        Case {
            name: "a starting gateway covers the zone",
            view: vec![m("a1", "a", Starting), m("a2", "a", Stopped)],
            me: "a2",
            min: 1,
            after: Duration::from_secs(10),
            want: GatewayAction::Idle,
        },
        Case {
            name: "other zones do not count",
            view: vec![m("b1", "b", Ready), m("a2", "a", Stopped)],
            me: "a2",
            min: 1,
            after: START,
            want: GatewayAction::Start,
        },
        Case {
            name: "a down gateway is no candidate",
            view: vec![m("a2", "a", Down)],
            me: "a2",
            min: 1,
            after: START,
            want: GatewayAction::Idle,
        },
        Case {
            name: "deficit not lasted start_delay yet",
            view: vec![m("a2", "a", Stopped)],
            me: "a2",
            min: 1,
            after: START - Duration::from_millis(1),
            want: GatewayAction::Idle,
        },
        Case {
            name: "not in view",
            view: vec![m("a1", "a", Stopped)],
            me: "zz",
            min: 1,
            after: START,
            want: GatewayAction::Idle,
        },
        Case {
            name: "draining gateway is left alone",
            view: vec![m("a1", "a", Draining)],
            me: "a1",
            min: 1,
            after: START,
            want: GatewayAction::Idle,
        },
    ];
    for case in cases {
        let mut p = PlacementPolicy::new(case.me, config(case.min));
        p.decide(t0, &case.view);
        let got = p.decide(t0 + case.after, &case.view);
        assert_eq!(got.action, case.want, "{}: {got:?}", case.name);
    }
}

#[test]
fn ineligible_or_full_nodes_are_never_picked() {
    let t0 = Instant::now();
    let mut view = vec![m("a1", "a", Stopped), m("a2", "a", Stopped)];
    view[0].eligible = false;
    view[1].capacity = 0;
    let mut ps = policies(&view, 1);
    acting(&mut ps, t0, &view, GatewayAction::Start);
    assert!(acting(&mut ps, t0 + START, &view, GatewayAction::Start).is_empty());
}

#[test]
fn exactly_one_agent_acts_per_missing_gateway() {
    let t0 = Instant::now();
    for size in 1..8 {
        for min in 1..=size {
            let view: Vec<MemberView> = (0..size)
                .map(|i| m(&format!("n{i}"), "z", Stopped))
                .collect();
            let mut ps = policies(&view, min);
            assert!(acting(&mut ps, t0, &view, GatewayAction::Start).is_empty());
            let starters = acting(&mut ps, t0 + START, &view, GatewayAction::Start);
            assert_eq!(starters.len(), min, "size {size} min {min}: {starters:?}");
        }
    }
}

#[test]
fn replacement_after_a_node_is_lost() {
    let t0 = Instant::now();
    let full = vec![
        m("a1", "a", Ready),
        m("a2", "a", Stopped),
        m("a3", "a", Stopped),
    ];
    let mut ps = policies(&full, 1);
    assert!(acting(&mut ps, t0, &full, GatewayAction::Start).is_empty());
    // a1 is declared dead: the survivors see a deficit.
    let lost: Vec<MemberView> = full[1..].to_vec();
    let mut survivors: Vec<PlacementPolicy> = ps.split_off(1);
    assert!(acting(&mut survivors, t0, &lost, GatewayAction::Start).is_empty());
    let starters = acting(&mut survivors, t0 + START, &lost, GatewayAction::Start);
    assert_eq!(starters.len(), 1, "{starters:?}");
}

#[test]
fn flapping_member_does_not_start_gateways() {
    let t0 = Instant::now();
    let up = vec![m("a1", "a", Ready), m("a2", "a", Stopped)];
    let down = vec![m("a2", "a", Stopped)];
    let mut p = PlacementPolicy::new("a2", config(1));
    let step = START / 4;
    for i in 0..40u32 {
        let view = if i % 2 == 0 { &down } else { &up };
        let got = p.decide(t0 + step * i, view);
        assert_ne!(got.action, GatewayAction::Start, "step {i}: {got:?}");
    }
}

#[test]
fn surplus_drains_exactly_the_extra_after_drain_delay() {
    let t0 = Instant::now();
    for (ready, min) in [(2, 1), (3, 1), (3, 2), (5, 2)] {
        let view: Vec<MemberView> = (0..ready)
            .map(|i| m(&format!("n{i}"), "z", Ready))
            .collect();
        let mut ps = policies(&view, min);
        assert!(acting(&mut ps, t0, &view, GatewayAction::Drain).is_empty());
        let early = acting(&mut ps, t0 + DRAIN / 2, &view, GatewayAction::Drain);
        assert!(early.is_empty(), "{early:?}");
        let drains = acting(&mut ps, t0 + DRAIN, &view, GatewayAction::Drain);
        assert_eq!(drains.len(), ready - min, "ready {ready} min {min}");
    }
}

#[test]
fn starting_gateways_never_cause_a_drain() {
    let t0 = Instant::now();
    let view = vec![m("a1", "a", Ready), m("a2", "a", Starting)];
    let mut ps = policies(&view, 1);
    acting(&mut ps, t0, &view, GatewayAction::Drain);
    assert!(acting(&mut ps, t0 + DRAIN * 2, &view, GatewayAction::Drain).is_empty());
}

#[test]
fn converges_from_random_views_with_seeded_rng() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(8);
    for _round in 0..200 {
        let zones = ["a", "b", "c"];
        let min = rng.random_range(1..=2);
        let mut view: Vec<MemberView> = Vec::new();
        for zone in zones {
            for i in 0..rng.random_range(2..5) {
                let state = match rng.random_range(0..4) {
                    0 => Ready,
                    1 => Starting,
                    2 => Down,
                    _ => Stopped,
                };
                view.push(m(&format!("{zone}{i}"), zone, state));
            }
        }
        let mut ps = policies(&view, min);
        let t0 = Instant::now();
        acting(&mut ps, t0, &view, GatewayAction::Start);
        let far = t0 + START.max(DRAIN);
        let starts = acting(&mut ps, far, &view, GatewayAction::Start);
        let drains = acting(&mut ps, far, &view, GatewayAction::Drain);
        for zone in zones {
            let in_zone: Vec<&MemberView> = view.iter().filter(|v| v.zone == zone).collect();
            let covering = in_zone.iter().filter(|v| v.gateway.is_covering()).count();
            let ready = in_zone.iter().filter(|v| v.gateway == Ready).count();
            let candidates = in_zone.iter().filter(|v| v.gateway == Stopped).count();
            let zs = starts.iter().filter(|n| n.starts_with(zone)).count();
            let zd = drains.iter().filter(|n| n.starts_with(zone)).count();
            assert_eq!(zs, min.saturating_sub(covering).min(candidates), "{view:?}");
            assert_eq!(zd, ready.saturating_sub(min), "{view:?}");
        }
    }
}
