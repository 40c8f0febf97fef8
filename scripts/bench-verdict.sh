#!/usr/bin/env bash
# The edge bench's goals (issue 5), judged round by round from a run of the shared bench
# (its results.tsv: round, proxy, test, key, value). Each meshedge build (a proxy whose name
# starts with `meshedge`) is set against the peers of the same round: the host's speed
# drifts over minutes, and a ratio within a round cancels that drift where a median of each
# proxy's own figures does not. Per goal and build: the median of the per-round ratios,
# their range, the rounds that had both sides, and the verdict by the median as shown (two
# decimals).
#   h1 CPU µs/request (cpu_s / requests)  at most 0.70x nginx's
#   h1 p99                                at most 1.00x the best peer's (lowest median p99)
#   new TLS connections/s (hs)            above 1.00x Envoy's
#   HTTP/3 req/s                          at least 1.50x Envoy's
#   peak RSS                              at most 1.00x HAProxy's
# A goal whose peer or test is not in the run is reported as not measured.
# Usage: scripts/bench-verdict.sh RESULTS_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: $0 RESULTS_DIR}
tsv=$dir/results.tsv
[ -r "$tsv" ] || { echo "bench-verdict.sh: no results.tsv in $dir" >&2; exit 2; }
awk -F'\t' -f scripts/lib/median.awk -f /dev/stdin "$tsv" <<'VERDICT'
$1 ~ /^[0-9]+$/ && $1 > 0 {
  r = $1; p = $2; k = $3 "." $4; v[r, p, k] = $5
  if (!(r in seen_round)) { seen_round[r] = 1; rounds[++nr] = r }
  if (p ~ /^meshedge/ && !(p in seen_build)) { seen_build[p] = 1; builds[++nb] = p }
}
# The figure of proxy p in round r for goal g, or "" when the run has none.
function figure(g, r, p,   c, q) {
  if (g == "cpu") {
    c = v[r, p, "h1.cpu_s"]; q = v[r, p, "h1.requests"]
    return (c != "" && q > 0) ? c * 1e6 / q : ""
  }
  if (g == "p99") return v[r, p, "h1.p99_ms"]
  if (g == "hs") return v[r, p, "hs.rps"]
  if (g == "h3") return v[r, p, "h3.rps"]
  return v[r, p, "all.rss_mb"]
}
# The reference figure of round r for goal g: the named peer's; for the p99, the best
# peer's (see best_p99_peer).
function reference(g, r) {
  if (g == "cpu") return figure(g, r, "nginx")
  if (g == "hs" || g == "h3") return figure(g, r, "envoy")
  if (g == "rss") return figure(g, r, "haproxy")
  return figure(g, r, best_peer)
}
# The peer with the lowest median h1 p99 over the run, or "" when no peer has one. A peer,
# not each round's lowest p99: the minimum of several noisy figures sits below each one's
# typical value, so a proxy level with its peers would lose to it more often than not.
function best_p99_peer(   i, j, f, list, m, best, low) {
  best = ""
  for (i = 1; i <= npeers; i++) {
    list = ""
    for (j = 1; j <= nr; j++) {
      f = figure("p99", rounds[j], peer[i])
      if (f != "") list = list " " f
    }
    if (list == "") continue
    m = median(list)
    if (best == "" || m < low) { best = peer[i]; low = m }
  }
  return best
}
function goal(g, what, how, bound) { text[g] = what; cmp[g] = how; limit[g] = bound }
function row(what, build, mid, span, n, verdict) {
  printf "%-41s %-20s %6s %12s %6s  %s\n", what, build, mid, span, n, verdict
}
END {
  npeers = split("nginx haproxy envoy caddy", peer, " ")
  ngoals = split("cpu p99 hs h3 rss", goals, " ")
  goal("cpu", "h1 CPU µs/req at most 0.70x nginx's", "<=", 0.70)
  best_peer = best_p99_peer()
  goal("p99", "h1 p99 at most the best peer's" (best_peer == "" ? "" : " (" best_peer ")"),
    "<=", 1.00)
  goal("hs", "new TLS conn/s above Envoy's", ">", 1.00)
  goal("h3", "HTTP/3 req/s at least 1.5x Envoy's", ">=", 1.50)
  goal("rss", "peak RSS at most HAProxy's", "<=", 1.00)
  if (nb == 0) {
    print "bench-verdict.sh: no meshedge build in this run" > "/dev/stderr"
    exit 2
  }
  row("goal (per-round ratio)", "build", "median", "range", "rounds", "verdict")
  for (b = 1; b <= nb; b++) for (j = 1; j <= ngoals; j++) {
    g = goals[j]; list = ""; n = 0; lo = ""; hi = ""
    for (i = 1; i <= nr; i++) {
      f = figure(g, rounds[i], builds[b]); ref = reference(g, rounds[i])
      if (f == "" || ref == "" || ref + 0 <= 0) continue
      x = f / ref; list = list " " x; n++
      if (lo == "" || x < lo) lo = x
      if (hi == "" || x > hi) hi = x
    }
    if (n == 0) {
      row(text[g], builds[b], "-", "-", 0, "not measured")
      continue
    }
    # Judged as printed: a median of 0.704 reads 0.70 and meets a 0.70 bound.
    m = sprintf("%.2f", median(list)) + 0
    ok = cmp[g] == "<=" ? m <= limit[g] : cmp[g] == ">" ? m > limit[g] : m >= limit[g]
    row(text[g], builds[b], sprintf("%.2f", m), sprintf("%.2f-%.2f", lo, hi), n,
      ok ? "met" : "NOT MET")
  }
}
VERDICT
