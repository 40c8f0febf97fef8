#!/usr/bin/env bash
# VIP stability without faults: three `meshedge fleet` agents in a netns lab hold one VIP for
# SECONDS while BUSY busy loops saturate the CPUs (a traffic spike, a loaded CI machine);
# prints how often the address moved and why. Needs root (network namespaces).
#   scripts/vip-stability.sh LEASE SECONDS BUSY [BINARY]
#   e.g. scripts/vip-stability.sh 30ms 30 4 target/debug/meshedge
set -euo pipefail
cd "$(dirname "$0")/.."
lease=$1 secs=$2 busy=$3 bin=$(realpath "${4:-target/debug/meshedge}")
lab=$PWD/deploy/netns/fleet-lab.sh
prefix=vs$(($$ % 100000))
dir=$(mktemp -d)
head -c 32 /dev/urandom >"$dir/fleet.key"
cat >"$dir/gateway.py" <<'PY'
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
PY
bash "$lab" up "$prefix" 3
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  bash "$lab" down "$prefix" 3
  rm -rf "$dir"
}
trap cleanup EXIT
for i in 1 2 3; do
  cat >"$dir/n$i.toml" <<TOML
node = "n$i"
zone = "a"
listen = "198.18.0.$i:7946"
peers = ["198.18.0.1:7946", "198.18.0.2:7946", "198.18.0.3:7946"]
key_file = "$dir/fleet.key"
expected_members = 3
min_per_zone = 3
start_delay = "100ms"
probe_period = "200ms"
suspect_to_down = "600ms"
vip_lease = "$lease"
[gateway]
command = ["python3", "$dir/gateway.py"]
ready = "127.0.0.1:8080"
serve = "198.18.0.$i:8080"
[[vip]]
address = "198.18.1.1"
prefix = 15
interface = "eth0"
TOML
  ip netns exec "$prefix-n$i" "$bin" fleet --config "$dir/n$i.toml" >/dev/null 2>"$dir/n$i.err" &
  pids+=($!)
done
sleep 3
for _ in $(seq 1 "$busy"); do timeout "$secs" sh -c 'while :; do :; done' & pids+=($!); done
sleep "$secs"
claims=$(cat "$dir"/n*.err | grep -c 'virtual IP added' || true)
echo "vip_lease=$lease seconds=$secs busy_loops=$busy claims=$claims (1 = never moved)"
grep -h 'giving the virtual IP up' "$dir"/n*.err | sed 's/.*reason=/released: /' | sort | uniq -c || true
