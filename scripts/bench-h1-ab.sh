#!/usr/bin/env bash
# A/B of meshedge builds on the shared bench's HTTP/1.1 path, with nginx as the reference in
# every round: wrk (-t2 -c64, as ../shared/bench/run.sh) on CPU 0 with the nginx upstream,
# the proxy alone on CPU 1, TLS in and mTLS keep-alive out, the meshedge config of
# deploy/bench/meshedge-plugin.sh (HTTP/3 off). Per proxy and round: the proxy's user and
# system CPU time (/proc/PID/stat, utime and stime) over an 8 s window of a 14 s run,
# divided by the requests wrk counted in it. Rounds interleave the proxies, so a host that
# slows down slows every proxy of a round alike: compare within a round.
# Usage: scripts/bench-h1-ab.sh ROUNDS MESHEDGE_BIN...
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:?rounds}
shift
[ $# -gt 0 ] || { echo "usage: $0 ROUNDS MESHEDGE_BIN..." >&2; exit 2; }
bench=$(realpath ../shared/bench)
[ -d "$bench/pki" ] || "$bench/setup.sh"
pki=$bench/pki
port=8470
work=$(mktemp -d /tmp/meshedge-ab.XXXXXX)
pids=()
cleanup() { local p; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

render() { # template port -> stdout
  sed -e "s|@RUN@|$run|g" -e "s|@PKI@|$pki|g" -e "s|@PORT@|$2|g" -e "s|@UPSTREAM_PORT@|9443|g" \
    -e "s|@UPSTREAM_DIAG_PORT@|9444|g" "$bench/conf/$1"
}

# Prints "user SYS total" µs per request of one proxy (nginx, or the meshedge binary $2).
measure() {
  local proxy=$1 bin=${2:-} up gw u0 s0 u1 s1 rps
  run=$work/$proxy-$RANDOM
  mkdir -p "$run/upstream" "$run/tmp-up" "$run/p" "$run/tmp-nginx"
  render upstream-nginx.conf.in "" >"$run/upstream/nginx.conf"
  taskset -c 0 nginx -e "$run/up-err.log" -p "$run/upstream" -c "$run/upstream/nginx.conf" \
    >/dev/null 2>&1 &
  up=$!
  pids+=("$up")
  if [[ $proxy == nginx ]]; then
    render nginx.conf.in $port | sed 's/^master_process on;/master_process off;/' >"$run/p/nginx.conf"
    taskset -c 1 nginx -e "$run/p/err.log" -p "$run/p" -c "$run/p/nginx.conf" >"$run/gw.log" 2>&1 &
  else
    BENCH_LISTEN=127.0.0.1:$port BENCH_CERT=$pki/edge.crt BENCH_KEY=$pki/edge.key \
      BENCH_CLIENT_CERT=$pki/proxy-client.crt BENCH_CLIENT_KEY=$pki/proxy-client.key \
      BENCH_CA=$pki/ca.crt BENCH_UPSTREAM=127.0.0.1:9443 BENCH_UPSTREAM_SNI=upstream.test \
      BENCH_RUN_DIR=$run/p BENCH_WORKERS=1 MESHEDGE_BIN=$bin \
      taskset -c 1 bash <(sed -e 's|http3 = true|http3 = false|' deploy/bench/meshedge-plugin.sh) \
      >"$run/gw.log" 2>&1 &
  fi
  gw=$!
  pids+=("$gw")
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null --cacert "$pki/ca.crt" --resolve "edge.test:$port:127.0.0.1" \
      "https://edge.test:$port/" && break
    sleep 0.2
  done
  ticks() { sed 's/.*) //' "/proc/$gw/stat" | awk '{print $12, $13}'; }
  BENCH_ADDR=127.0.0.1 taskset -c 0 wrk -s "$bench/lib/sni.lua" -t2 -c64 -d14s \
    "https://edge.test:$port/" >"$run/wrk.txt" 2>&1 &
  local w=$!
  sleep 3
  read -r u0 s0 < <(ticks)
  sleep 8
  read -r u1 s1 < <(ticks)
  wait "$w"
  kill "$gw" "$up" 2>/dev/null || true
  wait "$gw" "$up" 2>/dev/null || true
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
done
