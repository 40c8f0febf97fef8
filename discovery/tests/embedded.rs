//! Resolve, watch and register against the embedded server, end to end over real sockets.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshedge_discovery::register::Instance;
use meshedge_discovery::{
    serve, DnsResolver, EndpointSet, Registrar, Resolve, ResolverConfig, ServerConfig,
    ServerHandle, ServiceName, Source, TsigKey, Txt, Watch, WatchConfig,
};

const ZONE: &str = "mesh.test";

async fn start(addr: SocketAddr, key: &TsigKey) -> ServerHandle {
    let mut config = ServerConfig::try_new(addr, &[ZONE]).expect("config");
    config.keys = vec![key.clone()];
    config.negative_ttl = 1;
    // The previous server on this address may still be closing.
    support::eventually("server bind", Duration::from_secs(5), || {
        let config = config.clone();
        async move { serve(config).await.ok() }
    })
    .await
}

fn resolver(addr: SocketAddr) -> DnsResolver {
    let mut config = ResolverConfig::new(vec![addr]);
    config.timeout = Duration::from_millis(300);
    config.attempts = 1;
    DnsResolver::new(&config).expect("resolver")
}

fn svc() -> ServiceName {
    ServiceName::parse("_api._tcp.mesh.test").expect("service")
}

fn instance(i: usize, ttl: u32) -> Instance {
    let txt = Txt {
        zone: Some(["a", "b"][i % 2].into()),
        attributes: [("health".to_owned(), "/healthz".to_owned())].into(),
    };
    Instance {
        service: svc(),
        name: format!("api {i}"),
        target: format!("h{i}.mesh.test.").parse().expect("name"),
        port: 9000,
        priority: u16::try_from(i % 3).expect("small"),
        weight: 10,
        txt,
        addresses: vec![format!("10.1.{}.{}", i / 200, i % 200 + 1)
            .parse()
            .expect("ip")],
        ttl,
    }
}

fn fast() -> WatchConfig {
    WatchConfig {
        min_refresh: Duration::from_millis(100),
        max_refresh: Duration::from_secs(5),
        jitter: 0.0,
    }
}

async fn wait_set(
    rx: &mut tokio::sync::watch::Receiver<EndpointSet>,
    what: &str,
    f: impl FnMut(&EndpointSet) -> bool,
) -> EndpointSet {
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(f))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("watch alive")
        .clone()
}

#[tokio::test]
async fn browse_finds_instances_with_txt_and_tiers() {
    support::init_tracing();
    let key = TsigKey::generate("reg.key").expect("key");
    let server = start(support::free_addr(), &key).await;
    let reg = Registrar::new(server.local_addr(), ZONE.parse().expect("zone"), key);
    for i in 0..3 {
        reg.register(&instance(i, 30)).await.expect("register");
    }
    let res = resolver(server.local_addr())
        .resolve(&Source::Browse(svc()))
        .await
        .expect("resolves");
    let set = EndpointSet::new(res.endpoints);
    assert_eq!(set.len(), 3);
    let first = &set.endpoints()[0];
    assert_eq!(first.instance, "api 0");
    assert_eq!(first.priority, 0);
    assert_eq!(first.zone.as_deref(), Some("a"));
    assert_eq!(
        first.attributes.get("health").map(String::as_str),
        Some("/healthz")
    );
    assert_eq!(first.socket_addr(), "10.1.0.1:9000".parse().expect("addr"));
    assert!(res.ttl.expect("ttl") <= Duration::from_secs(30));

    // Direct SRV on one instance name (as for a headless service).
    let name = svc().instance_name("api 1").expect("name");
    let direct = resolver(server.local_addr())
        .resolve(&Source::Srv(name))
        .await
        .expect("resolves");
    assert_eq!(direct.endpoints.len(), 1);
    assert_eq!(direct.endpoints[0].instance, "h1.mesh.test");

    // Nothing registered under another service: authoritative empty.
    let none = resolver(server.local_addr())
        .resolve(&Source::Browse(
            ServiceName::parse("_x._tcp.mesh.test").expect("svc"),
        ))
        .await
        .expect("empty is an answer");
    assert!(none.endpoints.is_empty());
}

#[tokio::test]
async fn srv_target_without_address_is_skipped() {
    let key = TsigKey::generate("reg.key").expect("key");
    let server = start(support::free_addr(), &key).await;
    let reg = Registrar::new(server.local_addr(), ZONE.parse().expect("zone"), key);
    let mut bare = instance(1, 30);
    bare.addresses.clear();
    reg.register(&bare).await.expect("register");
    reg.register(&instance(2, 30)).await.expect("register");
    let res = resolver(server.local_addr())
        .resolve(&Source::Browse(svc()))
        .await
        .expect("resolves");
    let names: Vec<_> = res.endpoints.iter().map(|e| e.instance.as_str()).collect();
    assert_eq!(names, ["api 2"]);
}

