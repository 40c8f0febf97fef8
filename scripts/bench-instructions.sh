#!/usr/bin/env bash
# User-space instructions per proxied HTTP/1.1 request, meshedge next to nginx, counted by
# valgrind's callgrind: meshedge's figure is stable to about 1 % between runs, where
# wall-clock CPU on this shared 2-core machine moves by 5-10 % (nginx's moves more: how
# often its reads find the socket empty depends on timing). Same path as the shared edge bench
# (../shared/bench): TLS in, mTLS keep-alive out to an nginx upstream, one worker, the
# meshedge config of deploy/bench/meshedge-plugin.sh (HTTP/3 off). Each proxy is run twice,
# for N and 3N requests from `h2load --h1 -c 16`; the difference over 2N requests leaves
# out start-up and the 16 TLS handshakes. Kernel time (about 45 % of a request on
# loopback, for nginx as for meshedge) is not in these figures.
# With --syscalls, system calls per request instead, by name (strace -c, same method).
# MESHEDGE_BIN=PATH counts that binary (e.g. the profile-guided build) instead of building.
# Usage: scripts/bench-instructions.sh [--syscalls] [N]        (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
syscalls=0
if [[ ${1:-} == --syscalls ]]; then syscalls=1; shift; fi
n=${1:-1000}
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
if [ -n "${MESHEDGE_BIN:-}" ]; then
  bin=$(realpath "$MESHEDGE_BIN")
else
  cargo build --release -q --bin meshedge -p meshedge
  bin=$(realpath "${CARGO_TARGET_DIR:-target}/release/meshedge")
fi
work=$(mktemp -d /tmp/meshedge-instr.XXXXXX)
source scripts/lib/bench-proxy.sh
echo "work: $work" >&2

# Prints the callgrind instruction total of PROXY (meshedge|nginx) for REQUESTS requests
# (with --syscalls: the system-call total, by name in $run/syscalls.txt).
instructions() {
  local proxy=$1 requests=$2 port=8470
  bench_start_upstream "$work/$proxy-$requests"
  local grind=(valgrind --tool=callgrind "--callgrind-out-file=$run/callgrind.out")
  ((syscalls)) && grind=(strace -f -c -o "$run/strace.out")
  bench_start_proxy "$proxy" "$bin" "$port" "${grind[@]}"
  timeout 600 h2load --h1 -n "$requests" -c 16 "--connect-to=127.0.0.1:$port" \
    "https://edge.test:$port/" >"$run/h2load.txt" 2>&1
  grep -q "^requests: $requests total.* $requests succeeded" "$run/h2load.txt" ||
    { cat "$run/h2load.txt" >&2; echo "$proxy: not every request succeeded" >&2; exit 1; }
  # Under strace, the proxy is strace's child: signalled itself, strace then writes its summary.
  local proxy_pid=$gw
  ((syscalls)) && proxy_pid=$(pgrep -P "$gw")
  if [[ $proxy == nginx ]]; then kill -QUIT "$proxy_pid"; else kill "$proxy_pid"; fi
  wait "$gw" 2>/dev/null || true
  kill "$up"
  wait "$up" 2>/dev/null || true
  if ((syscalls)); then
    # strace -c rows: % time, seconds, usecs/call, calls, [errors,] syscall.
    awk '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {print $NF, $4}' "$run/strace.out" |
      sort >"$run/syscalls.txt"
    awk '{s += $2} END {print s}' "$run/syscalls.txt"
  else
    awk '/^(summary|totals):/ {print $2; exit}' "$run/callgrind.out"
  fi
}

if ((syscalls)); then
  for proxy in meshedge nginx; do
    instructions "$proxy" "$n" >/dev/null
    instructions "$proxy" $((3 * n)) >/dev/null
    echo "$proxy: system calls per request (strace -c)"
    join -a2 -e0 -o 0,1.2,2.2 "$work/$proxy-$n/syscalls.txt" "$work/$proxy-$((3 * n))/syscalls.txt" |
      awk -v n="$n" '{d = ($3 - $2) / (2 * n); t += d; if (d >= 0.01) printf "  %-16s %6.2f\n", $1, d}
        END {printf "  %-16s %6.2f\n", "total", t}'
  done
  exit 0
fi

declare -A per_request
for proxy in meshedge nginx; do
  small=$(instructions "$proxy" "$n")
  large=$(instructions "$proxy" $((3 * n)))
  per_request[$proxy]=$(((large - small) / (2 * n)))
  echo "$proxy: ${per_request[$proxy]} instructions per request (callgrind, user space)"
done
awk -v m="${per_request[meshedge]}" -v g="${per_request[nginx]}" \
  'BEGIN { printf "meshedge / nginx: %.2f\n", m / g }'
