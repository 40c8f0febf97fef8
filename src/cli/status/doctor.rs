//! The gateway-failure runbook as code: one step after the other over an edge's admin data
//! (and an agent's metrics), each with a verdict, the evidence and the next action. Pure:
//! it takes the fetched documents. Counters are read as the change over the observation
//! window (two `/metrics` samples) so that an old incident does not fail today's run.

use serde::Serialize;
use serde_json::Value;

use super::fetch::samples;

#[cfg(test)]
mod tests;

/// What the admin API returned for one edge (None where a fetch failed).
pub struct EdgeView {
    /// Admin address.
    pub admin: String,
    /// `/healthz/ready` status, or the error reaching it.
    pub ready: Result<u16, String>,
    /// `/clusters`.
    pub clusters: Option<Value>,
    /// `/metrics` text at the end of the window.
    pub metrics: Option<String>,
    /// `/metrics` text at the start of the window (None: counters are read as totals).
    pub metrics_before: Option<String>,
    /// `/probe`: one mTLS handshake per cluster and zone.
    pub probes: Option<Value>,
    /// `/fleet`, when the edge runs under a fleet agent.
    pub fleet: Option<Value>,
}

/// How a step went.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Nothing to do.
    Ok,
    /// Degraded; the mesh still serves.
    Warning,
    /// Broken, or about to break.
    Critical,
}

impl Verdict {
    /// The label printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// One step of the runbook for one edge or agent.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// The edge's admin address or the agent's metrics address.
    pub target: String,
    /// Which step.
    pub step: &'static str,
    /// The worst verdict of its evidence.
    pub verdict: Verdict,
    /// What was seen, one line each (problems first).
    pub evidence: Vec<String>,
    /// What to do (None when ok).
    pub action: Option<String>,
}

/// Collects one step's evidence.
struct StepBuilder {
    step: &'static str,
    verdict: Verdict,
    problems: Vec<String>,
    fine: Vec<String>,
    action: Option<String>,
}

impl StepBuilder {
    fn new(step: &'static str) -> Self {
        Self {
            step,
            verdict: Verdict::Ok,
            problems: Vec::new(),
            fine: Vec::new(),
            action: None,
        }
    }

    fn ok(&mut self, line: String) {
        self.fine.push(line);
    }

    fn flag(&mut self, verdict: Verdict, line: String, action: &str) {
        if verdict > self.verdict || self.action.is_none() {
            self.action = Some(action.to_owned());
        }
        self.verdict = self.verdict.max(verdict);
        self.problems.push(line);
    }

    fn done(mut self, target: &str, when_empty: &str) -> Step {
        self.problems.append(&mut self.fine);
        if self.problems.is_empty() {
            self.problems.push(when_empty.to_owned());
        }
        Step {
            target: target.to_owned(),
            step: self.step,
            verdict: self.verdict,
            evidence: self.problems,
            action: (self.verdict != Verdict::Ok)
                .then_some(self.action)
                .flatten(),
        }
    }
}

/// Cert expiry below this many seconds is a finding: rotation at half-life keeps any SVID
/// of two minutes or more above it, so getting here means rotation is failing.
pub const CERT_WARN_SECS: f64 = 60.0;
/// Share of 5xx answers over the window above which the step warns (and 10x: critical).
pub const ERROR_SHARE_WARN: f64 = 0.01;
/// Fewest requests over the window for an error share to mean something.
pub const MIN_REQUESTS: f64 = 20.0;
/// Upstream p99 latency above which the step warns.
pub const SLOW_P99_MS: f64 = 1000.0;

/// Samples of `name` whose labels satisfy `keep`, as the change over the window.
fn counted(v: &EdgeView, name: &str, keep: impl Fn(&str) -> bool) -> Vec<(String, f64)> {
    let after = v.metrics.as_deref().unwrap_or("");
    let before = v.metrics_before.as_deref();
    samples(after, name)
        .into_iter()
        .filter(|(labels, _)| keep(labels))
        .map(|(labels, value)| {
            let start = before
                .map(|b| {
                    samples(b, name)
                        .iter()
                        .filter(|(l, _)| *l == labels)
                        .map(|(_, v)| *v)
                        .sum::<f64>()
                })
                .unwrap_or(0.0);
            (labels.to_owned(), value - start)
        })
        .filter(|(_, d)| *d > 0.0)
        .collect()
}

fn sum(rows: &[(String, f64)]) -> f64 {
    // `+ 0.0`: an empty f64 sum is -0.0, which prints as "-0".
    rows.iter().map(|(_, v)| v).sum::<f64>() + 0.0
}

/// The clusters of `/clusters`.
fn clusters(v: &EdgeView) -> impl Iterator<Item = &Value> {
    v.clusters
        .as_ref()
        .and_then(|c| c["clusters"].as_array())
        .into_iter()
        .flatten()
}

