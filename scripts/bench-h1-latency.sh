#!/usr/bin/env bash
# HTTP/1.1 latency at a fixed request rate, nginx, HAProxy and meshedge builds side by side on
# the shared bench's path (TLS in, mTLS keep-alive out to its nginx upstream, the proxy alone
# on CPU 1, load and upstream on CPU 0). The bench's own h1 test runs every proxy flat out
# (wrk, 64 connections), so each proxy's p99 is taken at its own maximum rate, and a proxy
# that is no longer the bottleneck (meshedge's core was 87 % busy where nginx's was 97 %)
# hands the queueing to the shared load core, whose scheduling then makes the tail. Here
# every proxy gets the same offered load: h2load --h1, 64 connections, each sending RATE/64
# requests per second for DURATION seconds; the latency of every request comes from
# h2load's log, the first 2 s left out. Rounds interleave the proxies.
# Also the proxy's CPU time per request over the same window (utime+stime from
# /proc/PID/stat): flat out, a proxy that is not the bottleneck wakes up for fewer requests
# at a time than one that is (less batching per epoll_wait, more wake-ups of the load core's
# processes paid in its own writes), so its CPU per request rises with its lead; at one
# offered rate every proxy works under the same conditions. At the end, the medians over
# the rounds: p99 and CPU per request, and the median of the per-round CPU ratio to nginx's.
# Usage: scripts/bench-h1-latency.sh RATE ROUNDS [DURATION] -- MESHEDGE_BIN...
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:?rate} rounds=${2:?rounds}
shift 2
duration=20
if [[ ${1:-} != -- ]]; then duration=$1; shift; fi
[[ ${1:-} == -- ]] && shift
[ $# -gt 0 ] || { echo "usage: $0 RATE ROUNDS [DURATION] -- MESHEDGE_BIN..." >&2; exit 2; }
work=$(mktemp -d /tmp/meshedge-latency.XXXXXX)
port=8471
source scripts/lib/bench-proxy.sh

# Prints "achieved-rate p50 p90 p99 p99.9 max cpu" (ms; cpu: µs per request) for one proxy
# (nginx, haproxy, or meshedge from the binary $2).
measure() {
  local proxy=$1 bin=${2:-} log load u0 s0 u1 s1
  bench_start_upstream "$work/$proxy-$RANDOM" taskset -c 0
  bench_start_proxy "$proxy" "$bin" "$port" taskset -c 1
  log=$run/h2load.log
  taskset -c 0 h2load --h1 -c 64 -t 1 --rps "$(awk -v r="$rate" 'BEGIN {print r / 64}')" \
    -D "$duration" --connect-to "127.0.0.1:$port" --log-file "$log" \
    "https://edge.test:$port/" >"$run/h2load.txt" 2>&1 &
  load=$!
  sleep 2
  read -r u0 s0 < <(bench_cpu_ticks)
  wait "$load"
  read -r u1 s1 < <(bench_cpu_ticks)
  bench_stop
  # Log lines: start (µs since the epoch), status, duration (µs).
  sort -n -k1,1 "$log" | awk -v d="$duration" -v ticks=$((u1 + s1 - u0 - s0)) '
    NR == 1 { t0 = $1 }
    $1 - t0 >= 2e6 && $2 == 200 { lat[++n] = $3 / 1000 }
    $2 != 200 { bad++ }
    END {
      if (bad) printf "(%d non-200) ", bad > "/dev/stderr"
      printf "%.0f %.1f\n", n / (d - 2), ticks / 100 * 1e6 / n
      for (i = 1; i <= n; i++) print lat[i]
    }' | {
    read -r achieved cpu
    sort -g | awk -v a="$achieved" -v c="$cpu" '{ v[NR] = $1 } END {
      printf "%s %.2f %.2f %.2f %.2f %.2f %s\n", a, v[int(NR * 0.5)], v[int(NR * 0.9)],
        v[int(NR * 0.99)], v[int(NR * 0.999)], v[NR], c }'
  }
}

row() { printf "%-6s %-28s %9s %8s %8s %8s %8s %8s %8s\n" "$@"; }
row round proxy "req/s" p50 p90 p99 p99.9 max "cpu µs"
for r in $(seq 1 "$rounds"); do
  for proxy in nginx haproxy; do
    row "$r" "$proxy" $(measure "$proxy")
  done
  for bin in "$@"; do
    row "$r" "$(basename "$bin")" $(measure meshedge "$(realpath "$bin")")
  done
done | tee "$work/rounds.txt"

echo
printf "%-28s %8s %8s %8s\n" "median of $rounds rounds" p99 "cpu µs" "cpu/n"
awk -f scripts/lib/median.awk -f /dev/stdin "$work/rounds.txt" <<'SUMMARY'
$1 ~ /^[0-9]+$/ && $2 == "nginx" { nc = $9 }
$1 ~ /^[0-9]+$/ {
  if (!($2 in seen)) { seen[$2] = 1; order[++k] = $2 }
  p[$2] = p[$2] " " $6; c[$2] = c[$2] " " $9; r[$2] = r[$2] " " $9 / nc }
END { for (i = 1; i <= k; i++) { x = order[i]
  printf "%-28s %8.2f %8.1f %8.2f\n", x, median(p[x]), median(c[x]), median(r[x]) } }
SUMMARY
