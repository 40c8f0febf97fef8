//! Registration against BIND 9 `named` with TSIG, checked independently with `dig`.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use meshedge_discovery::register::{Instance, RegisterError};
use meshedge_discovery::{
    DnsResolver, EndpointSet, Registrar, Resolve, ResolverConfig, ServiceName, Source, TsigKey, Txt,
};
use support::ChildGuard;

const ZONE: &str = "bind.test";

struct Named {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    _child: ChildGuard,
}

async fn start_named(key: &TsigKey) -> Named {
    let bin = support::require_tool("named", "bind9");
    // named listens only on interface addresses, so 127.0.0.1 with a port of its own.
    let addr = support::free_localhost_addr();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    let zone_file = dir.path().join("bind.test.zone");
    std::fs::write(
        &zone_file,
        "$TTL 30\n\
         @ IN SOA ns.bind.test. hostmaster.bind.test. 1 3600 600 86400 1\n\
         @ IN NS ns.bind.test.\n\
         ns IN A 127.0.0.1\n",
    )
    .expect("zone file");
    let conf = dir.path().join("named.conf");
    std::fs::write(
        &conf,
        format!(
            r#"options {{
    directory "{d}";
    listen-on port {port} {{ {ip}; }};
    listen-on-v6 {{ none; }};
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
key "{key}" {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "{ZONE}" {{
    type primary;
    file "{zone}";
    update-policy {{ grant {key} subdomain {ZONE}. ANY; }};
}};
"#,
            port = addr.port(),
            ip = addr.ip(),
            key = key.name().to_ascii().trim_end_matches('.'),
            secret = key.secret_base64(),
            zone = zone_file.display(),
        ),
    )
    .expect("named.conf");
    let mut child = ChildGuard::spawn(
        "named",
        Command::new(bin)
            .arg("-g")
            .arg("-n")
            .arg("1")
            .arg("-c")
            .arg(&conf),
    );
    support::wait_for_dns(addr, &mut child).await;
    Named {
        addr,
        _dir: dir,
        _child: child,
    }
}

fn instance(name: &str, port: u16, ip: &str) -> Instance {
    let txt = Txt {
        zone: Some("z1".into()),
        attributes: [("health".to_owned(), "/healthz".to_owned())].into(),
    };
    Instance {
        service: ServiceName::parse("_gw._tcp.bind.test").expect("svc"),
        name: name.into(),
        target: format!("{name}-host.bind.test.").parse().expect("name"),
        port,
        priority: 1,
        weight: 5,
        txt,
        addresses: vec![ip.parse().expect("ip")],
        ttl: 1,
    }
}

#[tokio::test]
async fn register_update_deregister_against_bind() {
    support::init_tracing();
    let key = TsigKey::generate("meshedge-test.key").expect("key");
    let named = start_named(&key).await;
    let reg = Registrar::new(named.addr, ZONE.parse().expect("zone"), key.clone());

    let gw1 = instance("gw1", 8443, "10.5.0.1");
    reg.register(&gw1).await.expect("register against named");
    assert_eq!(
        support::dig(named.addr, "_gw._tcp.bind.test", "PTR"),
        ["gw1._gw._tcp.bind.test."]
    );
    assert_eq!(
        support::dig(named.addr, "gw1._gw._tcp.bind.test", "SRV"),
        ["1 5 8443 gw1-host.bind.test."]
    );
    assert_eq!(
        support::dig(named.addr, "gw1._gw._tcp.bind.test", "TXT"),
        ["\"zone=z1\" \"health=/healthz\""]
    );
    assert_eq!(
        support::dig(named.addr, "gw1-host.bind.test", "A"),
        ["10.5.0.1"]
    );

    // Creating twice is refused by the prerequisite.
    assert!(matches!(
        reg.register(&gw1).await,
        Err(RegisterError::AlreadyRegistered { .. })
    ));

    // Our resolver sees what dig sees.
    let mut config = ResolverConfig::new(vec![named.addr]);
    config.timeout = Duration::from_millis(500);
    config.cache_size = 0;
    let resolver = DnsResolver::new(&config).expect("resolver");
    let source = Source::Browse(ServiceName::parse("_gw._tcp.bind.test").expect("svc"));
    let set = EndpointSet::new(resolver.resolve(&source).await.expect("resolve").endpoints);
    assert_eq!(set.len(), 1);
    assert_eq!(set.endpoints()[0].zone.as_deref(), Some("z1"));

    // Update moves the port and address.
    let moved = instance("gw1", 9443, "10.5.0.2");
    reg.update(&moved).await.expect("update");
    assert_eq!(
        support::dig(named.addr, "gw1._gw._tcp.bind.test", "SRV"),
        ["1 5 9443 gw1-host.bind.test."]
    );
    assert_eq!(
        support::dig(named.addr, "gw1-host.bind.test", "A"),
        ["10.5.0.2"]
    );

    // Deregister, then a stale writer's update cannot bring it back.
    reg.deregister(&moved).await.expect("deregister");
    assert!(support::dig(named.addr, "_gw._tcp.bind.test", "PTR").is_empty());
    assert!(support::dig(named.addr, "gw1._gw._tcp.bind.test", "SRV").is_empty());
    assert!(matches!(
        reg.update(&gw1).await,
        Err(RegisterError::NotRegistered { .. })
    ));
    assert!(support::dig(named.addr, "gw1._gw._tcp.bind.test", "SRV").is_empty());
    let set = resolver
        .resolve(&source)
        .await
        .expect("authoritative empty");
    assert!(set.endpoints.is_empty());
}

#[tokio::test]
async fn bind_rejects_a_wrong_key() {
    let key = TsigKey::generate("meshedge-test.key").expect("key");
    let named = start_named(&key).await;
    let wrong = TsigKey::generate("meshedge-test.key").expect("key");
    let reg = Registrar::new(named.addr, ZONE.parse().expect("zone"), wrong);
    match reg.register(&instance("gw9", 1, "10.5.0.9")).await {
        Err(RegisterError::Rejected { rcode, .. }) => {
            assert_eq!(rcode, hickory_proto::op::ResponseCode::NotAuth)
        }
        other => panic!("expected NOTAUTH from named, got {other:?}"),
    }
    assert!(support::dig(named.addr, "gw9._gw._tcp.bind.test", "SRV").is_empty());
}
