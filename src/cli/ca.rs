//! `meshedge ca ...`: initialise, serve and administer the embedded CA.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use meshedge_ca::keyset::{self, Keyset};
use meshedge_ca::policy::IssuancePolicy;
use meshedge_ca::server::CaServer;
use meshedge_ca::store::{
    token_hash, Ban, CaStore, JoinTokenRecord, RegistrationEntry, SqliteStore,
};
use meshedge_ca::{SpiffeId, TrustDomain};
use time::OffsetDateTime;

use crate::duration::parse_duration;

/// `meshedge ca`.
#[derive(Debug, Args)]
pub struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create a root and an intermediate in a new state dir.
    Init {
        #[arg(long)]
        trust_domain: String,
        #[arg(long)]
        state_dir: PathBuf,
        /// Default SVID lifetime.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        default_ttl: Duration,
        /// Shortest SVID lifetime a request may ask for.
        #[arg(long, default_value = "1m", value_parser = parse_duration)]
        min_ttl: Duration,
        /// Longest SVID lifetime a request may ask for.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        max_ttl: Duration,
        /// Lifetime of the signing intermediate (rotated at half of it).
        #[arg(long, default_value = "7d", value_parser = parse_duration)]
        intermediate_ttl: Duration,
        /// Lifetime of a root.
        #[arg(long, default_value = "3650d", value_parser = parse_duration)]
        root_ttl: Duration,
    },
    /// Serve the HTTPS API.
    Serve {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        listen: SocketAddr,
        /// Extra DNS names for the API's serving certificate.
        #[arg(long = "server-name")]
        server_names: Vec<String>,
    },
    /// Join tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Registration entries.
    Entry {
        #[command(subcommand)]
        command: EntryCommand,
    },
    /// Print the trust bundle (PEM).
    Bundle {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Root rotation: add, activate, retire, list.
    Root {
        #[command(subcommand)]
        command: RootCommand,
    },
    /// Ban a node: it can renew nothing and obtain nothing.
    Ban {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        node: String,
        #[arg(long, default_value = "banned by operator")]
        reason: String,
    },
    /// Lift a ban.
    Unban {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        node: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a single-use join token for a node; the token is printed last.
    Create {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        node: String,
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
    },
}

#[derive(Debug, Subcommand)]
enum EntryCommand {
    /// Register a workload ID under a parent node.
    Create {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        spiffe_id: String,
        /// The parent node name (or its full `spiffe://<td>/node/<name>` ID).
        #[arg(long)]
        parent: String,
        /// `unix:uid:N`, `unix:gid:N` or `unix:path:/abs/path`; repeat for several.
        #[arg(long = "selector", required = true)]
        selectors: Vec<String>,
        #[arg(long = "dns")]
        dns_names: Vec<String>,
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// List entries (JSON lines).
    List {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Delete an entry by ID.
    Delete {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum RootCommand {
    /// Add a new root to the bundle (not yet signing).
    Add {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Make a root the signing root (a new intermediate is issued under it).
    Activate {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        generation: u64,
    },
    /// Remove a root from the bundle.
    Retire {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        generation: u64,
    },
    /// Show roots and the intermediate.
    List {
        #[arg(long)]
        state_dir: PathBuf,
    },
}

/// Runs `meshedge ca ...`.
pub async fn run(args: CaArgs) -> anyhow::Result<ExitCode> {
    let now = OffsetDateTime::now_utc();
    match args.command {
        CaCommand::Init {
            trust_domain,
            state_dir,
            default_ttl,
            min_ttl,
            max_ttl,
            intermediate_ttl,
            root_ttl,
        } => {
            let td = TrustDomain::parse(&trust_domain)?;
            let policy = IssuancePolicy {
                default_ttl_secs: default_ttl.as_secs(),
                min_ttl_secs: min_ttl.as_secs(),
                max_ttl_secs: max_ttl.as_secs(),
                intermediate_ttl_secs: intermediate_ttl.as_secs(),
                root_ttl_secs: root_ttl.as_secs(),
            };
            policy.validate()?;
            let ks = Keyset::init(&state_dir, &td, policy, now)?;
            SqliteStore::open(&state_dir)?;
            println!(
                "initialised CA for {td} in {}: root g{}, intermediate g{} (expires {})",
                state_dir.display(),
                ks.manifest.active_root,
                ks.intermediate.generation,
                ks.intermediate.not_after
            );
        }
        CaCommand::Serve {
            state_dir,
            listen,
            server_names,
        } => {
            meshedge_ca::metrics::describe();
            let render = crate::telemetry::prometheus();
            let server = CaServer::bind(state_dir, listen, server_names, Some(render)).await?;
            println!("ca listening on {}", server.local_addr());
            tokio::select! {
                _ = server.run() => {}
                _ = shutdown_signal() => tracing::info!("ca shutting down"),
            }
        }
        CaCommand::Token {
            command:
                TokenCommand::Create {
                    state_dir,
                    node,
                    ttl,
                },
        } => {
            let ks = Keyset::load(&state_dir)?;
            ks.trust_domain
                .node_id(&node)
                .with_context(|| format!("node name {node:?}"))?;
            let token = hex::encode(rand::random::<[u8; 24]>());
            let store = SqliteStore::open(&state_dir)?;
            let expires_at = now.unix_timestamp() + ttl.as_secs() as i64;
            store
                .insert_token(&JoinTokenRecord {
                    hash: token_hash(&token),
                    node: node.clone(),
                    expires_at,
                })
                .await?;
            eprintln!(
                "join token for node {node}, single use, valid {}s:",
                ttl.as_secs()
            );
            println!("{token}");
        }
        CaCommand::Entry { command } => return entry(command).await,
        CaCommand::Bundle { state_dir } => print!("{}", Keyset::load(&state_dir)?.bundle_pem()),
        CaCommand::Root { command } => root(command, now)?,
        CaCommand::Ban {
            state_dir,
            node,
            reason,
        } => {
            SqliteStore::open(&state_dir)?
                .ban(&Ban {
                    node: node.clone(),
                    reason,
                    created_at: now.unix_timestamp(),
                })
                .await?;
            println!("node {node} banned");
        }
        CaCommand::Unban { state_dir, node } => {
            if !SqliteStore::open(&state_dir)?.unban(&node).await? {
                bail!("node {node} was not banned");
            }
            println!("node {node} unbanned");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks a workload selector: `unix:uid:N`, `unix:gid:N`, `unix:path:/abs`.
fn check_selector(sel: &str) -> anyhow::Result<()> {
    let ok = match sel
        .split_once(':')
        .and_then(|(k, v)| (k == "unix").then_some(v))
    {
        Some(v) => match v.split_once(':') {
            Some(("uid" | "gid", n)) => n.parse::<u32>().is_ok(),
            Some(("path", p)) => p.starts_with('/'),
            _ => false,
        },
        None => false,
    };
    if !ok {
        bail!("selector {sel:?}: expected unix:uid:N, unix:gid:N or unix:path:/absolute/path");
    }
    Ok(())
}

async fn entry(command: EntryCommand) -> anyhow::Result<ExitCode> {
    match command {
        EntryCommand::Create {
            state_dir,
            spiffe_id,
            parent,
            selectors,
            dns_names,
            ttl,
        } => {
            let ks = Keyset::load(&state_dir)?;
            let id = SpiffeId::parse(&spiffe_id)?;
            if !id.is_member_of(&ks.trust_domain) {
                bail!("{id} is outside trust domain {}", ks.trust_domain);
            }
            let parent = match SpiffeId::parse(&parent) {
                Ok(pid) => pid
                    .node_name()
                    .with_context(|| format!("parent {pid} is not a node ID"))?
                    .to_owned(),
                Err(_) => parent,
            };
            ks.trust_domain
                .node_id(&parent)
                .with_context(|| format!("parent node name {parent:?}"))?;
            for s in &selectors {
                check_selector(s)?;
            }
            let entry = RegistrationEntry {
                id: hex::encode(rand::random::<[u8; 8]>()),
                spiffe_id: id.to_string(),
                parent,
                selectors,
                dns_names,
                ttl_secs: ttl.map(|d| d.as_secs()),
            };
            SqliteStore::open(&state_dir)?.insert_entry(&entry).await?;
            eprintln!("registered {} under node {}", entry.spiffe_id, entry.parent);
            println!("{}", entry.id);
        }
        EntryCommand::List { state_dir } => {
            for e in SqliteStore::open(&state_dir)?.entries(None).await? {
                println!("{}", serde_json::to_string(&e)?);
            }
        }
        EntryCommand::Delete { state_dir, id } => {
            if !SqliteStore::open(&state_dir)?.delete_entry(&id).await? {
                bail!("no entry with id {id}");
            }
            println!("deleted entry {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn root(command: RootCommand, now: OffsetDateTime) -> anyhow::Result<()> {
    match command {
        RootCommand::Add { state_dir } => {
            let g = keyset::add_root(&state_dir, now)?;
            println!("added root g{g} to the bundle; activate it with `meshedge ca root activate --generation {g}`");
        }
        RootCommand::Activate {
            state_dir,
            generation,
        } => {
            keyset::activate_root(&state_dir, generation, now)?;
            println!("root g{generation} now signs a new intermediate");
        }
        RootCommand::Retire {
            state_dir,
            generation,
        } => {
            keyset::retire_root(&state_dir, generation)?;
            println!("root g{generation} removed from the bundle");
        }
        RootCommand::List { state_dir } => {
            let ks = Keyset::load(&state_dir)?;
            for r in &ks.roots {
                let active = if r.generation == ks.manifest.active_root {
                    " (active)"
                } else {
                    ""
                };
                println!("root g{} expires {}{active}", r.generation, r.not_after);
            }
            println!(
                "intermediate g{} expires {}",
                ks.intermediate.generation, ks.intermediate.not_after
            );
        }
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