/// Walks the runbook for one edge.
pub fn diagnose(v: &EdgeView) -> Vec<Step> {
    let mut ready = StepBuilder::new("gateway live and ready");
    match &v.ready {
        Err(e) => {
            ready.flag(Verdict::Critical, format!("gateway unreachable: {e}"), "check the process (its agent restarts it) and the other gateways; clients fail over to them");
            return vec![ready.done(&v.admin, "")];
        }
        Ok(200) => ready.ok("ready (HTTP 200)".into()),
        Ok(code) => ready.flag(
            Verdict::Critical,
            format!("gateway not ready (HTTP {code}): draining or starting"),
            "wait for the drain to finish or the gateway to load its config; see its log",
        ),
    }
    let mut steps = vec![
        ready.done(&v.admin, ""),
        certificates(v),
        reloads(v),
        endpoints(v),
        handshakes(v),
        latency_and_errors(v),
        limits(v),
    ];
    if let Some(f) = &v.fleet {
        steps.push(fleet(&v.admin, f));
    }
    steps
}

/// The fleet as the edge's supervising agent sees it: every zone with at least
/// `min_per_zone` ready gateways, every VIP held, the view fresh.
fn fleet(admin: &str, f: &Value) -> Step {
    let mut s = StepBuilder::new("fleet covers every zone");
    let node = f["node"].as_str().unwrap_or("?");
    if f["stale"] == Value::Bool(true) {
        s.flag(Verdict::Warning, format!("the fleet view of {node} is {:.0}s old: its agent stopped updating it", f["age_seconds"].as_f64().unwrap_or(0.0)), "check the fleet agent on this gateway's node (hung or dead); the gateway keeps serving");
    }
    let wanted = f["min_per_zone"].as_u64().unwrap_or(1) as usize;
    let mut zones: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for m in f["members"].as_array().into_iter().flatten() {
        let slot = zones.entry(m["zone"].as_str().unwrap_or("-")).or_default();
        slot.0 += usize::from(m["gateway"] == "Ready");
        slot.1 += 1;
    }
    for (zone, (ready, members)) in &zones {
        let line =
            format!("zone {zone}: {ready} ready gateway(s) of {wanted} wanted ({members} members)");
        if *ready < wanted {
            s.flag(Verdict::Critical, line, "the fleet starts a gateway on an eligible node of that zone within its start_delay; if none is eligible or all crash, add capacity there");
        } else {
            s.ok(line);
        }
    }
    for vip in f["vips"].as_array().into_iter().flatten() {
        let address = vip["address"].as_str().unwrap_or("?");
        match vip["holder"].as_str() {
            Some(holder) => s.ok(format!("VIP {address} held by {holder}")),
            None => s.flag(Verdict::Critical, format!("VIP {address} held by nobody"), "clients of that address get no answer: check that a node with a ready gateway sees a quorum of the fleet"),
        }
    }
    s.done(admin, &format!("no members in the view of {node}"))
}

fn certificates(v: &EdgeView) -> Step {
    let mut s = StepBuilder::new("certificates valid and renewing");
    let m = v.metrics.as_deref().unwrap_or("");
    for (labels, secs) in samples(m, "meshedge_edge_cert_expiry_seconds") {
        let line = format!("certificate {labels} expires in {secs:.0}s");
        if secs <= 0.0 {
            s.flag(
                Verdict::Critical,
                line,
                "check the agent and the CA it renews from: the certificate has expired",
            );
        } else if secs < CERT_WARN_SECS {
            s.flag(Verdict::Warning, line, "check the agent (and the CA it renews from): rotation should happen at half of the lifetime");
        } else {
            s.ok(line);
        }
    }
    let refused = counted(v, "meshedge_edge_upstream_failures_total", |l| {
        l.contains("own_svid_expired")
    });
    if sum(&refused) > 0.0 {
        s.flag(Verdict::Critical, format!("{} requests not sent upstream because the gateway's own SVID expired (503 own_svid_expired)", sum(&refused)), "restore the CA or the agent: the gateway gets a fresh SVID within seconds of the CA answering");
    }
    s.done(&v.admin, "no certificate metrics")
}

fn reloads(v: &EdgeView) -> Step {
    let mut s = StepBuilder::new("config reloads");
    let rejected = counted(v, "meshedge_edge_config_reloads_total", |l| {
        l.contains("rejected")
    });
    if sum(&rejected) > 0.0 {
        s.flag(
            Verdict::Warning,
            format!(
                "{} config reloads rejected; the previous config is still serving",
                sum(&rejected)
            ),
            "run `meshedge edge --check --config FILE` and fix the errors it names",
        );
    }
    s.done(&v.admin, "no rejected reload")
}

