#!/usr/bin/env bash
# Builds (or removes) a small fleet lab: namespaces PREFIX-br (a bridge), PREFIX-n1..nN (one
# node each, veth "eth0" addressed 198.18.0.<i>/15) and PREFIX-cl (a client, 198.18.0.200).
# Only 198.18.0.0/15 (RFC 2544 benchmarking range) is used. Needs root.
#   fleet-lab.sh up PREFIX N      fleet-lab.sh down PREFIX N
#   fleet-lab.sh cut PREFIX I     fleet-lab.sh heal PREFIX I
set -euo pipefail
cmd=$1 prefix=$2 n=${3:-3}
br="$prefix-br"
case "$cmd" in
  up)
    ip netns add "$br"
    ip -n "$br" link add br0 type bridge
    ip -n "$br" link set br0 up
    for i in $(seq 1 "$n") cl; do
      ns="$prefix-n$i"; addr="198.18.0.$i"
      if [ "$i" = cl ]; then ns="$prefix-cl"; addr=198.18.0.200; fi
      ip netns add "$ns"
      ip link add "${prefix}v$i" type veth peer name eth0 netns "$ns"
      ip link set "${prefix}v$i" netns "$br"
      ip -n "$br" link set "${prefix}v$i" master br0 up
      ip -n "$ns" addr add "$addr/15" dev eth0
      ip -n "$ns" link set eth0 up
      ip -n "$ns" link set lo up
    done
    ;;
  down)
    for i in $(seq 1 "$n"); do ip netns del "$prefix-n$i" 2>/dev/null || true; done
    ip netns del "$prefix-cl" 2>/dev/null || true
    ip netns del "$br" 2>/dev/null || true
    ;;
  cut) ip -n "$br" link set "${prefix}v$n" down ;;
  heal) ip -n "$br" link set "${prefix}v$n" up ;;
  *) echo "usage: $0 up|down|cut|heal PREFIX N" >&2; exit 2 ;;
esac
