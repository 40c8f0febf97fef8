//! `meshedge dns ...`: the embedded authoritative DNS-SD server, and register / browse
//! clients for scripts and operators.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use meshedge_discovery::resolve::{DnsResolver, Resolve, ResolverConfig, Source};
use meshedge_discovery::{Instance, Name, Registrar, ServerConfig, ServiceName, TsigKey, Txt};

/// `meshedge dns`.
#[derive(Debug, Args)]
pub struct DnsArgs {
    #[command(subcommand)]
    command: DnsCommand,
}

#[derive(Debug, Subcommand)]
enum DnsCommand {
    /// Serve DNS-SD zones over UDP and TCP, accepting TSIG-signed RFC 2136 updates.
    Serve {
        #[arg(long)]
        listen: SocketAddr,
        /// Zone apex, e.g. `mesh.test`; repeat for several.
        #[arg(long = "zone", required = true)]
        zones: Vec<String>,
        /// Keeps `zones.snapshot` here so registrations survive restarts.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// TSIG key file (`NAME BASE64SECRET`, HMAC-SHA256); created (0600) when missing.
        #[arg(long)]
        tsig_key_file: Option<PathBuf>,
    },
    /// Register (or update) an instance with a signed dynamic update.
    Register {
        #[command(flatten)]
        target: UpdateTarget,
        #[arg(long)]
        port: u16,
        #[arg(long = "address", required = true)]
        addresses: Vec<IpAddr>,
        #[arg(long, default_value_t = 0)]
        priority: u16,
        #[arg(long, default_value_t = 100)]
        weight: u16,
        /// TXT `zone=`.
        #[arg(long = "locality")]
        locality: Option<String>,
        /// Other TXT attributes, `key=value`.
        #[arg(long = "txt")]
        txt: Vec<String>,
        #[arg(long, default_value_t = 30)]
        ttl: u32,
    },
    /// Remove an instance.
    Deregister {
        #[command(flatten)]
        target: UpdateTarget,
        #[arg(long = "address")]
        addresses: Vec<IpAddr>,
    },
    /// Browse a service (PTR -> SRV/TXT -> A/AAAA) and print its endpoints.
    Browse {
        #[arg(long)]
        server: SocketAddr,
        /// `_<svc>._tcp.<domain>`.
        service: String,
    },
}

#[derive(Debug, Args)]
struct UpdateTarget {
    #[arg(long)]
    server: SocketAddr,
    /// The zone the service lives in.
    #[arg(long)]
    zone: String,
    #[arg(long)]
    tsig_key_file: PathBuf,
    /// `_<svc>._tcp.<domain>`.
    #[arg(long)]
    service: String,
    /// Instance label.
    #[arg(long)]
    instance: String,
}

fn read_key(path: &Path) -> anyhow::Result<TsigKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(name), Some(secret), None) => TsigKey::from_base64(name, secret)
            .with_context(|| format!("{}: invalid TSIG key", path.display())),
        _ => bail!("{}: expected `NAME BASE64SECRET`", path.display()),
    }
}

fn key_or_create(path: &Path) -> anyhow::Result<TsigKey> {
    if path.exists() {
        return read_key(path);
    }
    let key = TsigKey::generate("meshedge-update")?;
    let line = format!("{} {}\n", key.name().to_ascii(), key.secret_base64());
    meshedge_ca::fsutil::write_atomic(path, line.as_bytes(), 0o600)
        .with_context(|| format!("{}", path.display()))?;
    eprintln!("created TSIG key {}", path.display());
    Ok(key)
}

fn instance(t: &UpdateTarget, port: u16, addresses: Vec<IpAddr>) -> anyhow::Result<Instance> {
    let service = ServiceName::parse(&t.service)?;
    let target = Name::from_ascii(format!(
        "{}.{}",
        t.instance.replace([' ', '.'], "-"),
        t.zone
    ))
    .with_context(|| format!("target host for {}", t.instance))?;
    Ok(Instance {
        service,
        name: t.instance.clone(),
        target,
        port,
        priority: 0,
        weight: 100,
        txt: Txt::default(),
        addresses,
        ttl: 30,
    })
}

fn registrar(t: &UpdateTarget) -> anyhow::Result<Registrar> {
    let zone = Name::from_ascii(&t.zone).with_context(|| format!("zone {:?}", t.zone))?;
    Ok(Registrar::new(t.server, zone, read_key(&t.tsig_key_file)?))
}

/// Runs `meshedge dns ...`.
pub async fn run(args: DnsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        DnsCommand::Serve {
            listen,
            zones,
            state_dir,
            tsig_key_file,
        } => {
            meshedge_discovery::metrics::describe();
            let zone_refs: Vec<&str> = zones.iter().map(String::as_str).collect();
            let mut config = ServerConfig::try_new(listen, &zone_refs)?;
            if let Some(dir) = &state_dir {
                meshedge_ca::fsutil::create_private_dir(dir)
                    .with_context(|| format!("{}", dir.display()))?;
                config.snapshot = Some(dir.join("zones.snapshot"));
            }
            if let Some(path) = &tsig_key_file {
                config.keys.push(key_or_create(path)?);
            }
            let server = meshedge_discovery::serve(config).await?;
            println!("dns listening on {}", server.local_addr());
            crate::cli::ca::shutdown_signal().await;
            tracing::info!("dns server shutting down");
            server.shutdown();
        }
        DnsCommand::Register {
            target,
            port,
            addresses,
            priority,
            weight,
            locality,
            txt,
            ttl,
        } => {
            let mut inst = instance(&target, port, addresses)?;
            inst.priority = priority;
            inst.weight = weight;
            inst.ttl = ttl;
            inst.txt.zone = locality;
            for kv in txt {
                let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
                inst.txt
                    .attributes
                    .insert(k.to_ascii_lowercase(), v.to_owned());
            }
            registrar(&target)?.register_or_update(&inst).await?;
            println!("registered {} in {}", target.instance, target.service);
        }
        DnsCommand::Deregister { target, addresses } => {
            let inst = instance(&target, 0, addresses)?;
            registrar(&target)?.deregister(&inst).await?;
            println!("deregistered {} from {}", target.instance, target.service);
        }
        DnsCommand::Browse { server, service } => {
            let resolver = DnsResolver::new(&ResolverConfig::new(vec![server]))?;
            let res = resolver
                .resolve(&Source::Browse(ServiceName::parse(&service)?))
                .await?;
            for e in res.endpoints {
                println!(
                    "{}\t{}\tpriority={}\tweight={}\tzone={}",
                    e.instance,
                    e.socket_addr(),
                    e.priority,
                    e.weight,
                    e.zone.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
