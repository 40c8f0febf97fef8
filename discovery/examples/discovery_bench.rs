//! Resolve + watch cost at scale (issue 4): N services x M instances on the embedded server.
//!
//! The server runs in a child process (this same binary, `serve` mode) so the figures of
//! the measuring process are the resolver's and the watches' only. The measuring process
//! runs on a single-threaded tokio runtime (one core).
//!
//! ```text
//! discovery_bench [--services 1000] [--instances 10] [--ttl 30] [--samples 50]
//! ```
//!
//! Phases: register every instance (RFC 2136 + TSIG); start one `Watch` per service on one
//! `DnsResolver` and wait until every set is complete (cold full refresh); wait for the
//! next TTL-driven round of all watches (warm full refresh, as in steady state); register
//! new instances at random moments in sample services and time until the watch subscriber
//! sees them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use meshedge_discovery::register::Instance;
use meshedge_discovery::{
    serve, DnsResolver, Registrar, Resolution, Resolve, ResolveError, ResolverConfig, ServerConfig,
    ServiceName, Source, TsigKey, Txt, Watch, WatchConfig,
};

const ZONE: &str = "bench.test";
const KEY_NAME: &str = "bench-key";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Options {
    services: usize,
    instances: usize,
    ttl: u32,
    samples: usize,
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        return serve_child(&args[1..]);
    }
    let mut opts = Options {
        services: 1000,
        instances: 10,
        ttl: 30,
        samples: 50,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--services" => opts.services = value.parse()?,
            "--instances" => opts.instances = value.parse()?,
            "--ttl" => opts.ttl = value.parse()?,
            "--samples" => opts.samples = value.parse()?,
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    if opts.services == 0 || opts.instances == 0 || opts.ttl == 0 {
        return Err("services, instances and ttl must be positive".into());
    }
    opts.samples = opts.samples.min(opts.services);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(&opts))
}

/// Child mode: the embedded server on a free port; prints the address, exits when stdin
/// closes (the parent ended).
fn serve_child(args: &[String]) -> Result<(), BoxError> {
    let secret = args.first().ok_or("serve needs the key secret")?;
    let key = TsigKey::from_base64(KEY_NAME, secret)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut config = ServerConfig::try_new("127.0.0.1:0".parse()?, &[ZONE])?;
        config.keys = vec![key];
        let server = serve(config).await?;
        println!("listening {}", server.local_addr());
        std::io::stdout().flush()?;
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await?;
        drop(server);
        Ok(())
    })
}

