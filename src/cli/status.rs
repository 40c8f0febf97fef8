//! `meshedge status` and `meshedge doctor`: one table per edge from its admin API, and the
//! gateway-failure runbook walked step by step over the same data (non-zero exit when a
//! step is not ok).

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};

mod doctor;
mod fetch;

use doctor::{diagnose, diagnose_agent, EdgeView, Step, Verdict};

/// `meshedge status|doctor` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// An edge's admin address HOST:PORT; repeat for several.
    #[arg(long = "admin", required_unless_present = "agents")]
    admins: Vec<String>,
    /// An agent's metrics address HOST:PORT (`meshedge agent --metrics`); repeat for several.
    #[arg(long = "agent")]
    agents: Vec<String>,
    /// JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// doctor: how long to watch the counters (5xx, rate limits, breakers, reloads,
    /// identity mismatches); 0s reads them as totals since each gateway started.
    #[arg(long, default_value = "2s", value_parser = crate::duration::parse_duration)]
    window: std::time::Duration,
}

/// An edge's admin data: the runbook's view, its config and its fleet (`/fleet`).
type Fetched = (EdgeView, Option<Value>, Option<Value>);

async fn view(admin: &str, doctor: bool) -> Fetched {
    let ready = fetch::get(admin, "/healthz/ready")
        .await
        .map(|(s, _)| s)
        .map_err(|e| format!("{e:#}"));
    let mut v = EdgeView {
        admin: admin.to_owned(),
        ready,
        clusters: None,
        metrics: None,
        metrics_before: None,
        probes: None,
        fleet: None,
    };
    if v.ready.is_err() {
        return (v, None, None);
    }
    let config = fetch::get_json(admin, "/config").await.ok();
    v.clusters = fetch::get_json(admin, "/clusters").await.ok();
    // Before the probe, so that doctor's own handshakes are not in the counters.
    v.metrics = fetch::get(admin, "/metrics").await.ok().map(|(_, b)| b);
    if doctor {
        v.probes = fetch::get_json(admin, "/probe").await.ok();
    }
    let fleet = fetch::get_json(admin, "/fleet").await.ok();
    v.fleet = fleet.clone();
    (v, config, fleet)
}

/// Takes the first `/metrics` sample of every edge, waits `window`, and takes the views.
async fn doctor_views(admins: &[String], window: std::time::Duration) -> Vec<EdgeView> {
    let mut before = Vec::new();
    if !window.is_zero() {
        for admin in admins {
            before.push(fetch::get(admin, "/metrics").await.ok().map(|(_, b)| b));
        }
        tokio::time::sleep(window).await;
    }
    let mut views = Vec::new();
    for (i, admin) in admins.iter().enumerate() {
        let (mut v, _, _) = view(admin, true).await;
        v.metrics_before = before.get(i).cloned().flatten();
        views.push(v);
    }
    views
}