#[tokio::test]
async fn watch_follows_add_change_remove_and_survives_outage() {
    support::init_tracing();
    let key = TsigKey::generate("reg.key").expect("key");
    let addr = support::free_addr();
    let server = start(addr, &key).await;
    let reg = Registrar::new(addr, ZONE.parse().expect("zone"), key.clone());
    reg.register(&instance(0, 1)).await.expect("register");

    let watch = Watch::spawn(resolver(addr), Source::Browse(svc()), fast());
    let mut rx = watch.subscribe();
    wait_set(&mut rx, "first instance", |s| s.len() == 1).await;

    reg.register(&instance(1, 1)).await.expect("register");
    wait_set(&mut rx, "added", |s| s.len() == 2).await;

    let mut changed = instance(1, 1);
    changed.weight = 99;
    reg.update(&changed).await.expect("update");
    wait_set(&mut rx, "changed", |s| {
        s.endpoints().iter().any(|e| e.weight == 99)
    })
    .await;

    reg.deregister(&instance(0, 1)).await.expect("deregister");
    wait_set(&mut rx, "removed", |s| s.len() == 1).await;

    // Outage: the set is kept and marked stale.
    drop(server);
    let stale = wait_set(&mut rx, "stale", EndpointSet::is_stale).await;
    assert_eq!(stale.len(), 1, "last known good kept");

    // Back: fresh again (zone state was in memory only, so register again).
    let server = start(addr, &key).await;
    let reg = Registrar::new(server.local_addr(), ZONE.parse().expect("zone"), key);
    reg.register(&changed).await.expect("register");
    let fresh = wait_set(&mut rx, "fresh", |s| !s.is_stale()).await;
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh.endpoints()[0].weight, 99);
}

#[tokio::test]
async fn watch_honours_ttl() {
    let key = TsigKey::generate("reg.key").expect("key");
    let server = start(support::free_addr(), &key).await;
    let reg = Registrar::new(server.local_addr(), ZONE.parse().expect("zone"), key);
    reg.register(&instance(0, 2)).await.expect("register");
    let watch = Watch::spawn(resolver(server.local_addr()), Source::Browse(svc()), fast());
    let mut rx = watch.subscribe();
    wait_set(&mut rx, "first", |s| s.len() == 1).await;
    let resolved_at = Instant::now();
    reg.register(&instance(1, 2)).await.expect("register");
    wait_set(&mut rx, "second", |s| s.len() == 2).await;
    let took = resolved_at.elapsed();
    // Not before the 2 s TTL expires (the answer is cached until then), and not much later.
    assert!(
        took >= Duration::from_millis(1500),
        "refreshed early: {took:?}"
    );
    assert!(
        took <= Duration::from_millis(3000),
        "refreshed late: {took:?}"
    );
}

#[tokio::test]
async fn five_hundred_instances() {
    let key = TsigKey::generate("reg.key").expect("key");
    let server = start(support::free_addr(), &key).await;
    let reg = Registrar::new(server.local_addr(), ZONE.parse().expect("zone"), key);
    for i in 0..500 {
        reg.register(&instance(i, 60)).await.expect("register");
    }
    let started = Instant::now();
    let res = resolver(server.local_addr())
        .resolve(&Source::Browse(svc()))
        .await
        .expect("resolves (PTR answer needs TCP)");
    assert_eq!(res.endpoints.len(), 500);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn static_sources_never_change() {
    let watch = Watch::spawn(
        resolver("127.0.0.1:9".parse().expect("addr")),
        Source::from_addrs(["10.0.0.1:80".parse().expect("addr")]),
        fast(),
    );
    let mut rx = watch.subscribe();
    let set = wait_set(&mut rx, "static", EndpointSet::is_resolved).await;
    assert_eq!(set.len(), 1);
    assert!(!set.is_stale());
}

/// BIND's own tools against the embedded server: `nsupdate` signs with TSIG (and checks our
/// signed response), `dig` reads the result back.
#[tokio::test]
async fn nsupdate_and_dig_against_embedded_server() {
    let nsupdate = support::require_tool("nsupdate", "bind9-dnsutils");
    let key = TsigKey::generate("tool.key").expect("key");
    let server = start(support::free_addr(), &key).await;
    let addr = server.local_addr();
    let script = format!(
        "server {ip} {port}\nzone {ZONE}\n\
         update add web1._api._tcp.{ZONE} 30 SRV 0 5 8080 h1.{ZONE}\n\
         update add _api._tcp.{ZONE} 30 PTR web1._api._tcp.{ZONE}\n\
         update add web1._api._tcp.{ZONE} 30 TXT \"zone=x\"\n\
         update add h1.{ZONE} 30 A 10.7.0.1\nsend\n",
        ip = addr.ip(),
        port = addr.port(),
    );
    let run = |script: String, key_arg: String| {
        let nsupdate = nsupdate.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = std::process::Command::new(nsupdate)
                .args(["-v", "-t", "3", "-y", &key_arg])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("nsupdate runs");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(script.as_bytes())
                .expect("write script");
            child.wait_with_output().expect("nsupdate finishes")
        })
    };
    let good = format!("hmac-sha256:tool.key:{}", key.secret_base64());
    let out = run(script.clone(), good).await.expect("join");
    assert!(
        out.status.success(),
        "nsupdate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dig = |name: String, t: &'static str| {
        tokio::task::spawn_blocking(move || support::dig(addr, &name, t))
    };
    let srv = dig(format!("web1._api._tcp.{ZONE}"), "SRV")
        .await
        .expect("join");
    assert_eq!(srv, ["0 5 8080 h1.mesh.test."]);
    let res = resolver(addr)
        .resolve(&Source::Browse(svc()))
        .await
        .expect("resolves");
    assert_eq!(res.endpoints.len(), 1);
    assert_eq!(res.endpoints[0].zone.as_deref(), Some("x"));

    let wrong = TsigKey::generate("tool.key").expect("key");
    let bad = format!("hmac-sha256:tool.key:{}", wrong.secret_base64());
    let out = run(script.replace("10.7.0.1", "10.7.0.2"), bad)
        .await
        .expect("join");
    assert!(!out.status.success(), "a wrong key must be refused");
    let a = dig(format!("h1.{ZONE}"), "A").await.expect("join");
    assert_eq!(a, ["10.7.0.1"]);
}
