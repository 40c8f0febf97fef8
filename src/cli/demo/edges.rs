//! The demo's two edge gateways: each gets its SVID (which also carries the public name
//! `edge.mesh.test`) from its node's agent through `agent fetch --watch` files, and finds
//! the echo instances through DNS-SD.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::procs::Procs;
use super::{path, s, say, DNS_ADDR, DOMAIN};

/// A started gateway.
pub struct Gateway {
    /// Its admin listener.
    pub admin: String,
}

fn config(name: &str, zone: &str, https: &str, admin: &str, certs: &Path) -> String {
    let cert = certs.join("svid.pem").display().to_string();
    let key = certs.join("svid.key").display().to_string();
    let bundle = certs.join("bundle.pem").display().to_string();
    format!(
        r#"# Written by `meshedge demo`.
[gateway]
name = "{name}"
zone = "{zone}"

[listener]
address = "{https}"
http3 = true

[[listener.certificates]]
cert = "{cert}"
key = "{key}"
server_names = ["edge.{DOMAIN}", "localhost"]

[admin]
address = "{admin}"

[identity]
cert = "{cert}"
key = "{key}"
bundle = "{bundle}"

[clusters.echo]
dns_sd = {{ service = "_echo._tcp.{DOMAIN}", resolvers = ["{DNS_ADDR}"], refresh = "2s" }}
allowed_ids = ["spiffe://{DOMAIN}/svc/echo"]

[[routes]]
name = "all"
match = {{ path_prefix = "/" }}
cluster = "echo"
"#
    )
}

fn wait_for_files(dir: &Path, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while ["svid.pem", "svid.key", "bundle.pem"]
        .iter()
        .any(|f| !dir.join(f).exists())
    {
        if Instant::now() > deadline {
            bail!("{what}: no SVID files in {} after 30 s", dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Starts `agent fetch --watch` and `edge` for each (zone, agent socket).
pub async fn start(
    procs: &mut Procs,
    dir: &Path,
    edge_sockets: &[(&str, PathBuf)],
    _bundle: &Path,
) -> anyhow::Result<Vec<Gateway>> {
    let mut out = Vec::new();
    for (i, (zone, socket)) in edge_sockets.iter().enumerate() {
        let n = i + 1;
        let certs = dir.join(format!("edge-{n}-svid"));
        std::fs::create_dir_all(&certs)?;
        procs.start_unmarked(
            &format!("svid-files-{n}"),
            &[
                s("agent"),
                s("fetch"),
                s("--socket"),
                path(socket),
                s("--write-dir"),
                path(&certs),
                s("--watch"),
            ],
        )?;
        wait_for_files(&certs, &format!("edge-{n}"))?;
        let https = format!("127.0.0.1:{}", 8442 + n);
        let admin = format!("127.0.0.1:{}", 9900 + n);
        let cfg = dir.join(format!("edge-{n}.toml"));
        std::fs::write(
            &cfg,
            config(&format!("gw-{n}"), zone, &https, &admin, &certs),
        )
        .with_context(|| format!("{}", cfg.display()))?;
        procs.start(
            &format!("edge-{n}"),
            &[s("edge"), s("--config"), path(&cfg)],
            "edge listening on",
        )?;
        say(&format!(
            "edge gateway gw-{n} ({zone}): https + HTTP/3 on {https}, admin on {admin}"
        ));
        out.push(Gateway { admin });
    }
    Ok(out)
}