fn print_steps(steps: &[Step]) {
    let mut target = "";
    for s in steps {
        if s.target != target {
            target = &s.target;
            println!("doctor {target}");
        }
        let label = format!("[{}]", s.verdict.as_str());
        let mut lines = s.evidence.iter();
        println!(
            "  {label:<11} {}: {}",
            s.step,
            lines.next().map_or("", String::as_str)
        );
        for more in lines {
            println!("  {:<11} {:width$}  {more}", "", "", width = s.step.len());
        }
        if let Some(action) = &s.action {
            println!("  {:<11} -> {action}", "");
        }
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_table(v: &EdgeView, config: Option<&Value>) {
    let state = match &v.ready {
        Ok(200) => "ready".to_owned(),
        Ok(code) => format!("not ready (HTTP {code})"),
        Err(e) => format!("UNREACHABLE: {e}"),
    };
    println!("edge {}  [{state}]", v.admin);
    if let Some(cfg) = config {
        println!(
            "  name {}  zone {}  listener {}",
            s(&cfg["gateway"]["name"]),
            s(&cfg["gateway"]["zone"]),
            s(&cfg["listener"]["address"])
        );
        for r in cfg["routes"].as_array().into_iter().flatten() {
            let target = if r["cluster"].is_null() {
                s(&r["split"])
            } else {
                s(&r["cluster"])
            };
            println!("  route {:<24} -> {target}", s(&r["name"]));
        }
    }
    for c in v
        .clusters
        .as_ref()
        .and_then(|c| c["clusters"].as_array())
        .into_iter()
        .flatten()
    {
        let stale = if c["stale"] == Value::Bool(true) {
            "  (STALE: last good answer kept)"
        } else {
            ""
        };
        println!("  cluster {} ({}){stale}", s(&c["name"]), s(&c["source"]));
        let mut by_zone: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for e in c["endpoints"].as_array().into_iter().flatten() {
            by_zone.entry(s(&e["zone"])).or_default().push(e);
        }
        println!(
            "    {:<8} {:<22} {:<10} {:<8} {:>8} {:>9} {:>8}",
            "zone", "endpoint", "health", "ejected", "inflight", "requests", "failures"
        );
        for (zone, eps) in by_zone {
            for e in eps {
                println!(
                    "    {:<8} {:<22} {:<10} {:<8} {:>8} {:>9} {:>8}",
                    zone,
                    s(&e["address"]),
                    s(&e["health"]),
                    s(&e["ejected"]),
                    s(&e["in_flight"]),
                    s(&e["requests"]),
                    s(&e["failures"])
                );
            }
        }
    }
    if let Some(m) = &v.metrics {
        for (labels, secs) in fetch::samples(m, "meshedge_edge_cert_expiry_seconds") {
            println!("  certificate {labels}: expires in {secs:.0}s");
        }
    }
}

/// The fleet as the edge's supervising agent sees it (`GET /fleet`).
fn print_fleet(f: &Value) {
    let stale = if f["stale"] == Value::Bool(true) {
        "  (STALE: the agent stopped updating it)"
    } else {
        ""
    };
    println!(
        "  fleet as seen by {} (zone {}, {} ready gateway(s) wanted per zone, written {:.0}s ago){stale}",
        s(&f["node"]),
        s(&f["zone"]),
        s(&f["min_per_zone"]),
        f["age_seconds"].as_f64().unwrap_or(0.0)
    );
    println!(
        "    {:<10} {:<8} {:<9} {:<22} {:<18} policy",
        "node", "zone", "gateway", "serves", "vips"
    );
    for m in f["members"].as_array().into_iter().flatten() {
        let vips: Vec<String> = m["vips"].as_array().into_iter().flatten().map(s).collect();
        println!(
            "    {:<10} {:<8} {:<9} {:<22} {:<18} {}",
            s(&m["node"]),
            s(&m["zone"]),
            s(&m["gateway"]),
            s(&m["serve"]),
            if vips.is_empty() {
                "-".to_owned()
            } else {
                vips.join(",")
            },
            s(&m["policy"])
        );
    }
    for vip in f["vips"].as_array().into_iter().flatten() {
        println!("    {}", vip_line(vip));
    }
}

/// One VIP of the fleet view: its holder, and why this node last gave it up.
fn vip_line(vip: &Value) -> String {
    let released = vip["last_release"]
        .as_str()
        .map(|r| format!(" (this node last gave it up: {r})"))
        .unwrap_or_default();
    format!(
        "vip {} held by {}{released}",
        s(&vip["address"]),
        vip["holder"].as_str().unwrap_or("NOBODY")
    )
}

/// Runs `meshedge status` (or `doctor` when `doctor` is true).
pub async fn run(args: StatusArgs, doctor: bool) -> anyhow::Result<ExitCode> {
    if doctor {
        return run_doctor(&args).await;
    }
    let mut docs = Vec::new();
    for admin in &args.admins {
        let (v, config, fleet) = view(admin, false).await;
        if !args.json {
            print_table(&v, config.as_ref());
            if let Some(f) = &fleet {
                print_fleet(f);
            }
            println!();
        }
        docs.push(json!({
            "admin": v.admin,
            "ready": v.ready.as_ref().map(|c| *c == 200).unwrap_or(false),
            "error": v.ready.as_ref().err(),
            "config": config,
            "clusters": v.clusters,
            "fleet": fleet,
        }));
    }
    for agent in &args.agents {
        let metrics = fetch::get(agent, "/metrics").await.map(|(_, b)| b);
        let m = metrics.as_deref().unwrap_or("");
        let reachable = fetch::samples(m, "meshedge_agent_ca_reachable")
            .first()
            .map(|(_, v)| *v == 1.0);
        let expiry = fetch::samples(m, "meshedge_agent_node_svid_expiry_seconds")
            .first()
            .map(|(_, v)| *v);
        if !args.json {
            println!(
                "agent {agent}  CA reachable: {}  node SVID expires in: {}",
                reachable.map_or("?".into(), |r| if r {
                    "yes".to_owned()
                } else {
                    "NO".to_owned()
                }),
                expiry.map_or("?".into(), |e| format!("{e:.0}s"))
            );
        }
        docs.push(
            json!({"agent": agent, "ca_reachable": reachable, "node_svid_expiry_seconds": expiry}),
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&docs)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `meshedge doctor`: every step for every edge and agent; exit 1 unless all are ok.
async fn run_doctor(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let mut steps = Vec::new();
    let views = doctor_views(&args.admins, args.window).await;
    let ready = views.iter().filter(|v| v.ready == Ok(200)).count();
    for v in &views {
        steps.extend(diagnose(v));
    }
    for agent in &args.agents {
        let metrics = fetch::get(agent, "/metrics")
            .await
            .map(|(_, b)| b)
            .map_err(|e| format!("{e:#}"));
        steps.extend(diagnose_agent(
            agent,
            metrics.as_deref().map_err(Clone::clone),
        ));
    }
    let count = |v: Verdict| steps.iter().filter(|s| s.verdict == v).count();
    let (ok, warnings, critical) = (
        count(Verdict::Ok),
        count(Verdict::Warning),
        count(Verdict::Critical),
    );
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "steps": steps,
                "ready_gateways": ready,
                "ok": ok, "warnings": warnings, "critical": critical,
            }))?
        );
    } else {
        print_steps(&steps);
        println!(
            "doctor: {} gateway(s) ({ready} ready), {} agent(s): {ok} steps ok, {warnings} warning(s), {critical} critical",
            args.admins.len(),
            args.agents.len()
        );
    }
    Ok(if warnings + critical == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vip_line_names_the_holder_and_the_last_release() {
        let held =
            serde_json::json!({"address": "198.18.1.1", "holder": "a1", "last_release": null});
        assert_eq!(vip_line(&held), "vip 198.18.1.1 held by a1");
        let lost = serde_json::json!({
            "address": "198.18.1.1", "holder": null, "last_release": "lease_lapsed"
        });
        assert_eq!(
            vip_line(&lost),
            "vip 198.18.1.1 held by NOBODY (this node last gave it up: lease_lapsed)"
        );
    }
}
