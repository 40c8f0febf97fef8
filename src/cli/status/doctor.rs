//! The gateway-failure runbook as code: each check looks at one edge's admin data and
//! reports a finding with what to do. Pure: it takes the fetched documents.

use serde::Serialize;
use serde_json::Value;

use super::fetch::total;

/// What the admin API returned for one edge (None where a fetch failed, with the error).
pub struct EdgeView {
    /// Admin address.
    pub admin: String,
    /// `/healthz/ready` status, or the error reaching it.
    pub ready: Result<u16, String>,
    /// `/clusters`.
    pub clusters: Option<Value>,
    /// `/metrics` text.
    pub metrics: Option<String>,
}

/// One finding of the runbook.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    /// Which edge.
    pub admin: String,
    /// `critical` or `warning`.
    pub severity: &'static str,
    /// What is wrong.
    pub what: String,
    /// What to do.
    pub action: String,
}

fn finding(v: &EdgeView, severity: &'static str, what: String, action: &str) -> Finding {
    Finding {
        admin: v.admin.clone(),
        severity,
        what,
        action: action.to_owned(),
    }
}

/// Cert expiry below this many seconds is a finding: rotation at half-life keeps any SVID
/// of two minutes or more above it, so getting here means rotation is failing.
pub const CERT_WARN_SECS: f64 = 60.0;

/// Walks the runbook for one edge.
pub fn diagnose(v: &EdgeView) -> Vec<Finding> {
    let mut out = Vec::new();
    match &v.ready {
        Err(e) => {
            out.push(finding(v, "critical", format!("gateway unreachable: {e}"), "check the process (its agent restarts it) and the other gateways; clients fail over to them"));
            return out;
        }
        Ok(200) => {}
        Ok(code) => out.push(finding(
            v,
            "critical",
            format!("gateway not ready (HTTP {code}): draining or starting"),
            "wait for the drain to finish or the gateway to load its config; see its log",
        )),
    }
    if let Some(clusters) = v.clusters.as_ref().and_then(|c| c["clusters"].as_array()) {
        for c in clusters {
            let name = c["name"].as_str().unwrap_or("?");
            let eps = c["endpoints"].as_array().cloned().unwrap_or_default();
            let healthy = eps
                .iter()
                .filter(|e| {
                    e["health"].as_str() != Some("unhealthy") && e["ejected"] != Value::Bool(true)
                })
                .count();
            if c["stale"] == Value::Bool(true) {
                out.push(finding(v, "warning", format!("cluster {name}: discovery is stale (DNS-SD server unreachable or failing); serving the last good endpoints"), "check the DNS-SD server; endpoints are kept until it answers again"));
            }
            if eps.is_empty() {
                out.push(finding(v, "critical", format!("cluster {name}: no endpoints"), "check that instances are registered (meshedge dns browse) and that the service name is right"));
            } else if healthy == 0 {
                out.push(finding(
                    v,
                    "critical",
                    format!(
                        "cluster {name}: all {} endpoints unhealthy or ejected",
                        eps.len()
                    ),
                    "the service is down in every zone; check its instances",
                ));
            } else if healthy * 2 < eps.len() {
                out.push(finding(
                    v,
                    "warning",
                    format!(
                        "cluster {name}: only {healthy} of {} endpoints healthy",
                        eps.len()
                    ),
                    "a zone or instances are failing; traffic has moved to the healthy ones",
                ));
            }
        }
    }
    if let Some(m) = &v.metrics {
        let mismatches = total(m, "meshedge_edge_identity_mismatch_total");
        if mismatches > 0.0 {
            out.push(finding(v, "critical", format!("{mismatches} upstream identity mismatches: an upstream presented a SPIFFE ID the cluster does not allow"), "check allowed_ids in the config against the upstream's registration entry; requests were refused, never forwarded"));
        }
        let rejected = super::fetch::samples(m, "meshedge_edge_config_reloads_total")
            .iter()
            .filter(|(l, _)| l.contains("rejected") || l.contains("error") || l.contains("invalid"))
            .map(|(_, v)| v)
            .sum::<f64>();
        if rejected > 0.0 {
            out.push(finding(
                v,
                "warning",
                format!("{rejected} config reloads rejected; the previous config is still serving"),
                "run `meshedge edge --check --config FILE` and fix the errors it names",
            ));
        }
        for (labels, secs) in super::fetch::samples(m, "meshedge_edge_cert_expiry_seconds") {
            if secs < CERT_WARN_SECS {
                let sev = if secs <= 0.0 { "critical" } else { "warning" };
                out.push(finding(v, sev, format!("certificate {labels} expires in {secs:.0}s"), "check the agent (and the CA it renews from): rotation should happen at half of the lifetime"));
            }
        }
    }
    out
}

