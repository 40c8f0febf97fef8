#!/usr/bin/env bash
# SVID issuance benchmark: signing core vs raw ECDSA, then the HTTPS API end to end with
# `meshedge ca serve` in its own process (RSS read from /proc after the run).
# Usage: scripts/bench-ca.sh [TOTAL_ISSUANCES] [CLIENTS]   (defaults 200000, 32)
set -euo pipefail
cd "$(dirname "$0")/.."
total=${1:-200000}
clients=${2:-32}
cargo build --release -q --bin meshedge -p meshedge
cargo build --release -q -p meshedge-ca --example ca_bench
bin=${CARGO_TARGET_DIR:-target}/release/meshedge
bench=${CARGO_TARGET_DIR:-target}/release/examples/ca_bench
dir=$(mktemp -d /tmp/meshedge-ca-bench.XXXX)
trap 'kill $ca_pid 2>/dev/null || true; rm -rf "$dir"' EXIT

$bench core -n 20000
$bin ca init --trust-domain bench.test --state-dir "$dir/ca" >/dev/null
$bin ca bundle --state-dir "$dir/ca" > "$dir/bundle.pem"
token=$($bin ca token create --state-dir "$dir/ca" --node bench 2>/dev/null)
$bin ca entry create --state-dir "$dir/ca" --spiffe-id spiffe://bench.test/svc/load --parent bench --selector unix:uid:0 >/dev/null 2>&1
RUST_LOG=warn taskset -c 1 $bin ca serve --state-dir "$dir/ca" --listen 127.0.0.1:18650 > "$dir/serve.log" 2>&1 &
ca_pid=$!
for _ in $(seq 50); do grep -q "listening" "$dir/serve.log" && break; sleep 0.1; done
echo "ca pid $ca_pid pinned to CPU 1; load generator on CPU 0"
taskset -c 0 $bench api --ca-addr 127.0.0.1:18650 --bundle "$dir/bundle.pem" --token "$token" \
  --spiffe-id spiffe://bench.test/svc/load --clients "$clients" --total "$total" --seconds 600
echo "ca RSS after the run: $(awk '/VmRSS/ {print $2/1024 " MB"}' /proc/$ca_pid/status), peak $(awk '/VmHWM/ {print $2/1024 " MB"}' /proc/$ca_pid/status)"
echo "audit lines: $(wc -l < "$dir/ca/audit.log")"
