#!/usr/bin/env bash
# A 3-zone meshedge cluster on one machine, out of network namespaces. Needs root, iproute2,
# nsupdate (bind9-dnsutils) and openssl.
#
#   cluster.sh up   DIR [MESHEDGE]   build it; state, logs and pids under DIR
#   cluster.sh down DIR              stop every process and remove the namespaces
#
# Namespaces (prefix = basename of DIR, at most 8 characters used):
#   P-br   a bridge joining the others (198.18.1.0/24, RFC 2544 benchmarking range)
#   P-ctl  198.18.1.1: CA (`ca serve`, :8443) and DNS-SD server (`dns serve`, :53, mesh.test)
#   P-a, P-b, P-c  198.18.1.11/12/13: one node per zone: an agent (Workload API at
#          DIR/<zone>/agent.sock), two `echo` instances (:9001, :9002) registered in DNS-SD
#          as _echo._tcp.mesh.test with TXT zone=<zone>; nodes a and b also run an edge
#          gateway (HTTPS :8443, admin :9901, cluster `echo` from DNS-SD, zone-aware)
#   P-cl   198.18.1.200: a client
# Once up it prints the curl command to call a gateway from the client namespace. Breaking
# things: `kill $(cat DIR/pids/echo-a1.pid)`, `ip -n P-br link set P-va down` (cut zone a off).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,7p' "$0" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
p=$(basename "$dir" | tr -cd 'a-zA-Z0-9' | cut -c1-8)
zones="a b c"
ip_of() { case $1 in ctl) echo 198.18.1.1 ;; a) echo 198.18.1.11 ;; b) echo 198.18.1.12 ;; c) echo 198.18.1.13 ;; cl) echo 198.18.1.200 ;; esac; }