fn endpoints(v: &EdgeView) -> Step {
    let mut s = StepBuilder::new("endpoints per zone");
    for c in clusters(v) {
        let name = c["name"].as_str().unwrap_or("?");
        if c["stale"] == Value::Bool(true) {
            s.flag(Verdict::Warning, format!("cluster {name}: discovery is stale (DNS-SD server unreachable or failing); serving the last good endpoints"), "check the DNS-SD server; endpoints are kept until it answers again");
        }
        let eps = c["endpoints"].as_array().cloned().unwrap_or_default();
        if eps.is_empty() {
            s.flag(Verdict::Critical, format!("cluster {name}: no endpoints"), "check that instances are registered (meshedge dns browse) and that the service name is right");
            continue;
        }
        let mut zones: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        for e in &eps {
            let zone = e["zone"].as_str().unwrap_or("-").to_owned();
            let usable =
                e["health"].as_str() != Some("unhealthy") && e["ejected"] != Value::Bool(true);
            let slot = zones.entry(zone).or_default();
            slot.0 += usize::from(usable);
            slot.1 += 1;
        }
        let healthy: usize = zones.values().map(|z| z.0).sum();
        let per_zone: Vec<String> = zones
            .iter()
            .map(|(z, (h, t))| format!("{z} {h}/{t}"))
            .collect();
        let line = format!("cluster {name}: healthy per zone {}", per_zone.join(", "));
        if healthy == 0 {
            s.flag(
                Verdict::Critical,
                format!(
                    "cluster {name}: all {} endpoints unhealthy or ejected",
                    eps.len()
                ),
                "the service is down in every zone; check its instances",
            );
        } else if zones.values().any(|(h, _)| *h == 0) {
            s.flag(Verdict::Warning, line, "a zone has no healthy endpoint: its traffic has moved to the other zones; check that zone's instances");
        } else if healthy * 2 < eps.len() {
            s.flag(
                Verdict::Warning,
                line,
                "instances are failing; traffic has moved to the healthy ones",
            );
        } else {
            s.ok(line);
        }
    }
    s.done(&v.admin, "no clusters")
}

fn handshakes(v: &EdgeView) -> Step {
    let mut s = StepBuilder::new("mTLS handshake per zone");
    match v.probes.as_ref().and_then(|p| p["probes"].as_array()) {
        None => s.flag(
            Verdict::Warning,
            "GET /probe failed: no handshake made".into(),
            "check the admin listener; an older gateway may not serve /probe",
        ),
        Some(probes) => {
            for p in probes {
                let where_ = format!(
                    "cluster {} zone {} endpoint {}",
                    p["cluster"].as_str().unwrap_or("?"),
                    p["zone"].as_str().unwrap_or("-"),
                    p["endpoint"].as_str().unwrap_or("?"),
                );
                if p["ok"] == Value::Bool(true) {
                    s.ok(format!(
                        "{where_}: {} ({:.0} ms)",
                        p["presented"].as_str().unwrap_or("?"),
                        p["millis"].as_f64().unwrap_or(0.0)
                    ));
                } else {
                    s.flag(Verdict::Critical, format!("{where_}: {}", p["error"].as_str().unwrap_or("failed")), "a wrong identity: compare the cluster's allowed_ids with the upstream's registration entry; a failure to connect: check that instance and its SVID");
                }
            }
        }
    }
    let mismatches = counted(v, "meshedge_edge_identity_mismatch_total", |_| true);
    if sum(&mismatches) > 0.0 {
        s.flag(Verdict::Critical, format!("{} upstream identity mismatches: an upstream presented a SPIFFE ID the cluster does not allow", sum(&mismatches)), "check allowed_ids in the config against the upstream's registration entry; requests were refused, never forwarded");
    }
    s.done(&v.admin, "no endpoints to probe")
}

