//! `meshedge demo`: the whole mesh on loopback, as real processes of this binary:
//! a CA, a DNS-SD server, one agent per simulated node, 3 zones x 2 `echo` instances
//! registered in DNS-SD, and 2 edge gateways in different zones.
//!
//! Fixed ports (documented in README): HTTPS and HTTP/3 127.0.0.1:8443 (edge 1) and :8444
//! (edge 2), admin 127.0.0.1:9901 and :9902, CA 127.0.0.1:8081, DNS 127.0.0.1:8053,
//! echo instances 127.0.0.1:9101-9106. The state dir is wiped at every start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use meshedge_ca::keyset::Keyset;
use meshedge_ca::policy::IssuancePolicy;
use meshedge_ca::store::{token_hash, CaStore, JoinTokenRecord, RegistrationEntry, SqliteStore};
use meshedge_ca::TrustDomain;
use meshedge_discovery::{Instance, Name, Registrar, ServiceName, TsigKey, Txt};
use time::OffsetDateTime;

mod edges;
mod procs;

use procs::Procs;

/// The demo's trust domain and DNS-SD domain.
const DOMAIN: &str = "mesh.test";
const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];
const CA_ADDR: &str = "127.0.0.1:8081";
const DNS_ADDR: &str = "127.0.0.1:8053";

/// `meshedge demo` arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo keeps its CA, sockets, certificates and logs (wiped at start).
    #[arg(long, default_value = "/tmp/meshedge-demo")]
    state_dir: PathBuf,
}

fn say(what: &str) {
    println!("  [demo] {what}");
}

fn s(v: &str) -> String {
    v.to_owned()
}

/// Runs `meshedge demo`.
pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = args.state_dir;
    procs::stop_leftovers(&dir);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("resetting {}", dir.display()))?;
    }
    meshedge_ca::fsutil::create_private_dir(&dir)?;
    let mut procs = Procs::new(&dir)?;
    let started = std::time::Instant::now();

    // The CA: initialised here, served by its own process.
    let ca_dir = dir.join("ca");
    let td = TrustDomain::parse(DOMAIN)?;
    let policy = IssuancePolicy {
        default_ttl_secs: 300,
        min_ttl_secs: 30,
        max_ttl_secs: 3600,
        ..IssuancePolicy::default()
    };
    let keyset = Keyset::init(&ca_dir, &td, policy, OffsetDateTime::now_utc())?;
    let bundle = dir.join("bundle.pem");
    std::fs::write(&bundle, keyset.bundle_pem())?;
    let store = SqliteStore::open(&ca_dir)?;
    procs.start(
        "ca",
        &[
            s("ca"),
            s("serve"),
            s("--state-dir"),
            path(&ca_dir),
            s("--listen"),
            s(CA_ADDR),
        ],
        "ca listening on",
    )?;
    say(&format!("CA for spiffe://{DOMAIN} on {CA_ADDR}"));

    // DNS-SD.
    let tsig = dir.join("tsig.key");
    procs.start(
        "dns",
        &[
            s("dns"),
            s("serve"),
            s("--listen"),
            s(DNS_ADDR),
            s("--zone"),
            s(DOMAIN),
            s("--state-dir"),
            path(&dir.join("dns")),
            s("--tsig-key-file"),
            path(&tsig),
        ],
        "dns listening on",
    )?;
    say(&format!("DNS-SD server for {DOMAIN} on {DNS_ADDR}"));

    // One agent per node: a workload node per zone, and an edge node in zone-a and zone-b.
    let uid = nix::unistd::getuid().as_raw();
    let mut sockets = Vec::new();
    let mut agent_metrics = Vec::new();
    for zone in ZONES {
        let node = format!("node-{zone}");
        let (socket, metrics) = start_agent(&mut procs, &store, &dir, &node, zone).await?;
        agent_metrics.push(metrics);
        register_entry(
            &store,
            &format!("spiffe://{DOMAIN}/svc/echo"),
            &node,
            uid,
            vec![],
        )
        .await?;
        sockets.push((zone, socket));
    }
    let mut edge_sockets = Vec::new();
    for (i, zone) in ["zone-a", "zone-b"].into_iter().enumerate() {
        let node = format!("edge-node-{}", i + 1);
        let (socket, metrics) = start_agent(&mut procs, &store, &dir, &node, zone).await?;
        agent_metrics.push(metrics);
        register_entry(
            &store,
            &format!("spiffe://{DOMAIN}/edge/gw-{}", i + 1),
            &node,
            uid,
            vec![format!("edge.{DOMAIN}"), s("localhost")],
        )
        .await?;
        edge_sockets.push((zone, socket));
    }

    // 3 zones x 2 echo instances, registered in DNS-SD with their zone.
    let key_line = std::fs::read_to_string(&tsig)?;
    let (key_name, key_secret) = key_line.trim().split_once(' ').context("tsig key file")?;
    let registrar = Registrar::new(
        DNS_ADDR.parse()?,
        Name::from_ascii(DOMAIN)?,
        TsigKey::from_base64(key_name, key_secret)?,
    );
    let service = ServiceName::parse(&format!("_echo._tcp.{DOMAIN}"))?;
    let mut port = 9101;
    for (zone, socket) in &sockets {
        for n in 1..=2 {
            let instance = format!("echo-{zone}-{n}");
            let listen = format!("127.0.0.1:{port}");
            procs.start(
                &instance,
                &[
                    s("echo"),
                    s("--socket"),
                    path(socket),
                    s("--listen"),
                    listen.clone(),
                    s("--zone"),
                    s(zone),
                    s("--service"),
                    s("echo"),
                    s("--instance"),
                    instance.clone(),
                ],
                "echo listening on",
            )?;
            let mut txt = Txt {
                zone: Some((*zone).to_owned()),
                ..Txt::default()
            };
            txt.attributes.insert(s("health"), s("/healthz"));
            registrar
                .register_or_update(&Instance {
                    service: service.clone(),
                    name: instance.clone(),
                    target: Name::from_ascii(format!("{instance}.{DOMAIN}"))?,
                    port,
                    priority: 0,
                    weight: 100,
                    txt,
                    addresses: vec![listen.parse::<SocketAddr>()?.ip()],
                    ttl: 5,
                })
                .await
                .with_context(|| format!("registering {instance} in DNS-SD"))?;
            say(&format!(
                "echo {instance} ({zone}) on {listen}, registered in _echo._tcp.{DOMAIN}"
            ));
            port += 1;
        }
    }

    // Two edge gateways.
    let gateways = edges::start(&mut procs, &dir, &edge_sockets, &bundle).await?;

    println!();
    println!(
        "meshedge demo is ready ({:.1}s). One line each:",
        started.elapsed().as_secs_f64()
    );
    println!("https: https://edge.{DOMAIN}:8443/");
    println!("admin: http://{}/", gateways[0].admin);
    println!("bundle: {}", bundle.display());
    println!("HTTP/3: 127.0.0.1:8443");
    println!(
        "curl --cacert {} --resolve edge.{DOMAIN}:8443:127.0.0.1 https://edge.{DOMAIN}:8443/",
        bundle.display()
    );
    println!();
    println!("More:");
    println!("  second gateway:  curl --cacert {} --resolve edge.{DOMAIN}:8444:127.0.0.1 https://edge.{DOMAIN}:8444/ (admin http://{}/)", bundle.display(), gateways[1].admin);
    let agent_flags: String = agent_metrics
        .iter()
        .map(|a| format!(" --agent {a}"))
        .collect();
    for verb in ["status", "doctor"] {
        println!(
            "  {verb}:{:pad$}{} {verb} --admin {} --admin {}{agent_flags}",
            "",
            exe_name(),
            gateways[0].admin,
            gateways[1].admin,
            pad = 11 - verb.len()
        );
    }
    println!("  kill a zone:     kill $(cat {}/pids/echo-zone-a-*.pid)   # the gateway in zone-a moves to zone-b/c", dir.display());
    println!("  kill a gateway:  kill -9 $(cat {}/pids/edge-1.pid)       # the other keeps serving on :8444", dir.display());
    println!("  kill the DNS:    kill $(cat {}/pids/dns.pid)             # last good endpoints kept, marked stale", dir.display());
    println!("  kill the CA:     kill $(cat {}/pids/ca.pid)              # SVIDs keep serving until expiry", dir.display());
    println!("  logs:            {}/logs/", dir.display());
    println!("Ctrl-C stops everything.");

    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = crate::cli::ca::shutdown_signal() => break,
            _ = tick.tick() => {
                for (name, status) in procs.exited() {
                    eprintln!("  [demo] {name} exited ({status}); see {}/logs/{name}.log", dir.display());
                }
            }
        }
    }
    println!("stopping the demo...");
    procs.stop_all();
    Ok(ExitCode::SUCCESS)
}

