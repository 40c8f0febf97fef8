use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::name::ServiceName;
use crate::register::{Instance, RegisterError, Registrar};

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}

async fn start(keys: Vec<TsigKey>, snapshot: Option<PathBuf>) -> ServerHandle {
    let mut config = ServerConfig::try_new("127.0.0.1:0".parse().expect("addr"), &["mesh.test"])
        .expect("config");
    config.keys = keys;
    config.snapshot = snapshot;
    serve(config).await.expect("server starts")
}

async fn udp_query(server: SocketAddr, q: &str, t: RecordType, edns: bool) -> Message {
    let mut msg = Message::new();
    msg.set_id(7)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query);
    msg.add_query(Query::query(name(q), t));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        msg.set_edns(e);
    }
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    sock.send_to(&msg.to_vec().expect("encode"), server)
        .await
        .expect("send");
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .expect("reply in time")
        .expect("recv");
    Message::from_vec(&buf[..n]).expect("parse")
}

async fn tcp_send(server: SocketAddr, msg: &Message) -> Message {
    let bytes = msg.to_vec().expect("encode");
    let mut s = tokio::net::TcpStream::connect(server)
        .await
        .expect("connect");
    let len = u16::try_from(bytes.len()).expect("small").to_be_bytes();
    s.write_all(&len).await.expect("write");
    s.write_all(&bytes).await.expect("write");
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.expect("read");
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut reply).await.expect("read");
    Message::from_vec(&reply).expect("parse")
}

fn instance(i: usize) -> Instance {
    Instance {
        service: ServiceName::parse("_web._tcp.mesh.test").expect("svc"),
        name: format!("web-{i}"),
        target: name(&format!("host-{i}.mesh.test.")),
        port: 8000 + u16::try_from(i).expect("small"),
        priority: 0,
        weight: 1,
        txt: Default::default(),
        addresses: vec![format!("10.0.{}.{}", i / 250, i % 250 + 1)
            .parse()
            .expect("ip")],
        ttl: 30,
    }
}

#[tokio::test]
async fn answers_queries_authoritatively() {
    let server = start(vec![], None).await;
    let addr = server.local_addr();
    let soa = udp_query(addr, "mesh.test.", RecordType::SOA, false).await;
    assert_eq!(soa.response_code(), ResponseCode::NoError);
    assert!(soa.authoritative());
    assert_eq!(soa.answers().len(), 1);
    let nx = udp_query(addr, "nope.mesh.test.", RecordType::A, true).await;
    assert_eq!(nx.response_code(), ResponseCode::NXDomain);
    assert_eq!(nx.name_servers().len(), 1, "soa in authority");
    let other = udp_query(addr, "example.org.", RecordType::A, false).await;
    assert_eq!(other.response_code(), ResponseCode::Refused);
}

#[tokio::test]
async fn refuses_unsigned_and_badly_signed_updates() {
    let key = TsigKey::generate("good.key").expect("key");
    let server = start(vec![key.clone()], None).await;
    let mut msg = Message::new();
    msg.set_id(9)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Update);
    msg.add_query(Query::query(name("mesh.test."), RecordType::SOA));
    let mut rec = Record::from_rdata(name("x.mesh.test."), 30, RData::A(A::new(1, 2, 3, 4)));
    rec.set_dns_class(DNSClass::IN);
    msg.add_name_server(rec);
    let reply = tcp_send(server.local_addr(), &msg).await;
    assert_eq!(reply.response_code(), ResponseCode::Refused);

    let wrong = TsigKey::generate("good.key").expect("key");
    let registrar = Registrar::new(server.local_addr(), name("mesh.test."), wrong);
    match registrar.register(&instance(1)).await {
        Err(RegisterError::Rejected { rcode, .. }) => assert_eq!(rcode, ResponseCode::NotAuth),
        other => panic!("expected NOTAUTH, got {other:?}"),
    }
    let unknown = TsigKey::generate("other.key").expect("key");
    let registrar = Registrar::new(server.local_addr(), name("mesh.test."), unknown);
    assert!(registrar.register(&instance(1)).await.is_err());
    let zone = &server.zones()[0];
    assert_eq!(zone.serial(), 1, "nothing applied");
}

