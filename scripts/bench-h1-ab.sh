#!/usr/bin/env bash
# A/B of meshedge builds on the shared bench's HTTP/1.1 path, with nginx as the reference in
# every round: wrk (-t2 -c64, as ../shared/bench/run.sh) on CPU 0 with the nginx upstream,
# the proxy alone on CPU 1, TLS in and mTLS keep-alive out, the meshedge config of
# deploy/bench/meshedge-plugin.sh (HTTP/3 off). Per proxy and round: the proxy's user and
# system CPU time (/proc/PID/stat, utime and stime) over an 8 s window of a 14 s run,
# divided by the requests wrk counted in it. Rounds interleave the proxies, so a host that
# slows down slows every proxy of a round alike: compare within a round. At the end, the
# medians over the rounds, with the user, system and total ratios to nginx's, and per build
# the user time the CPU goal (0.7x nginx's total) leaves it at its own system time
# (scripts/lib/h1-ab-summary.awk).
# Usage: scripts/bench-h1-ab.sh ROUNDS MESHEDGE_BIN...
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:?rounds}
shift
[ $# -gt 0 ] || { echo "usage: $0 ROUNDS MESHEDGE_BIN..." >&2; exit 2; }
work=$(mktemp -d /tmp/meshedge-ab.XXXXXX)
port=8470
source scripts/lib/bench-proxy.sh

# Prints "user SYS total" µs per request of one proxy (nginx, or the meshedge binary $2).
measure() {
  local proxy=$1 bin=${2:-} u0 s0 u1 s1 rps
  bench_start_upstream "$work/$proxy-$RANDOM" taskset -c 0
  bench_start_proxy "$proxy" "$bin" "$port" taskset -c 1
  BENCH_ADDR=127.0.0.1 taskset -c 0 wrk -s "$bench/lib/sni.lua" -t2 -c64 -d14s \
    "https://edge.test:$port/" >"$run/wrk.txt" 2>&1 &
  local w=$!
  sleep 3
  read -r u0 s0 < <(bench_cpu_ticks)
  sleep 8
  read -r u1 s1 < <(bench_cpu_ticks)
  wait "$w"
  bench_stop
  rps=$(awk '/Requests\/sec/{print $2}' "$run/wrk.txt")
  # The window's requests at wrk's average rate; CPU ticks are 1/100 s.
  awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v r="$rps" 'BEGIN {
    n = r * 8; printf "%.1f %.1f %.1f\n", u / 100 * 1e6 / n, s / 100 * 1e6 / n, (u + s) / 100 * 1e6 / n }'
}

printf "%-6s %-28s %8s %8s %8s %8s\n" round proxy user sys total "/nginx"
for r in $(seq 1 "$rounds"); do
  read -r nu ns nt < <(measure nginx)
  printf "%-6s %-28s %8s %8s %8s %8s\n" "$r" nginx "$nu" "$ns" "$nt" 1.00
  for bin in "$@"; do
    read -r mu ms mt < <(measure meshedge "$(realpath "$bin")")
    printf "%-6s %-28s %8s %8s %8s %8.2f\n" "$r" "$(basename "$bin")" "$mu" "$ms" "$mt" \
      "$(awk -v a="$mt" -v b="$nt" 'BEGIN {print a / b}')"
  done
done | tee "$work/rounds.txt"

# Medians over the rounds: each proxy's user, system and total µs per request, and the
# medians of its per-round ratios to nginx's (user, system, total): the kernel's part, the
# same TCP work for every proxy, is what the user-space part has to make up for.
echo
printf "%-28s %8s %8s %8s %8s %8s %8s\n" "median of $rounds rounds" user sys total \
  "user/n" "sys/n" "total/n"
awk -f scripts/lib/median.awk -f scripts/lib/h1-ab-summary.awk "$work/rounds.txt"
