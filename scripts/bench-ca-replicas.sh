#!/usr/bin/env bash
# CA issuance with the embedded store vs PostgreSQL with 1 and 3 replicas, in one run.
# Needs Debian's postgresql (server binaries) and root (the cluster runs as `postgres`).
# Usage: scripts/bench-ca-replicas.sh [ISSUANCES_PER_CASE] [CLIENTS]   (defaults 30000, 32)
set -euo pipefail
cd "$(dirname "$0")/.."
total=${1:-30000}
clients=${2:-32}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q --bin meshedge -p meshedge
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p meshedge-ca --example ca_bench
bin=$(realpath ${CARGO_TARGET_DIR:-target})/release/meshedge
bench=$(realpath ${CARGO_TARGET_DIR:-target})/release/examples/ca_bench
pgbin=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
dir=$(mktemp -d /tmp/meshedge-ca-replicas.XXXX)
chown postgres "$dir"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
runuser -u postgres -- "$pgbin/initdb" -A trust -U meshedge --no-sync -D "$dir/pg" >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p 18432 -k $dir/pg -c max_connections=200" start >/dev/null

serve() { # state-dir port
  RUST_LOG=warn $bin ca serve --state-dir "$1" --listen "127.0.0.1:$2" > "$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do grep -q listening "$1.log" && return; sleep 0.1; done
  echo "ca on $2 did not start"; cat "$1.log"; exit 1
}
run_case() { # name addrs state-dir
  local token
  token=$($bin ca token create --state-dir "$3" --node "bench-$1" 2>/dev/null)
  $bin ca entry create --state-dir "$3" --spiffe-id spiffe://bench.test/svc/load --parent "bench-$1" --selector unix:uid:0 >/dev/null 2>&1
  $bin ca bundle --state-dir "$3" > "$dir/bundle.pem"
  echo "== $1"
  $bench api --ca-addr "$2" --bundle "$dir/bundle.pem" --token "$token" --node "bench-$1" \
    --spiffe-id spiffe://bench.test/svc/load --clients "$clients" --total "$total" --seconds 120
}

$bin ca init --trust-domain bench.test --state-dir "$dir/embedded" >/dev/null
serve "$dir/embedded" 18651
run_case embedded 127.0.0.1:18651 "$dir/embedded"
kill "${pids[-1]}"

url="host=127.0.0.1 port=18432 user=meshedge dbname=postgres"
for r in 1 2 3; do
  $bin ca init --trust-domain bench.test --state-dir "$dir/r$r" --postgres "$url application_name=r$r" --kek-file "$dir/kek" >/dev/null
done
serve "$dir/r1" 18661
run_case pg-1-replica 127.0.0.1:18661 "$dir/r1"
serve "$dir/r2" 18662
serve "$dir/r3" 18663
run_case pg-3-replicas 127.0.0.1:18661,127.0.0.1:18662,127.0.0.1:18663 "$dir/r1"
