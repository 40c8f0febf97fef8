#!/usr/bin/env bash
# DNS-SD resolve + watch benchmark (issue 4): 1,000 services x 10 instances registered on the
# embedded server (in a child process), one Watch per service on one DnsResolver; prints the
# cold and TTL-driven full-refresh CPU/wall time, RSS, and registration -> watcher latency.
# Usage: scripts/bench-discovery.sh [--services N] [--instances M] [--ttl SECONDS] [--samples K]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p meshedge-discovery --example discovery_bench
exec target/release/examples/discovery_bench "$@"