fn exe_name() -> String {
    std::env::current_exe().map_or_else(|_| s("meshedge"), |p| p.display().to_string())
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

async fn register_entry(
    store: &SqliteStore,
    id: &str,
    node: &str,
    uid: u32,
    dns: Vec<String>,
) -> anyhow::Result<()> {
    store
        .insert_entry(&RegistrationEntry {
            id: hex::encode(rand::random::<[u8; 8]>()),
            spiffe_id: id.to_owned(),
            parent: node.to_owned(),
            selectors: vec![format!("unix:uid:{uid}")],
            dns_names: dns,
            ttl_secs: None,
        })
        .await?;
    Ok(())
}

/// Starts the agent of `node` with a fresh join token; returns its Workload API socket and
/// its metrics address (127.0.0.1:9201 and up).
async fn start_agent(
    procs: &mut Procs,
    store: &SqliteStore,
    dir: &Path,
    node: &str,
    zone: &str,
) -> anyhow::Result<(PathBuf, String)> {
    static NEXT_METRICS_PORT: std::sync::atomic::AtomicU16 =
        std::sync::atomic::AtomicU16::new(9201);
    let metrics = format!(
        "127.0.0.1:{}",
        NEXT_METRICS_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let token = hex::encode(rand::random::<[u8; 24]>());
    store
        .insert_token(&JoinTokenRecord {
            hash: token_hash(&token),
            node: node.to_owned(),
            expires_at: OffsetDateTime::now_utc().unix_timestamp() + 600,
        })
        .await?;
    let socket = dir.join("sockets").join(format!("{node}.sock"));
    std::fs::create_dir_all(dir.join("sockets"))?;
    procs.start(
        &format!("agent-{node}"),
        &[
            s("agent"),
            s("--ca-addr"),
            s(CA_ADDR),
            s("--ca-bundle"),
            path(&dir.join("bundle.pem")),
            s("--join-token"),
            token,
            s("--node"),
            s(node),
            s("--zone"),
            s(zone),
            s("--state-dir"),
            path(&dir.join("agents").join(node)),
            s("--socket"),
            path(&socket),
            s("--metrics"),
            metrics.clone(),
        ],
        "agent listening on",
    )?;
    say(&format!(
        "agent {node} ({zone}) enrolled, Workload API on {}, metrics on {metrics}",
        socket.display()
    ));
    Ok((socket, metrics))
}