down() {
  local pids=()
  if [ -d "$dir/pids" ]; then
    for f in "$dir"/pids/*.pid; do
      [ -e "$f" ] || continue
      pids+=("$(cat "$f")")
      rm -f "$f"
    done
  fi
  # SIGTERM (gateways drain), then SIGKILL what is left after 10 s.
  if [ ${#pids[@]} -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "${pids[@]}" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "${pids[@]}" 2>/dev/null || true
  fi
  for n in ctl $zones cl br; do ip netns del "$p-$n" 2>/dev/null || true; done
}

# start NAME NETNS ARGS...: runs meshedge in NETNS, logs to DIR/logs/NAME.log, waits for
# its "listening" line.
start() {
  local name=$1 ns=$2; shift 2
  ip netns exec "$p-$ns" "$bin" "$@" >"$dir/logs/$name.log" 2>&1 &
  echo $! >"$dir/pids/$name.pid"
  for _ in $(seq 1 150); do
    if grep -q "listening\|ready" "$dir/logs/$name.log" 2>/dev/null; then return 0; fi
    kill -0 "$(cat "$dir/pids/$name.pid")" 2>/dev/null || break
    sleep 0.1
  done
  echo "cluster.sh: $name did not start; log:" >&2
  cat "$dir/logs/$name.log" >&2
  exit 1
}

up() {
  bin=${1:-meshedge}
  bin=$(command -v "$bin" || echo "$bin")
  [ -x "$bin" ] || { echo "cluster.sh: no meshedge binary at $bin" >&2; exit 1; }
  down
  rm -rf "$dir/ca" "$dir/dns" "$dir/logs" "$dir/pids" "$dir/tls" $(for z in $zones; do echo "$dir/$z"; done)
  mkdir -p "$dir/logs" "$dir/pids" "$dir/tls"

  echo "== network namespaces ($p-*)"
  ip netns add "$p-br"
  ip -n "$p-br" link add br0 type bridge
  ip -n "$p-br" link set br0 up
  for n in ctl $zones cl; do
    ip netns add "$p-$n"
    ip link add "$p-v$n" type veth peer name eth0 netns "$p-$n"
    ip link set "$p-v$n" netns "$p-br"
    ip -n "$p-br" link set "$p-v$n" master br0 up
    ip -n "$p-$n" addr add "$(ip_of "$n")/24" dev eth0
    ip -n "$p-$n" link set eth0 up
    ip -n "$p-$n" link set lo up
  done

  echo "== CA and DNS-SD server on $(ip_of ctl)"
  "$bin" ca init --trust-domain local.test --state-dir "$dir/ca" >"$dir/logs/ca-init.log"
  start ca ctl ca serve --state-dir "$dir/ca" --listen "$(ip_of ctl):8443"
  "$bin" ca bundle --state-dir "$dir/ca" >"$dir/bundle.pem"
  start dns ctl dns serve --listen "$(ip_of ctl):53" --zone mesh.test --state-dir "$dir/dns" \
    --tsig-key-file "$dir/dns/tsig.key"
  read -r key_name key_secret <"$dir/dns/tsig.key"

  # The gateways' public certificate (self-signed, for the demo).
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -subj /CN=edge.local -addext "subjectAltName=DNS:edge.local" \
    -keyout "$dir/tls/edge.key" -out "$dir/tls/edge.crt" 2>/dev/null

  local updates=""
  for z in $zones; do
    local ip; ip=$(ip_of "$z")
    mkdir -p "$dir/$z"
    echo "== zone $z: node $z ($ip): agent, echo $z-1 $z-2$( [ "$z" != c ] && echo ", edge")"
    token=$("$bin" ca token create --state-dir "$dir/ca" --node "node-$z" 2>>"$dir/logs/ca-init.log" | tail -n1)
    # Every meshedge process run by root on the node gets this node's workload ID.
    "$bin" ca entry create --state-dir "$dir/ca" --spiffe-id "spiffe://local.test/workload/$z" \
      --parent "node-$z" --selector "unix:uid:$(id -u)" >/dev/null
    start "agent-$z" "$z" agent --ca-addr "$(ip_of ctl):8443" --ca-bundle "$dir/bundle.pem" \
      --join-token "$token" --node "node-$z" --zone "$z" --state-dir "$dir/$z/agent" \
      --socket "$dir/$z/agent.sock" --metrics "$ip:9902" --entry-refresh 1s
    for i in 1 2; do
      start "echo-$z$i" "$z" echo --socket "$dir/$z/agent.sock" --listen "$ip:900$i" \
        --zone "$z" --service echo --instance "$z$i"
      updates+="update add $z$i._echo._tcp.mesh.test 30 SRV 0 1 900$i node-$z.mesh.test.
update add $z$i._echo._tcp.mesh.test 30 TXT \"zone=$z\"
update add _echo._tcp.mesh.test 30 PTR $z$i._echo._tcp.mesh.test.
"
    done
    updates+="update add node-$z.mesh.test 30 A $ip
"
  done

  echo "== DNS-SD registrations (RFC 2136, TSIG)"
  printf 'server %s 53\nzone mesh.test\n%ssend\n' "$(ip_of ctl)" "$updates" |
    ip netns exec "$p-ctl" nsupdate -y "hmac-sha256:$key_name:$key_secret"

  for z in a b; do
    local ip; ip=$(ip_of "$z")
    cat >"$dir/$z/edge.toml" <<TOML
[gateway]
name = "edge-$z"
zone = "$z"
drain_timeout = "5s"

[listener]
address = "$ip:8443"

[[listener.certificates]]
cert = "$dir/tls/edge.crt"
key = "$dir/tls/edge.key"

[admin]
address = "$ip:9901"

[identity]
workload_api_socket = "unix://$dir/$z/agent.sock"

[access_log]
output = "$dir/logs/access-$z.log"

[clusters.echo]
dns_sd = { service = "_echo._tcp.mesh.test", resolvers = ["$(ip_of ctl):53"], refresh = "2s" }
allowed_id_prefixes = ["spiffe://local.test/workload"]

[[routes]]
name = "echo"
match = { path_prefix = "/echo" }
cluster = "echo"
strip_prefix = true
TOML
    echo "== edge gateway edge-$z on $ip"
    start "edge-$z" "$z" edge --config "$dir/$z/edge.toml"
  done

  cat <<MSG
ready.
  call:     ip netns exec $p-cl curl -sk --resolve edge.local:8443:$(ip_of a) https://edge.local:8443/echo/
  admin:    ip netns exec $p-cl curl -s http://$(ip_of a):9901/clusters
  status:   ip netns exec $p-cl $bin status --admin $(ip_of a):9901 --admin $(ip_of b):9901
  break:    kill \$(cat $dir/pids/echo-a1.pid) \$(cat $dir/pids/echo-a2.pid)   # zone a's instances
            ip -n $p-br link set $p-vc down                                      # cut zone c off
  stop:     $0 down $dir
MSG
}

case "$cmd" in
  up) up "${3:-meshedge}" ;;
  down) down; echo "down." ;;
  *) sed -n '2,7p' "$0" >&2; exit 2 ;;
esac
