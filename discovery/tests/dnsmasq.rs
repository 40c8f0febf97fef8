//! Resolve and watch against dnsmasq serving DNS-SD records from its config.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use meshedge_discovery::{
    DnsResolver, EndpointSet, Resolve, ResolverConfig, ServiceName, Source, Watch, WatchConfig,
};
use support::ChildGuard;

struct Dnsmasq {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    child: ChildGuard,
}

fn start_dnsmasq(addr: SocketAddr, records: &str) -> Dnsmasq {
    let bin = support::require_tool("dnsmasq", "dnsmasq");
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("dnsmasq.conf");
    let text = format!(
        "port={port}\nlisten-address={ip}\nbind-interfaces\nno-resolv\nno-hosts\n\
         no-dhcp-interface=\nlocal-ttl=2\n{records}\n",
        port = addr.port(),
        ip = addr.ip(),
    );
    std::fs::write(&conf, text).expect("write config");
    let child = ChildGuard::spawn(
        "dnsmasq",
        Command::new(bin)
            .arg("--keep-in-foreground")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--pid-file")
            .arg("--user=root")
            .arg(format!("--conf-file={}", conf.display())),
    );
    Dnsmasq {
        addr,
        _dir: dir,
        child,
    }
}

// `local=/dm.test/` makes dnsmasq answer NXDOMAIN (not REFUSED) for unknown names in the
// domain, as an authoritative server would; REFUSED counts as a failure and keeps the last
// known good set.
const RECORDS: &str = r#"
local=/dm.test/
ptr-record=_api._tcp.dm.test,a1._api._tcp.dm.test
ptr-record=_api._tcp.dm.test,a2._api._tcp.dm.test
ptr-record=_api._tcp.dm.test,ghost._api._tcp.dm.test
ptr-record=_api._tcp.dm.test,noaddr._api._tcp.dm.test
srv-host=a1._api._tcp.dm.test,h1.dm.test,9000,0,10
srv-host=a2._api._tcp.dm.test,h2.dm.test,9001,1,5
srv-host=noaddr._api._tcp.dm.test,nowhere.dm.test,9002,0,1
srv-host=_grpc._tcp.headless.dm.test,h1.dm.test,7000,0,50
srv-host=_grpc._tcp.headless.dm.test,h2.dm.test,7000,0,50
txt-record=a1._api._tcp.dm.test,"zone=eu","Health=/h","=nokey","kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk=long","flag","health=second"
txt-record=a2._api._tcp.dm.test,"zone=us"
host-record=h1.dm.test,10.9.0.1
host-record=h2.dm.test,10.9.0.2,fd00::2
"#;

fn resolver(addr: SocketAddr) -> DnsResolver {
    let mut config = ResolverConfig::new(vec![addr]);
    config.timeout = Duration::from_millis(300);
    config.attempts = 1;
    DnsResolver::new(&config).expect("resolver")
}

#[tokio::test]
async fn browse_srv_and_txt_from_dnsmasq() {
    support::init_tracing();
    let mut dm = start_dnsmasq(support::free_addr(), RECORDS);
    support::wait_for_dns(dm.addr, &mut dm.child).await;

    let svc = ServiceName::parse("_api._tcp.dm.test").expect("svc");
    let res = resolver(dm.addr)
        .resolve(&Source::Browse(svc))
        .await
        .expect("resolves");
    let set = EndpointSet::new(res.endpoints);
    let got: Vec<(String, String, u16, u16, u16)> = set
        .endpoints()
        .iter()
        .map(|e| {
            (
                e.instance.clone(),
                e.address.to_string(),
                e.port,
                e.priority,
                e.weight,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a1".into(), "10.9.0.1".into(), 9000, 0, 10),
            ("a2".into(), "10.9.0.2".into(), 9001, 1, 5),
            ("a2".into(), "fd00::2".into(), 9001, 1, 5),
        ],
        "ghost (no SRV) and noaddr (no A/AAAA) are skipped"
    );
    let a1 = &set.endpoints()[0];
    assert_eq!(a1.zone.as_deref(), Some("eu"));
    let attrs: Vec<(&str, &str)> = a1
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        attrs,
        [("flag", ""), ("health", "/h")],
        "malformed strings skipped"
    );

    let headless = resolver(dm.addr)
        .resolve(&Source::Srv(
            "_grpc._tcp.headless.dm.test.".parse().expect("name"),
        ))
        .await
        .expect("resolves");
    let set = EndpointSet::new(headless.endpoints);
    let addrs: Vec<String> = set
        .endpoints()
        .iter()
        .map(|e| e.socket_addr().to_string())
        .collect();
    assert_eq!(addrs, ["10.9.0.1:7000", "10.9.0.2:7000", "[fd00::2]:7000"]);
}

#[tokio::test]
async fn watch_keeps_last_good_while_dnsmasq_is_down() {
    support::init_tracing();
    let addr = support::free_addr();
    let mut dm = start_dnsmasq(addr, RECORDS);
    support::wait_for_dns(addr, &mut dm.child).await;

    let config = WatchConfig {
        min_refresh: Duration::from_millis(200),
        max_refresh: Duration::from_secs(2),
        jitter: 0.0,
    };
    let svc = ServiceName::parse("_api._tcp.dm.test").expect("svc");
    let watch = Watch::spawn(resolver(addr), Source::Browse(svc), config);
    let mut rx = watch.subscribe();
    let wait = |rx: &mut tokio::sync::watch::Receiver<EndpointSet>, f: fn(&EndpointSet) -> bool| {
        let mut rx = rx.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(15), rx.wait_for(f))
                .await
                .expect("in time")
                .expect("alive")
                .clone()
        }
    };
    let first = wait(&mut rx, |s| s.len() == 3).await;
    assert!(!first.is_stale());

    drop(dm); // killed by PID
    let stale = wait(&mut rx, EndpointSet::is_stale).await;
    assert_eq!(stale.len(), 3, "kept while the server is down");

    let mut dm = start_dnsmasq(addr, RECORDS);
    support::wait_for_dns(addr, &mut dm.child).await;
    let fresh = wait(&mut rx, |s| !s.is_stale()).await;
    assert_eq!(fresh.len(), 3);
}
