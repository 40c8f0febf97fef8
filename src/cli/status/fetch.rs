//! Reading an edge's admin API: a minimal HTTP/1.0 GET over TCP (the admin listener is
//! plain HTTP on loopback or a management network), and Prometheus text parsing.

use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest admin answer read, bytes.
const MAX_ANSWER: usize = 8 * 1024 * 1024;

/// `GET http://ADMIN{path}`: (status, body).
pub async fn get(admin: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(admin)
            .await
            .with_context(|| format!("admin {admin}: connect"))?;
        tcp.write_all(
            format!("GET {path} HTTP/1.0\r\nHost: {admin}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        (&mut tcp)
            .take(MAX_ANSWER as u64)
            .read_to_end(&mut raw)
            .await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .with_context(|| format!("admin {admin}{path}: no HTTP header"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("admin {admin}{path}: bad status line"))?;
        Ok::<_, anyhow::Error>((status, body.to_owned()))
    };
    match tokio::time::timeout(Duration::from_secs(3), exchange).await {
        Ok(r) => r,
        Err(_) => bail!("admin {admin}{path}: no answer within 3 s"),
    }
}

/// `GET` a JSON document.
pub async fn get_json(admin: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = get(admin, path).await?;
    if status != 200 {
        bail!("admin {admin}{path}: HTTP {status}");
    }
    serde_json::from_str(&body).with_context(|| format!("admin {admin}{path}: not JSON"))
}

/// Samples of one metric family from Prometheus text: (labels text, value).
pub fn samples<'a>(metrics: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (metric == name).then(|| value.parse().ok().map(|v| (labels, v)))?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_samples() {
        let text = "# HELP x y\nmeshedge_a_total{cluster=\"c\"} 3\nmeshedge_a_total{cluster=\"d\"} 4\nmeshedge_b 1.5\nmeshedge_a_totals 9\n";
        let total = |name| samples(text, name).iter().map(|(_, v)| v).sum::<f64>();
        assert_eq!(samples(text, "meshedge_a_total").len(), 2);
        assert_eq!(total("meshedge_a_total"), 7.0);
        assert_eq!(total("meshedge_b"), 1.5);
        assert_eq!(total("meshedge_missing"), 0.0);
    }
}