/// Walks the CA part of the runbook for one agent, from its `/metrics`: is the CA
/// reachable, and if not, how long until the node SVID (and so the workloads) run out.
pub fn diagnose_agent(agent: &str, metrics: Result<&str, String>) -> Vec<Finding> {
    let f = |severity, what: String, action: &str| Finding {
        admin: agent.to_owned(),
        severity,
        what,
        action: action.to_owned(),
    };
    let m = match metrics {
        Ok(m) => m,
        Err(e) => return vec![f("critical", format!("agent unreachable: {e}"), "check the agent process on that node (systemd / DaemonSet restarts it); its workloads keep their cached SVIDs until expiry")],
    };
    let reachable = super::fetch::samples(m, "meshedge_agent_ca_reachable");
    let expiry = super::fetch::samples(m, "meshedge_agent_node_svid_expiry_seconds")
        .first()
        .map(|(_, v)| *v);
    let mut out = Vec::new();
    if reachable.iter().any(|(_, v)| *v == 0.0) {
        let errors = total(m, "meshedge_agent_ca_errors_total");
        let deadline = match expiry {
            Some(secs) if secs > 0.0 => {
                let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs as i64);
                format!("node SVID expires in {secs:.0}s (at {at}); workloads serve until their SVIDs expire")
            }
            Some(_) => "node SVID already expired; the agent re-attests with its attestation key when the CA returns".to_owned(),
            None => "node SVID expiry unknown".to_owned(),
        };
        out.push(f("critical", format!("CA outage: the agent cannot reach the CA ({errors} failed calls); {deadline}"), "restore the CA (or another replica); agents retry with backoff and recover without restarts"));
    } else if let Some(secs) = expiry.filter(|s| *s < CERT_WARN_SECS) {
        out.push(f(
            "warning",
            format!("node SVID expires in {secs:.0}s although the CA is reachable"),
            "check the agent log for renewal refusals (a ban?)",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(ready: Result<u16, String>, clusters: Value, metrics: &str) -> EdgeView {
        EdgeView {
            admin: "127.0.0.1:9901".into(),
            ready,
            clusters: Some(clusters),
            metrics: Some(metrics.into()),
        }
    }

    #[test]
    fn healthy_edge_has_no_findings() {
        let c = json!({"clusters": [{"name": "echo", "stale": false, "endpoints": [{"health": "healthy", "ejected": false}]}]});
        assert!(diagnose(&view(
            Ok(200),
            c,
            "meshedge_edge_cert_expiry_seconds{name=\"svid\"} 120\n"
        ))
        .is_empty());
    }

    #[test]
    fn agent_findings_name_the_outage_and_the_deadline() {
        let ok = "meshedge_agent_ca_reachable 1\nmeshedge_agent_node_svid_expiry_seconds 1700\n";
        assert!(diagnose_agent("a", Ok(ok)).is_empty());
        let down = "meshedge_agent_ca_reachable 0\nmeshedge_agent_ca_errors_total{op=\"renew\"} 7\nmeshedge_agent_node_svid_expiry_seconds 1200\n";
        let f = diagnose_agent("a", Ok(down));
        assert_eq!(f.len(), 1);
        assert!(
            f[0].what.contains("CA outage")
                && f[0].what.contains("7 failed")
                && f[0].what.contains("expires in 1200s"),
            "{:?}",
            f[0]
        );
        let expired = "meshedge_agent_ca_reachable 0\nmeshedge_agent_node_svid_expiry_seconds -5\n";
        assert!(diagnose_agent("a", Ok(expired))[0]
            .what
            .contains("already expired"));
        assert_eq!(
            diagnose_agent("a", Err("refused".into()))[0].severity,
            "critical"
        );
    }

    #[test]
    fn findings_table() {
        let unreachable = diagnose(&view(Err("refused".into()), json!({}), ""));
        assert_eq!(unreachable.len(), 1);
        assert_eq!(unreachable[0].severity, "critical");
        let c = json!({"clusters": [
            {"name": "a", "stale": true, "endpoints": [{"health": "healthy", "ejected": true}, {"health": "unhealthy", "ejected": false}]},
            {"name": "b", "stale": false, "endpoints": []},
        ]});
        let m = "meshedge_edge_identity_mismatch_total{cluster=\"a\"} 2\nmeshedge_edge_cert_expiry_seconds{name=\"svid\"} 30\n";
        let f = diagnose(&view(Ok(503), c, m));
        let whats: Vec<&str> = f.iter().map(|f| f.what.as_str()).collect();
        assert!(whats.iter().any(|w| w.contains("not ready")), "{whats:?}");
        assert!(whats
            .iter()
            .any(|w| w.contains("cluster a: discovery is stale")));
        assert!(whats
            .iter()
            .any(|w| w.contains("cluster a: all 2 endpoints")));
        assert!(whats.iter().any(|w| w.contains("cluster b: no endpoints")));
        assert!(whats.iter().any(|w| w.contains("identity mismatches")));
        assert!(whats.iter().any(|w| w.contains("expires in 30s")));
    }
}