fn latency_and_errors(v: &EdgeView) -> Step {
    let mut s = StepBuilder::new("upstream latency and errors");
    let answers = counted(v, "meshedge_edge_requests_total", |_| true);
    let total = sum(&answers);
    let errors = answers
        .iter()
        .filter(|(l, _)| l.contains("status=\"5"))
        .map(|(_, n)| n)
        .sum::<f64>()
        + 0.0;
    let share = if total > 0.0 { errors / total } else { 0.0 };
    let line = format!(
        "{errors} of {total} answers were 5xx ({:.1} %)",
        share * 100.0
    );
    if total >= MIN_REQUESTS && share > ERROR_SHARE_WARN * 10.0 {
        s.flag(Verdict::Critical, line, "see which cluster and reason below; `meshedge status` shows the endpoints and the access log names each failed upstream");
    } else if total >= MIN_REQUESTS && share > ERROR_SHARE_WARN {
        s.flag(Verdict::Warning, line, "see which cluster and reason below; `meshedge status` shows the endpoints and the access log names each failed upstream");
    } else {
        s.ok(line);
    }
    for (labels, n) in counted(v, "meshedge_edge_upstream_failures_total", |l| {
        !l.contains("own_svid_expired")
    }) {
        s.ok(format!("upstream failures {labels}: {n}"));
    }
    for c in clusters(v) {
        let name = c["name"].as_str().unwrap_or("?");
        if let Some(p99) = c["resilience"]["latency"]["p99_ms"].as_f64() {
            let line = format!("cluster {name}: upstream p99 {p99:.1} ms");
            if p99 > SLOW_P99_MS {
                s.flag(Verdict::Warning, line, "an upstream is slow: check the endpoints' ewma in `meshedge status`; hedging and per-try timeouts bound what clients see");
            } else {
                s.ok(line);
            }
        }
    }
    s.done(&v.admin, "no traffic")
}

fn limits(v: &EdgeView) -> Step {
    let mut s = StepBuilder::new("rate limits and circuit breakers");
    for (labels, n) in counted(v, "meshedge_edge_rate_limited_total", |_| true) {
        s.flag(Verdict::Warning, format!("{n} requests rate-limited (429) {{{labels}}}"), "a client exceeds the route's rate_limit: confirm it is abuse, or raise requests_per_second / burst");
    }
    for (labels, n) in counted(v, "meshedge_edge_circuit_open_total", |_| true) {
        s.flag(Verdict::Warning, format!("{n} requests refused by a circuit breaker (503 x-meshedge-circuit-open) {{{labels}}}"), "the cluster is at its circuit_breaker limit: find the slow upstream, or raise the limit if the load is expected");
    }
    for (labels, n) in counted(v, "meshedge_edge_retry_budget_exhausted_total", |_| true) {
        s.flag(Verdict::Warning, format!("{n} retries skipped, retry budget exhausted {{{labels}}}"), "upstreams fail faster than the budget allows retries: look at the failing cluster first");
    }
    s.done(&v.admin, "no request refused by a limit")
}

/// Walks the CA part of the runbook for one agent, from its `/metrics`: is the CA
/// reachable, and if not, how long until the node SVID (and so the workloads) run out.
pub fn diagnose_agent(agent: &str, metrics: Result<&str, String>) -> Vec<Step> {
    let mut s = StepBuilder::new("CA reachable and SVIDs renewing");
    let m = match metrics {
        Ok(m) => m,
        Err(e) => {
            s.flag(Verdict::Critical, format!("agent unreachable: {e}"), "check the agent process on that node (systemd / DaemonSet restarts it); its workloads keep their cached SVIDs until expiry");
            return vec![s.done(agent, "")];
        }
    };
    let reachable = samples(m, "meshedge_agent_ca_reachable");
    let expiry = samples(m, "meshedge_agent_node_svid_expiry_seconds")
        .first()
        .map(|(_, v)| *v);
    if reachable.iter().any(|(_, v)| *v == 0.0) {
        let errors: f64 = samples(m, "meshedge_agent_ca_errors_total")
            .iter()
            .map(|(_, v)| v)
            .sum();
        let deadline = match expiry {
            Some(secs) if secs > 0.0 => {
                let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs as i64);
                format!("node SVID expires in {secs:.0}s (at {at}); workloads serve until their SVIDs expire")
            }
            Some(_) => "node SVID already expired; the agent re-attests with its attestation key when the CA returns".to_owned(),
            None => "node SVID expiry unknown".to_owned(),
        };
        s.flag(Verdict::Critical, format!("CA outage: the agent cannot reach the CA ({errors} failed calls); {deadline}"), "restore the CA (or another replica); agents retry with backoff and recover without restarts");
    } else if let Some(secs) = expiry.filter(|s| *s < CERT_WARN_SECS) {
        s.flag(
            Verdict::Warning,
            format!("node SVID expires in {secs:.0}s although the CA is reachable"),
            "check the agent log for renewal refusals (a ban?)",
        );
    } else if let Some(secs) = expiry {
        s.ok(format!("CA reachable; node SVID expires in {secs:.0}s"));
    }
    let expired: f64 = samples(m, "meshedge_agent_workload_svids_expired")
        .iter()
        .map(|(_, v)| v)
        .sum();
    if expired > 0.0 {
        s.flag(Verdict::Critical, format!("{expired} workload SVIDs expired: those workloads cannot make or accept mTLS connections"), "restore the CA; the agent renews them within seconds of its return");
    }
    vec![s.done(agent, "no CA metrics")]
}
