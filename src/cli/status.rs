//! `meshedge status` and `meshedge doctor`: one table per edge from its admin API, and the
//! gateway-failure runbook walked over the same data (non-zero exit on findings).

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};

mod doctor;
mod fetch;

use doctor::{diagnose, diagnose_agent, EdgeView};

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
}

async fn view(admin: &str) -> (EdgeView, Option<Value>) {
    let ready = fetch::get(admin, "/healthz/ready")
        .await
        .map(|(s, _)| s)
        .map_err(|e| format!("{e:#}"));
    let reachable = ready.is_ok();
    let clusters = if reachable {
        fetch::get_json(admin, "/clusters").await.ok()
    } else {
        None
    };
    let config = if reachable {
        fetch::get_json(admin, "/config").await.ok()
    } else {
        None
    };
    let metrics = if reachable {
        fetch::get(admin, "/metrics").await.ok().map(|(_, b)| b)
    } else {
        None
    };
    (
        EdgeView {
            admin: admin.to_owned(),
            ready,
            clusters,
            metrics,
        },
        config,
    )
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

/// Runs `meshedge status` (or `doctor` when `doctor` is true).
pub async fn run(args: StatusArgs, doctor: bool) -> anyhow::Result<ExitCode> {
    let mut findings = Vec::new();
    let mut docs = Vec::new();
    for admin in &args.admins {
        let (v, config) = view(admin).await;
        if doctor {
            findings.extend(diagnose(&v));
        }
        if !doctor && !args.json {
            print_table(&v, config.as_ref());
            println!();
        }
        docs.push(json!({
            "admin": v.admin,
            "ready": v.ready.as_ref().map(|c| *c == 200).unwrap_or(false),
            "error": v.ready.as_ref().err(),
            "config": config,
            "clusters": v.clusters,
        }));
    }
    for agent in &args.agents {
        let metrics = fetch::get(agent, "/metrics")
            .await
            .map(|(_, b)| b)
            .map_err(|e| format!("{e:#}"));
        let agent_findings = diagnose_agent(agent, metrics.as_deref().map_err(Clone::clone));
        if !doctor && !args.json {
            let m = metrics.as_deref().unwrap_or("");
            let reachable = fetch::samples(m, "meshedge_agent_ca_reachable")
                .first()
                .map(|(_, v)| *v == 1.0);
            let expiry = fetch::samples(m, "meshedge_agent_node_svid_expiry_seconds")
                .first()
                .map(|(_, v)| *v);
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
        docs.push(json!({"agent": agent, "findings": agent_findings.len()}));
        if doctor {
            findings.extend(agent_findings);
        }
    }
    if !doctor {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&docs)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let reachable = docs
        .iter()
        .filter(|d| d["ready"] == Value::Bool(true))
        .count();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"findings": findings, "ready_gateways": reachable})
            )?
        );
    } else if findings.is_empty() {
        println!(
            "doctor: {} gateway(s) checked, no findings",
            args.admins.len()
        );
    } else {
        for f in &findings {
            println!(
                "[{}] {}: {}\n    -> {}",
                f.severity, f.admin, f.what, f.action
            );
        }
        println!(
            "doctor: {} finding(s); {reachable} of {} gateway(s) ready",
            findings.len(),
            args.admins.len()
        );
    }
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