#[tokio::test]
async fn register_update_deregister_with_prerequisites() {
    let key = TsigKey::generate("k.").expect("key");
    let server = start(vec![key.clone()], None).await;
    let reg = Registrar::new(server.local_addr(), name("mesh.test."), key);
    let inst = instance(1);
    reg.register(&inst).await.expect("register");
    assert!(matches!(
        reg.register(&inst).await,
        Err(RegisterError::AlreadyRegistered { .. })
    ));
    let mut moved = inst.clone();
    moved.port = 9999;
    reg.update(&moved).await.expect("update");
    let srv = udp_query(
        server.local_addr(),
        "web-1._web._tcp.mesh.test.",
        RecordType::SRV,
        false,
    )
    .await;
    let port = srv.answers()[0].data().as_srv().expect("srv").port();
    assert_eq!(port, 9999);
    reg.deregister(&moved).await.expect("deregister");
    assert!(matches!(
        reg.update(&moved).await,
        Err(RegisterError::NotRegistered { .. })
    ));
    assert!(matches!(
        reg.deregister(&moved).await,
        Err(RegisterError::NotRegistered { .. })
    ));
    let ptr = udp_query(
        server.local_addr(),
        "_web._tcp.mesh.test.",
        RecordType::PTR,
        false,
    )
    .await;
    assert_eq!(ptr.response_code(), ResponseCode::NXDomain);
}

#[tokio::test]
async fn large_answers_truncate_over_udp() {
    let key = TsigKey::generate("k.").expect("key");
    let server = start(vec![key.clone()], None).await;
    let reg = Registrar::new(server.local_addr(), name("mesh.test."), key);
    for i in 0..80 {
        reg.register(&instance(i)).await.expect("register");
    }
    let small = udp_query(
        server.local_addr(),
        "_web._tcp.mesh.test.",
        RecordType::PTR,
        false,
    )
    .await;
    assert!(small.truncated());
    assert!(small.answers().is_empty());
    let mut q = Message::new();
    q.set_id(3)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query);
    q.add_query(Query::query(name("_web._tcp.mesh.test."), RecordType::PTR));
    let full = tcp_send(server.local_addr(), &q).await;
    assert!(!full.truncated());
    assert_eq!(full.answers().len(), 80);
}

#[tokio::test]
async fn ptr_answers_carry_dns_sd_additionals_or_drop_them() {
    let key = TsigKey::generate("k.").expect("key");
    let server = start(vec![key.clone()], None).await;
    let reg = Registrar::new(server.local_addr(), name("mesh.test."), key);
    for i in 0..3 {
        reg.register(&instance(i)).await.expect("register");
    }
    let ptr = "_web._tcp.mesh.test.";
    let reply = udp_query(server.local_addr(), ptr, RecordType::PTR, true).await;
    assert_eq!(reply.answers().len(), 3);
    let count = |t: RecordType| {
        reply
            .additionals()
            .iter()
            .filter(|r| r.record_type() == t)
            .count()
    };
    assert_eq!(
        (
            count(RecordType::SRV),
            count(RecordType::TXT),
            count(RecordType::A)
        ),
        (3, 3, 3)
    );
    // Too big for 512 bytes with the additionals, small enough without: answers kept,
    // additionals dropped, no truncation.
    for i in 3..12 {
        reg.register(&instance(i)).await.expect("register");
    }
    let plain = udp_query(server.local_addr(), ptr, RecordType::PTR, false).await;
    assert!(!plain.truncated());
    assert_eq!(plain.answers().len(), 12);
    assert!(plain.additionals().is_empty());
}

#[tokio::test]
async fn registrations_survive_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("zones.snap");
    let key = TsigKey::generate("k.").expect("key");
    let server = start(vec![key.clone()], Some(path.clone())).await;
    let reg = Registrar::new(server.local_addr(), name("mesh.test."), key.clone());
    reg.register(&instance(1)).await.expect("register");
    reg.register(&instance(2)).await.expect("register");
    reg.deregister(&instance(2)).await.expect("deregister");
    let before = server.zones();
    drop(server);

    let server = start(vec![key], Some(path)).await;
    assert_eq!(server.zones(), before);
    let srv = udp_query(
        server.local_addr(),
        "web-1._web._tcp.mesh.test.",
        RecordType::SRV,
        false,
    )
    .await;
    assert_eq!(srv.answers().len(), 1);
    let gone = udp_query(
        server.local_addr(),
        "web-2._web._tcp.mesh.test.",
        RecordType::SRV,
        false,
    )
    .await;
    assert_eq!(gone.response_code(), ResponseCode::NXDomain);
}

#[tokio::test]
async fn config_errors() {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut cfg = ServerConfig::try_new(addr, &[]).expect("config");
    assert!(matches!(
        serve(cfg.clone()).await,
        Err(ServerError::NoZones)
    ));
    cfg.zones = vec![name("a.test."), name("A.test")];
    assert!(matches!(
        serve(cfg).await,
        Err(ServerError::DuplicateZone { .. })
    ));
    assert!(ServerConfig::try_new(addr, &["bad..zone"]).is_err());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.snap");
    std::fs::write(&path, b"not a snapshot").expect("write");
    let mut cfg = ServerConfig::try_new(addr, &["a.test"]).expect("config");
    cfg.snapshot = Some(path);
    assert!(matches!(serve(cfg).await, Err(ServerError::Snapshot(_))));
}
