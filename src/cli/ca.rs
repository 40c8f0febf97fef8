//! `meshedge ca ...`: initialise, serve and administer the embedded CA.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use meshedge_ca::backend::{self, PostgresConfig, StoreConfig};
use meshedge_ca::keyset::Keyset;
use meshedge_ca::policy::IssuancePolicy;
use meshedge_ca::seal::Kek;
use meshedge_ca::server::CaServer;
use meshedge_ca::store::{token_hash, Ban, JoinTokenRecord, RegistrationEntry, SqliteStore};
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
        /// Keep the CA in PostgreSQL (shared by replicas) instead of the state dir. A
        /// second replica runs the same command with its own state dir: it joins the CA
        /// already in the database.
        #[arg(long)]
        postgres: Option<String>,
        /// Key-encryption key file for `--postgres` (created when missing).
        #[arg(long, requires = "postgres")]
        kek_file: Option<PathBuf>,
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
            postgres,
            kek_file,
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
            match postgres {
                None => {
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
                Some(url) => init_postgres(&state_dir, &td, policy, url, kek_file, now).await?,
            }
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
            let ks = backend::open(&state_dir).await?.keys.load().await?;
            ks.trust_domain
                .node_id(&node)
                .with_context(|| format!("node name {node:?}"))?;
            let token = hex::encode(rand::random::<[u8; 24]>());
            let store = backend::open(&state_dir).await?.records;
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
        CaCommand::Bundle { state_dir } => print!(
            "{}",
            backend::open(&state_dir)
                .await?
                .keys
                .load()
                .await?
                .bundle_pem()
        ),
        CaCommand::Root { command } => root(command, now).await?,
        CaCommand::Ban {
            state_dir,
            node,
            reason,
        } => {
            backend::open(&state_dir)
                .await?
                .records
                .ban(&Ban {
                    node: node.clone(),
                    reason,
                    created_at: now.unix_timestamp(),
                })
                .await?;
            println!("node {node} banned");
        }
        CaCommand::Unban { state_dir, node } => {
            if !backend::open(&state_dir)
                .await?
                .records
                .unban(&node)
                .await?
            {
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
            let backend = backend::open(&state_dir).await?;
            let ks = backend.keys.load().await?;
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
            backend.records.insert_entry(&entry).await?;
            eprintln!("registered {} under node {}", entry.spiffe_id, entry.parent);
            println!("{}", entry.id);
        }
        EntryCommand::List { state_dir } => {
            for e in backend::open(&state_dir)
                .await?
                .records
                .entries(None)
                .await?
            {
                println!("{}", serde_json::to_string(&e)?);
            }
        }
        EntryCommand::Delete { state_dir, id } => {
            if !backend::open(&state_dir)
                .await?
                .records
                .delete_entry(&id)
                .await?
            {
                bail!("no entry with id {id}");
            }
            println!("deleted entry {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn root(command: RootCommand, now: OffsetDateTime) -> anyhow::Result<()> {
    match command {
        RootCommand::Add { state_dir } => {
            let g = backend::open(&state_dir).await?.keys.add_root(now).await?;
            println!("added root g{g} to the bundle; activate it with `meshedge ca root activate --generation {g}`");
        }
        RootCommand::Activate {
            state_dir,
            generation,
        } => {
            backend::open(&state_dir)
                .await?
                .keys
                .activate_root(generation, now)
                .await?;
            println!("root g{generation} now signs a new intermediate");
        }
        RootCommand::Retire {
            state_dir,
            generation,
        } => {
            backend::open(&state_dir)
                .await?
                .keys
                .retire_root(generation)
                .await?;
            println!("root g{generation} removed from the bundle");
        }
        RootCommand::List { state_dir } => {
            let ks = backend::open(&state_dir).await?.keys.load().await?;
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

/// `ca init --postgres`: writes `store.toml` and stores a new CA in the database, or joins
/// the CA already there.
async fn init_postgres(
    state_dir: &std::path::Path,
    td: &TrustDomain,
    policy: IssuancePolicy,
    url: String,
    kek_file: Option<PathBuf>,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    let kek_file = kek_file.context("--postgres needs --kek-file (created when missing)")?;
    if !kek_file.exists() {
        Kek::create_file(&kek_file)?;
        eprintln!("created key-encryption key {}", kek_file.display());
    }
    meshedge_ca::fsutil::create_private_dir(state_dir)?;
    let config = StoreConfig {
        postgres: Some(PostgresConfig {
            url,
            kek_file: Some(std::fs::canonicalize(&kek_file)?),
            kek_env: None,
        }),
    };
    let path = state_dir.join(backend::STORE_TOML);
    meshedge_ca::fsutil::write_atomic(&path, toml::to_string(&config)?.as_bytes(), 0o600)
        .with_context(|| format!("{}", path.display()))?;
    let opened = backend::open(state_dir).await?;
    let pg = opened.postgres.expect("store.toml selects postgres");
    if pg.init_keys(td, policy, now).await? {
        println!("initialised CA for {td} in {}", opened.description);
    } else {
        println!("joined the CA for {td} in {}", opened.description);
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
