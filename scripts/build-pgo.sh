#!/usr/bin/env bash
# Profile-guided release build of the meshedge binary (rustc's -Cprofile-generate/-use with
# the toolchain's own llvm-profdata, from rustup's llvm-tools component).
#   1. an instrumented release build       -> target/pgo-generate
#   2. a training run: the shared bench's load generators (../shared/bench, h1, h2, new TLS
#      connections, h3) against the instrumented gateway alone, one short round; the
#      gateway writes its profile when it exits on the bench's SIGTERM
#   3. llvm-profdata merge                 -> target/pgo/meshedge.profdata
#   4. the release build using the profile -> target/pgo-use/release/meshedge (path printed)
# The training traffic is the bench's own kind (small GETs proxied over mTLS): the binary is
# tuned for that path, as a deployment would tune it with its own traffic.
# Usage: scripts/build-pgo.sh [--duration S]     (S: seconds per training load run, default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=5
while [ $# -gt 0 ]; do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    *) echo "build-pgo.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
root=$PWD
bench=$(realpath ../shared/bench)
sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  rustup component add llvm-tools >&2
fi
[ -x "$profdata" ] || { echo "build-pgo.sh: no llvm-profdata at $profdata" >&2; exit 1; }
[ -d "$bench/pki" ] && [ -x "$bench/loadgen/target/release/h3load" ] || "$bench/setup.sh"

raw="$root/target/pgo/raw"
rm -rf "$raw" && mkdir -p "$raw"
echo "build-pgo.sh: instrumented build" >&2
RUSTFLAGS="-Cprofile-generate=$raw" CARGO_TARGET_DIR="$root/target/pgo-generate" \
  cargo build --release -q --bin meshedge -p meshedge
echo "build-pgo.sh: training run (${duration} s per test)" >&2
MESHEDGE_BIN="$root/target/pgo-generate/release/meshedge" "$bench/run.sh" --only-extra \
  --no-upstream-check --rounds 1 --duration "$duration" --hs-duration "$duration" \
  --tests h1,h2,hs,h3 --out "$root/target/pgo/training" \
  --extra 'meshedge-pgo-training:8450:h3' "exec $root/deploy/bench/meshedge-plugin.sh" >&2
ls "$raw"/*.profraw >/dev/null 2>&1 || {
  echo "build-pgo.sh: the training run left no profile in $raw" >&2; exit 1; }
"$profdata" merge -o "$root/target/pgo/meshedge.profdata" "$raw"
echo "build-pgo.sh: optimised build" >&2
RUSTFLAGS="-Cprofile-use=$root/target/pgo/meshedge.profdata" \
  CARGO_TARGET_DIR="$root/target/pgo-use" cargo build --release -q --bin meshedge -p meshedge
echo "$root/target/pgo-use/release/meshedge"
