#!/usr/bin/env bash
# The edge gateway next to nginx, HAProxy, Envoy and Caddy in the shared bench
# (../shared/bench: TLS in, mTLS out to an nginx upstream, proxy pinned to one core).
# Installs the bench's tools once (its setup.sh), builds meshedge in release mode and runs
# every peer plus meshedge, interleaved, with the bench's own flags passed through; then
# judges the issue's goals round by round (scripts/bench-verdict.sh on the run's results).
# --pgo: also the profile-guided build (scripts/build-pgo.sh, about 25 min on 2 cores), as
# `meshedge-pgo` on port 8452 beside the plain release build.
# Usage: scripts/bench-edge.sh [--pgo] [--rounds N] [--duration S] [PEER ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bench=$(realpath ../shared/bench)
[ -d "$bench/pki" ] && [ -x "$bench/loadgen/target/release/h3load" ] || "$bench/setup.sh"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
plugin=$PWD/deploy/bench/meshedge-plugin.sh
extra=()
if [ "${1:-}" = --pgo ]; then
  shift
  pgo_bin=$(scripts/build-pgo.sh)
  extra=(--extra "meshedge-pgo@$version:8452:h3" "MESHEDGE_BIN=$pgo_bin exec $plugin")
fi
cargo build --release -q --bin meshedge -p meshedge
export MESHEDGE_BIN=$(realpath "${CARGO_TARGET_DIR:-target}/release/meshedge")
out=$bench/results/$(date +%Y%m%d-%H%M%S)
args=("$@")
for i in "${!args[@]}"; do
  if [ "${args[$i]}" = --out ]; then out=${args[$((i + 1))]}; fi
done
"$bench/run.sh" --out "$out" --extra "meshedge@$version:8450:h3" "exec $plugin" "${extra[@]}" "$@"
echo
scripts/bench-verdict.sh "$out"
