#!/usr/bin/env bash
# VIP failover: meshedge fleet agents against keepalived 2.2.7 (defaults, and VRRPv3 with
# advert_int 0.01): four faults on the holder (link cut, processes killed, VIP daemon hung,
# gateway alone killed) under a 200 req/s open-loop client. Needs root (network
# namespaces), keepalived, nginx, arping. See scripts/vip_bench.py for the lab and figures.
#   scripts/bench-vip.sh [SYSTEMS] [FAULTS] [ROUNDS=3]
#   e.g. scripts/bench-vip.sh meshedge link-cut,killed
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-vip.sh needs root (network namespaces)" >&2; exit 1; }
missing=()
for tool in keepalived nginx arping; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=("${missing[@]/arping/iputils-arping}")
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}"
fi
cargo build --release --bin meshedge
out=target/bench-vip
mkdir -p "$out"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
python3 scripts/vip_bench.py "$PWD/target/release/meshedge" "$PWD/deploy/netns/fleet-lab.sh" \
  "$out/$stamp.json" "${1:-keepalived-default,keepalived-fast,meshedge,meshedge-18ms}" \
  "${2:-link-cut,killed,hung,gateway-killed}" "${3:-3}"
echo "raw figures: $out/$stamp.json"
