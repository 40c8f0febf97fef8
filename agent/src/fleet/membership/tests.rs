//! Membership over real UDP sockets on loopback: convergence, failure detection, and
//! forged or replayed packets that change nothing.

use super::*;

const KEY: &[u8] = b"fleet-test-key-0123456789abcdef!";

fn fast() -> GossipConfig {
    GossipConfig {
        probe_period: Duration::from_millis(100),
        probe_rtt: Duration::from_millis(40),
        suspect_to_down: Duration::from_millis(300),
        expected_members: 3,
    }
}

async fn node(name: &str, zone: &str) -> Membership {
    let me = NodeIdentity {
        node: name.into(),
        zone: zone.into(),
        addr: "127.0.0.1:0".parse().unwrap(),
        generation: 0,
    };
    Membership::bind(me, KEY, fast(), 1).await.unwrap()
}

/// Drives every node for `d`, collecting the fleet messages each receives.
async fn drive(nodes: &mut [Membership], d: Duration) -> Vec<Vec<Event>> {
    let mut seen = vec![Vec::new(); nodes.len()];
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        for (i, n) in nodes.iter_mut().enumerate() {
            if let Ok(ev) = tokio::time::timeout(Duration::from_millis(1), n.next()).await {
                seen[i].push(ev);
            }
        }
    }
    seen
}

fn names(m: &Membership) -> Vec<String> {
    let mut v: Vec<String> = m.members().into_iter().map(|i| i.node).collect();
    v.sort();
    v
}

#[tokio::test]
async fn converges_and_detects_a_dead_member() {
    let mut nodes = vec![
        node("a1", "a").await,
        node("b1", "b").await,
        node("c1", "c").await,
    ];
    let seed = nodes[0].me().addr;
    for n in nodes.iter_mut().skip(1) {
        n.join(&[seed]);
    }
    drive(&mut nodes, Duration::from_millis(800)).await;
    assert_eq!(names(&nodes[0]), ["b1", "c1"]);
    assert_eq!(names(&nodes[2]), ["a1", "b1"]);
    let dead = nodes.pop().unwrap();
    drop(dead);
    let seen = drive(&mut nodes, Duration::from_millis(2500)).await;
    assert_eq!(names(&nodes[0]), ["b1"]);
    assert!(seen[0]
        .iter()
        .any(|e| matches!(e, Event::Down(id) if id.node == "c1")));
}

#[tokio::test]
async fn fleet_messages_arrive_authenticated() {
    let mut nodes = vec![node("a1", "a").await, node("a2", "a").await];
    let to = nodes[1].me().addr;
    let msg = FleetMessage::Release { vip: "v".into() };
    nodes[0].send(to, &msg);
    let seen = drive(&mut nodes, Duration::from_millis(200)).await;
    assert!(seen[1]
        .iter()
        .any(|e| matches!(e, Event::Message { from, msg: m, .. } if from == "a1" && *m == msg)));
}

#[tokio::test]
async fn forged_and_replayed_packets_change_nothing() {
    let mut nodes = vec![node("a1", "a").await, node("a2", "a").await];
    let seed = nodes[0].me().addr;
    nodes[1].join(&[seed]);
    drive(&mut nodes, Duration::from_millis(500)).await;
    assert_eq!(names(&nodes[0]), ["a2"]);
    let target = nodes[0].me().addr;

    // An attacker without the key: a SWIM announce of a fake node, a fleet message
    // claiming to come from a2, and garbage.
    let attacker = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut wrong_key = Sealer::new(b"not-the-fleet-key-0123456789abcd", "a2", 99);
    let fake = FleetMessage::Release { vip: "v".into() };
    let body = postcard::to_allocvec(&fake).unwrap();
    attacker
        .send_to(&wrong_key.seal(Kind::Fleet, &body), target)
        .unwrap();
    attacker.send_to(b"MEF1 garbage", target).unwrap();
    // A fake member joining, sealed with the wrong key.
    let mut fake_rt = AccumulatingRuntime::new();
    let fake_id = NodeIdentity {
        node: "evil".into(),
        zone: "a".into(),
        addr: attacker.local_addr().unwrap(),
        generation: 0,
    };
    let mut evil = Foca::new(
        fake_id,
        foca::Config::new_lan(NonZeroU32::MIN),
        StdRng::seed_from_u64(1),
        PostcardCodec,
    );
    evil.announce(nodes[0].me().clone(), &mut fake_rt).unwrap();
    while let Some((_, data)) = fake_rt.to_send() {
        attacker
            .send_to(&wrong_key.seal(Kind::Swim, &data), target)
            .unwrap();
    }
    // A replay: a genuine packet of a2, captured, delivered twice (the first copy counts).
    nodes[1].send(attacker.local_addr().unwrap(), &fake);
    let mut captured = [0u8; 2048];
    attacker
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (len, _) = attacker.recv_from(&mut captured).unwrap();
    attacker.send_to(&captured[..len], target).unwrap();
    attacker.send_to(&captured[..len], target).unwrap();

    let seen = drive(&mut nodes, Duration::from_millis(500)).await;
    assert_eq!(names(&nodes[0]), ["a2"], "no fake member");
    let released: Vec<&Event> = seen[0]
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Message {
                    msg: FleetMessage::Release { .. },
                    ..
                }
            )
        })
        .collect();
    assert_eq!(
        released.len(),
        1,
        "only the first copy of the valid packet: {released:?}"
    );
}