/// The server process; killed when dropped.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(key: &TsigKey) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg(key.secret_base64())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .ok_or_else(|| format!("unexpected server output {line:?}"))?
            .parse()?;
        Ok(Self { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts completed resolutions (what a full refresh is made of) around the real resolver.
struct Counting {
    inner: DnsResolver,
    done: AtomicUsize,
    failed: AtomicUsize,
    /// Nanoseconds since `epoch` of the latest completion.
    last_done: AtomicU64,
    epoch: Instant,
}

impl Resolve for Counting {
    async fn resolve(&self, source: &Source) -> Result<Resolution, ResolveError> {
        let result = self.inner.resolve(source).await;
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_done.store(nanos, Ordering::Relaxed);
        self.done.fetch_add(1, Ordering::Relaxed);
        result
    }
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
                    + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
            };
            tv(usage.user_time()) + tv(usage.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// (VmRSS, VmHWM) of a process in MB, from /proc/<pid>/status.
fn memory(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User + system CPU time of another process, from /proc/<pid>/stat (USER_HZ = 100).
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn service(i: usize) -> Result<ServiceName, BoxError> {
    Ok(ServiceName::try_new(&format!("s{i:04}"), ZONE)?)
}

fn instance(svc: &ServiceName, s: usize, name: String, n: u32, ttl: u32) -> Instance {
    let [_, b, c, d] = n.to_be_bytes();
    Instance {
        service: svc.clone(),
        target: format!("{name}.h{s:04}.{ZONE}.")
            .parse()
            .unwrap_or_else(|_| svc.to_name()),
        name,
        port: 8080,
        priority: 0,
        weight: 10,
        txt: Txt {
            zone: Some(["zone-a", "zone-b"][usize::from(d) % 2].into()),
            attributes: [("version".to_owned(), "1.4.2".to_owned())].into(),
        },
        addresses: vec![std::net::Ipv4Addr::new(10, b, c, d).into()],
        ttl,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn bench(opts: &Options) -> Result<(), BoxError> {
    let key = TsigKey::generate(KEY_NAME)?;
    let server = ServerProcess::start(&key)?;
    println!(
        "embedded server pid {} on {}; {} services x {} instances, record TTL {} s",
        server.pid(),
        server.addr,
        opts.services,
        opts.instances,
        opts.ttl
    );
    let registrar = Registrar::new(server.addr, ZONE.parse()?, key.clone());
    let services: Vec<ServiceName> = (0..opts.services).map(service).collect::<Result<_, _>>()?;

    // Registration of every instance, 16 updates in flight.
    let started = Instant::now();
    let mut all = Vec::with_capacity(opts.services * opts.instances);
    for (s, svc) in services.iter().enumerate() {
        for i in 0..opts.instances {
            let n = u32::try_from(s * opts.instances + i)?;
            all.push(instance(svc, s, format!("i{i}"), n, opts.ttl));
        }
    }
    let registered: Vec<Result<(), _>> = stream::iter(all.iter().map(|i| registrar.register(i)))
        .buffer_unordered(16)
        .collect()
        .await;
    let reg_errors = registered.iter().filter(|r| r.is_err()).count();
    if let Some(Err(error)) = registered.iter().find(|r| r.is_err()) {
        return Err(format!("{reg_errors} registrations failed, first: {error}").into());
    }
    let reg_time = started.elapsed();
    println!(
        "registered {} instances in {} ({:.0} updates/s); server RSS {:.1} MB",
        all.len(),
        ms(reg_time),
        all.len() as f64 / reg_time.as_secs_f64(),
        memory(&server.pid().to_string()).0
    );
    drop(registered);
    drop(all);

    // Cold full refresh: every watch resolves for the first time.
    let resolver = Arc::new(Counting {
        inner: DnsResolver::new(&ResolverConfig::new(vec![server.addr]))?,
        done: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        last_done: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    let config = WatchConfig::default();
    let (rss_before, _) = memory("self");
    let server_cpu0 = process_cpu(server.pid());
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let watches: Vec<Watch> = services
        .iter()
        .map(|svc| {
            Watch::spawn(
                Arc::clone(&resolver),
                Source::Browse(svc.clone()),
                config.clone(),
            )
        })
        .collect();
    let mut receivers: Vec<_> = watches.iter().map(Watch::subscribe).collect();
    let deadline = Duration::from_secs(120);
    for rx in &mut receivers {
        tokio::time::timeout(deadline, rx.wait_for(|s| s.len() >= opts.instances))
            .await
            .map_err(|_| "watches did not complete in 120 s")??;
    }
    let cold_wall = t0.elapsed();
    let cold_cpu = cpu_time() - cpu0;
    let cold_server_cpu = process_cpu(server.pid()) - server_cpu0;
    let (rss_cold, _) = memory("self");
    let first_round = resolver.done.load(Ordering::Relaxed);
    println!(
        "cold full refresh ({} watches, {} resolutions, {} failed): wall {}, CPU {} (server CPU {}); RSS {:.1} MB (before watches {:.1} MB)",
        watches.len(),
        first_round,
        resolver.failed.load(Ordering::Relaxed),
        ms(cold_wall),
        ms(cold_cpu),
        ms(cold_server_cpu),
        rss_cold,
        rss_before
    );

    // Warm full refresh: the next TTL-driven round of every watch (cache expired).
    let target = first_round + opts.services;
    let cpu1 = cpu_time();
    let server_cpu1 = process_cpu(server.pid());
    let round_start = resolver.epoch.elapsed();
    let limit = Instant::now() + Duration::from_secs(u64::from(opts.ttl) * 2 + 60);
    while resolver.done.load(Ordering::Relaxed) < target {
        if Instant::now() > limit {
            return Err("second refresh round did not complete".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let round_cpu = cpu_time() - cpu1;
    let round_server_cpu = process_cpu(server.pid()) - server_cpu1;
    let round_end = Duration::from_nanos(resolver.last_done.load(Ordering::Relaxed));
    let (rss, hwm) = memory("self");
    println!(
        "TTL-driven full refresh ({} resolutions, {} failed so far): CPU {} (server CPU {}), last resolution {} after the round began; RSS {:.1} MB, peak {:.1} MB",
        opts.services,
        resolver.failed.load(Ordering::Relaxed),
        ms(round_cpu),
        ms(round_server_cpu),
        ms(round_end.saturating_sub(round_start)),
        rss,
        hwm
    );

    // Registration to watcher latency: new instances in sample services, each registered at
    // a random moment within one TTL.
    let step = opts.services / opts.samples.max(1);
    let ttl = Duration::from_secs(u64::from(opts.ttl));
    let registrar = &registrar;
    let samples: Vec<_> = (0..opts.samples)
        .map(|k| {
            let s = k * step;
            let mut rx = watches[s].subscribe();
            let new = instance(
                &services[s],
                s,
                format!("new{k}"),
                u32::try_from(opts.services * opts.instances + k).unwrap_or(0),
                opts.ttl,
            );
            let delay = ttl.mul_f64(rand::random::<f64>());
            async move {
                tokio::time::sleep(delay).await;
                registrar.register(&new).await?;
                let acked = Instant::now();
                tokio::time::timeout(
                    ttl * 3 + Duration::from_secs(5),
                    rx.wait_for(|set| set.endpoints().iter().any(|e| e.instance == new.name)),
                )
                .await
                .map_err(|_| format!("watch never saw {}", new.name))??;
                Ok::<_, BoxError>(acked.elapsed())
            }
        })
        .collect();
    let mut latencies = Vec::with_capacity(samples.len());
    for result in futures_util::future::join_all(samples).await {
        latencies.push(result?);
    }
    latencies.sort();
    if let (Some(min), Some(max)) = (latencies.first(), latencies.last()) {
        let p50 = percentile(&latencies, 50.0);
        let p99 = percentile(&latencies, 99.0);
        let over = |d: Duration| {
            let diff = d.as_secs_f64() - ttl.as_secs_f64();
            format!("{:+.0} ms", diff * 1000.0)
        };
        println!(
            "registration -> watcher ({} samples; TTL {} s, min_refresh {} s, jitter {}): min {}, p50 {}, p99 {} (TTL {}), max {} (TTL {}); bound TTL + one resolution (jitter only shortens waits)",
            latencies.len(),
            opts.ttl,
            config.min_refresh.as_secs_f64(),
            config.jitter,
            ms(*min),
            ms(p50),
            ms(p99),
            over(p99),
            ms(*max),
            over(*max),
        );
    }
    let (rss, hwm) = memory("self");
    let (srv_rss, srv_hwm) = memory(&server.pid().to_string());
    println!(
        "final: watcher process RSS {rss:.1} MB (peak {hwm:.1} MB), CPU total {}; server RSS {srv_rss:.1} MB (peak {srv_hwm:.1} MB), resolution failures {}",
        ms(cpu_time()),
        resolver.failed.load(Ordering::Relaxed)
    );
    drop(watches);
    drop(server);
    Ok(())
}
