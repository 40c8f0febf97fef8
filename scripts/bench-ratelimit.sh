#!/usr/bin/env bash
# Rate-limit spike benchmark (issue 7, scenario 4): what a spike over one route's rate
# limit costs the requests admitted on another route. Release build; the gateway on CPU 1
# (one worker), the shared bench's mTLS nginx upstream and wrk on CPU 0, its PKI
# (../shared/bench/pki, made by its setup.sh). Two routes to the same upstream:
#   /limited  rate_limit 100 req/s, burst 100, per client IP
#   /         no limit
# 1. baseline: wrk -t1 -c16 on / for D s;  2. the same while wrk -t1 -c64 hammers /limited.
# Usage: scripts/bench-ratelimit.sh [D=10]
set -euo pipefail
cd "$(dirname "$0")/.."
d=${1:-10}
bench=$(realpath ../shared/bench)
pki=$bench/pki
[ -f "$pki/ca.crt" ] || "$bench/setup.sh"
cargo build --release -q --bin meshedge -p meshedge
bin=$(realpath "${CARGO_TARGET_DIR:-target}/release/meshedge")
run=$(mktemp -d /tmp/meshedge-ratelimit.XXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$run"' EXIT
up=$((20000 + RANDOM % 10000)); edge_port=$((up + 1)); admin_port=$((up + 2))
mkdir -p "$run/upstream" "$run/tmp-up"
sed -e "s|@RUN@|$run|g" -e "s|@PKI@|$pki|g" -e "s|@UPSTREAM_PORT@|$up|g" \
    -e "s|@UPSTREAM_DIAG_PORT@|$((up + 3))|g" "$bench/conf/upstream-nginx.conf.in" > "$run/upstream/nginx.conf"
taskset -c 0 nginx -e "$run/upstream-error.log" -p "$run/upstream" -c "$run/upstream/nginx.conf" >/dev/null 2>&1 &
pids+=("$!")
cat > "$run/edge.toml" <<CONF
[listener]
address = "127.0.0.1:$edge_port"
http3 = false
[[listener.certificates]]
cert = "$pki/edge.crt"
key = "$pki/edge.key"
[admin]
address = "127.0.0.1:$admin_port"
[identity]
cert = "$pki/proxy-client.crt"
key = "$pki/proxy-client.key"
bundle = "$pki/ca.crt"
[access_log]
enabled = false
[clusters.upstream]
endpoints = ["127.0.0.1:$up"]
verify_dns_name = "upstream.test"
protocol = "http1"
pool_max_idle_per_endpoint = 1024
health_check = { enabled = false }
[[routes]]
name = "limited"
match = { path_prefix = "/limited" }
cluster = "upstream"
rate_limit = { requests_per_second = 100.0, burst = 100, key = "client_ip" }
[[routes]]
name = "open"
cluster = "upstream"
CONF
MESHEDGE_WORKER_THREADS=1 RUST_LOG=warn taskset -c 1 "$bin" edge --config "$run/edge.toml" >/dev/null 2>"$run/edge.err" &
pids+=("$!")
for _ in $(seq 100); do
  curl -sk -o /dev/null "https://127.0.0.1:$edge_port/" && break
  sleep 0.1
done
lat() { awk '/^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Requests\/sec/ {rps=$2} /Non-2xx/ {n=$5} END {printf "%s req/s, p50 %s, p99 %s, non-2xx %s", rps, p50, p99, (n == "" ? 0 : n)}' "$1"; }
taskset -c 0 wrk -t1 -c16 -d"${d}s" --latency "https://127.0.0.1:$edge_port/" > "$run/base.txt"
echo "baseline, / alone:            $(lat "$run/base.txt")"
taskset -c 0 wrk -t1 -c64 -d"$((d + 2))s" --latency "https://127.0.0.1:$edge_port/limited" > "$run/spike.txt" &
spike=$!
sleep 1
taskset -c 0 wrk -t1 -c16 -d"${d}s" --latency "https://127.0.0.1:$edge_port/" > "$run/during.txt"
wait "$spike"
echo "during the spike, /:          $(lat "$run/during.txt")"
echo "the spike itself, /limited:   $(lat "$run/spike.txt") (429s beyond 100 req/s)"
curl -s "http://127.0.0.1:$admin_port/metrics" | grep -E '^meshedge_edge_rate_limited_total' || true
