#!/usr/bin/env bash
# Fleet membership benchmark (issue 8): N `meshedge fleet` agents on loopback (release
# build), 5 zones, gossip seeded with the first 3, none eligible for a gateway (membership
# only). Measures, from the agents' own status files (`status_file`):
#   1. start -> every agent lists all N members (convergence);
#   2. at rest: CPU per agent over 10 s and RSS per agent;
#   3. `kill -9` of one agent -> every other agent has dropped it (failure detection).
# Usage: scripts/bench-fleet.sh [N=50]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50}
cargo build --release -q --bin meshedge -p meshedge
bin=$(realpath "${CARGO_TARGET_DIR:-target}/release/meshedge")
dir=$(mktemp -d /tmp/meshedge-fleet-bench.XXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT
base=$((30000 + RANDOM % 20000))
head -c 32 /dev/urandom > "$dir/fleet.key"
ms() { echo $(( $(date +%s%N) / 1000000 )); }
# How many status files list exactly `want` members (and, with `gone`, not that node).
count_views() {
  python3 - "$dir" "$n" "$1" "${2:-}" <<'PY'
import json, sys, glob
d, n, want, gone = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ok = 0
for f in glob.glob(f"{d}/n*.json"):
    try:
        doc = json.load(open(f))
    except Exception:
        continue
    names = [m["node"] for m in doc["members"]]
    if gone and doc["node"] == gone:
        continue
    if len(names) == want and (not gone or gone not in names):
        ok += 1
print(ok)
PY
}
seeds="\"127.0.0.1:$base\", \"127.0.0.1:$((base + 1))\", \"127.0.0.1:$((base + 2))\""
t0=$(ms)
for i in $(seq 0 $((n - 1))); do
  cat > "$dir/n$i.toml" <<CONF
node = "n$i"
zone = "z$((i % 5))"
listen = "127.0.0.1:$((base + i))"
peers = [$seeds]
key_file = "$dir/fleet.key"
expected_members = $n
eligible = false
status_file = "$dir/n$i.json"
[gateway]
command = ["true"]
ready = "127.0.0.1:9"
serve = "127.0.0.1:9"
CONF
  RUST_LOG=warn "$bin" fleet --config "$dir/n$i.toml" > /dev/null 2> "$dir/n$i.err" &
  pids+=("$!")
done
started=$(ms)
converged=""
for _ in $(seq 600); do
  if [ "$(count_views "$n")" -eq "$n" ]; then converged=$(ms); break; fi
  sleep 0.1
done
[ -n "$converged" ] || { echo "no convergence within 60 s: $(count_views "$n") of $n agents see everyone" >&2; exit 1; }
echo "$n agents started in $((started - t0)) ms; all $n see all $n members $((converged - t0)) ms after the first start ($((converged - started)) ms after the last)"

ticks() { local s=0; for p in "${pids[@]}"; do s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$s"; }
c0=$(ticks); sleep 10; c1=$(ticks)
rss=$(for p in "${pids[@]}"; do awk '/VmRSS/ {print $2}' "/proc/$p/status"; done | sort -n | awk '{v[NR]=$1; s+=$1} END {printf "mean %.1f MB, max %.1f MB", s/NR/1024, v[NR]/1024}')
echo "at rest over 10 s: CPU $(( (c1 - c0) * 10 )) ms for all $n agents ($(awk -v t=$((c1 - c0)) -v n="$n" 'BEGIN {printf "%.2f", t * 10 / n / 10 * 100 / 1000}') % of a core each); RSS $rss"

victim=$((n - 1))
kill -9 "${pids[$victim]}"
killed=$(ms)
detected=""
for _ in $(seq 300); do
  if [ "$(count_views $((n - 1)) "n$victim")" -eq $((n - 1)) ]; then detected=$(ms); break; fi
  sleep 0.05
done
[ -n "$detected" ] || { echo "n$victim still listed after 15 s" >&2; exit 1; }
echo "kill -9 of n$victim -> dropped by all $((n - 1)) others in $((detected - killed)) ms (defaults: probe period 250 ms, suspicion 750 ms; status files are rewritten within 200 ms of a change)"
