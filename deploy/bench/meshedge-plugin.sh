#!/usr/bin/env bash
# meshedge as a plug-in of the shared edge-proxy bench (../shared/bench/run.sh, see the
# plug-in contract at its top): writes an edge config from the BENCH_* variables into
# $BENCH_RUN_DIR and execs the gateway in the foreground. The upstream is outside the mesh
# (its certificate names upstream.test, no SPIFFE ID), so the cluster checks it by DNS name
# (`verify_dns_name`); the gateway presents the bench's client certificate. Like the peers:
# no access log, no active health checks, keep-alive pool of 1024, one worker thread.
# Run from the project root (builds nothing; scripts/bench-edge.sh builds and calls run.sh).
set -euo pipefail
bin=${MESHEDGE_BIN:?set MESHEDGE_BIN to the meshedge binary}
cat >"$BENCH_RUN_DIR/edge.toml" <<CONF
[gateway]
name = "bench"

[listener]
address = "$BENCH_LISTEN"
http3 = true

[[listener.certificates]]
cert = "$BENCH_CERT"
key = "$BENCH_KEY"

[admin]
address = "127.0.0.1:0"

[identity]
cert = "$BENCH_CLIENT_CERT"
key = "$BENCH_CLIENT_KEY"
bundle = "$BENCH_CA"

[access_log]
enabled = false

[clusters.upstream]
endpoints = ["$BENCH_UPSTREAM"]
verify_dns_name = "$BENCH_UPSTREAM_SNI"
protocol = "http1"
pool_max_idle_per_endpoint = 1024
health_check = { enabled = false }

[[routes]]
cluster = "upstream"
CONF
export MESHEDGE_WORKER_THREADS=${BENCH_WORKERS:-1} RUST_LOG=warn
exec "$bin" edge --config "$BENCH_RUN_DIR/edge.toml"
