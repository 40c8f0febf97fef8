#!/usr/bin/env bash
# Node agent benchmark (issue 6), release build, CA and agent as separate processes on
# loopback:
#  1. N registration entries on one node (distinct uids, so none matches this shell) ->
#     agent start to N workload SVIDs cached; agent RSS.
#  2. One rotation round of all N (SVID TTL T, renewed at half-life): agent and CA CPU.
#  3. Time to first SVID for a new workload: K fresh entries, each matching one hard link
#     of the meshedge binary (unix:path), called once with `agent fetch` right after the
#     entry is created; the agent's own figure (meshedge_agent_first_svid_seconds) and the
#     wall time of the whole `agent fetch` process; then a second, cached fetch.
#  4. Time from the CA back to all N workloads fresh after an outage longer than the
#     SVID lifetime (SVIDs expired while the CA was down).
# Usage: scripts/bench-agent.sh [N=1000] [TTL_SECONDS=60] [K=20]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
ttl=${2:-60}
k=${3:-20}
cargo build --release -q --bin meshedge -p meshedge
bin=$(realpath "${CARGO_TARGET_DIR:-target}/release/meshedge")
dir=$(mktemp -d /tmp/meshedge-agent-bench.XXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT
ca_port=$((20000 + RANDOM % 10000))
metrics_port=$((ca_port + 1))
ms() { echo $(( $(date +%s%N) / 1000000 )); }
cpu_ms() { awk '{print ($14 + $15) * 10}' "/proc/$1/stat"; } # utime + stime, 10 ms ticks
metric() { # sum of a metric's samples, 0 if absent
  curl -s "http://127.0.0.1:$metrics_port/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $2} END {print s + 0}'
}
start_ca() {
  RUST_LOG=warn $bin ca serve --state-dir "$dir/ca" --listen "127.0.0.1:$ca_port" >> "$dir/ca.log" 2>&1 &
  ca_pid=$!
  pids+=("$ca_pid")
  for _ in $(seq 100); do curl -sk "https://127.0.0.1:$ca_port/healthz" >/dev/null 2>&1 && return; sleep 0.05; done
  echo "ca did not start: $(cat "$dir/ca.log")" >&2
  exit 1
}

$bin ca init --trust-domain bench.test --min-ttl 1s --state-dir "$dir/ca" >/dev/null
$bin ca bundle --state-dir "$dir/ca" > "$dir/bundle.pem"
token=$($bin ca token create --state-dir "$dir/ca" --node n1 2>/dev/null | tail -1)
t0=$(ms)
for i in $(seq "$n"); do
  $bin ca entry create --state-dir "$dir/ca" --parent n1 --spiffe-id "spiffe://bench.test/w/$i" \
    --selector "unix:uid:$((200000 + i))" --ttl "${ttl}s" >/dev/null 2>&1
done
echo "created $n entries in $(( $(ms) - t0 )) ms (one CLI process each)"
start_ca
t0=$(ms)
RUST_LOG=${BENCH_AGENT_LOG:-warn} $bin agent --ca-addr "127.0.0.1:$ca_port" --ca-bundle "$dir/bundle.pem" \
  --join-token "$token" --node n1 --zone a --state-dir "$dir/n1" --socket "$dir/n1.sock" \
  --entry-refresh 1h --metrics "127.0.0.1:$metrics_port" > "$dir/agent.log" 2>&1 &
agent_pid=$!
pids+=("$agent_pid")
issued=0
for _ in $(seq 1200); do
  issued=$(metric meshedge_agent_workload_svids_issued_total 2>/dev/null || echo 0)
  [ "${issued%.*}" -ge "$n" ] && break
  sleep 0.05
done
echo "agent start -> $n workload SVIDs cached: $(( $(ms) - t0 )) ms (enrollment included); agent RSS $(awk '/VmRSS/ {printf "%.1f MB", $2/1024}' /proc/$agent_pid/status)"

# One rotation round: every SVID is renewed at half of its lifetime.
a0=$(cpu_ms $agent_pid); c0=$(cpu_ms $ca_pid); t0=$(ms)
for _ in $(seq $((ttl * 40))); do
  issued=$(metric meshedge_agent_workload_svids_issued_total)
  [ "${issued%.*}" -ge $((2 * n)) ] && break
  sleep 0.05
done
a1=$(cpu_ms $agent_pid); c1=$(cpu_ms $ca_pid)
echo "rotation round ($n SVIDs renewed, round ended $(( $(ms) - t0 )) ms after the first round): agent CPU $((a1 - a0)) ms, CA CPU $((c1 - c0)) ms; agent RSS $(awk '/VmRSS/ {printf "%.1f MB", $2/1024}' /proc/$agent_pid/status), peak $(awk '/VmHWM/ {printf "%.1f MB", $2/1024}' /proc/$agent_pid/status)"

# Time to first SVID for new workloads.
mkdir -p "$dir/bin"
firsts=(); walls=(); cached=()
for j in $(seq "$k"); do
  ln "$bin" "$dir/bin/wl$j" 2>/dev/null || cp "$bin" "$dir/bin/wl$j"
  $bin ca entry create --state-dir "$dir/ca" --parent n1 --spiffe-id "spiffe://bench.test/new/$j" \
    --selector "unix:uid:$(id -u)" --selector "unix:path:$dir/bin/wl$j" >/dev/null 2>&1
  sum0=$(metric meshedge_agent_first_svid_seconds_sum)
  t0=$(ms)
  "$dir/bin/wl$j" agent fetch --socket "$dir/n1.sock" --write-dir "$dir/out$j" >/dev/null 2>&1
  walls+=($(( $(ms) - t0 )))
  sum1=$(metric meshedge_agent_first_svid_seconds_sum)
  firsts+=("$(awk -v a="$sum0" -v b="$sum1" 'BEGIN {printf "%.1f", (b - a) * 1000}')")
  t0=$(ms)
  "$dir/bin/wl$j" agent fetch --socket "$dir/n1.sock" --write-dir "$dir/out$j" >/dev/null 2>&1
  cached+=($(( $(ms) - t0 )))
done
stats() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {printf "min %s, p50 %s, max %s", v[1], v[int((NR + 1) / 2)], v[NR]}'; }
echo "first SVID for a new entry ($k workloads): agent call-to-SVID ms: $(stats "${firsts[@]}"); whole 'agent fetch' process ms: $(stats "${walls[@]}"); cached fetch ms: $(stats "${cached[@]}")"

# CA outage longer than the SVID lifetime, then back.
kill -9 "$ca_pid"; wait "$ca_pid" 2>/dev/null || true
echo "ca killed; waiting $((ttl + 2)) s so that every workload SVID expires"
sleep $((ttl + 2))
expired=$(metric meshedge_agent_workload_svids_expired)
before=$(metric meshedge_agent_workload_svids_issued_total)
start_ca
t0=$(ms)
for _ in $(seq 2400); do
  # Fresh = the N short-lived SVIDs renewed and none expired any more (the K entries of
  # phase 3 have the CA's default lifetime and did not expire).
  now=$(metric meshedge_agent_workload_svids_issued_total)
  left=$(metric meshedge_agent_workload_svids_expired)
  [ "$(awk -v a="$now" -v b="$before" -v n="$n" -v e="$left" 'BEGIN {print (a - b >= n && e == 0) ? 1 : 0}')" = 1 ] && break
  sleep 0.05
done
if [ -n "${BENCH_VERBOSE:-}" ]; then grep -vE "api|fetch" "$dir/agent.log" | tail -n 60; fi
echo "ca back -> all $n expired workload SVIDs fresh again: $(( $(ms) - t0 )) ms (expired SVIDs reported before: $expired); agent CPU total $(cpu_ms $agent_pid) ms"
