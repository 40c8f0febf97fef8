# Sourced by scripts/bench-instructions.sh, scripts/bench-h1-ab.sh and
# scripts/bench-h1-latency.sh: one proxy (nginx, HAProxy, or meshedge through
# deploy/bench/meshedge-plugin.sh, HTTP/3 off) in front of the shared
# bench's nginx upstream (../shared/bench: TLS in, mTLS keep-alive out, upstream on 9443).
# The caller runs from the project root and sets `work` (a scratch directory); `bench` is
# the shared bench's path, set up here on first use. Every process started here is in
# `pids`, killed on exit.
bench=$(realpath ../shared/bench)
[ -d "$bench/pki" ] || "$bench/setup.sh"
pki=$bench/pki
pids=()
bench_cleanup() { local p; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap bench_cleanup EXIT

# Fills one of the bench's config templates for the run directory `run`: TEMPLATE PORT.
bench_render() {
  sed -e "s|@RUN@|$run|g" -e "s|@PKI@|$pki|g" -e "s|@PORT@|$2|g" -e "s|@UPSTREAM_PORT@|9443|g" \
    -e "s|@UPSTREAM_DIAG_PORT@|9444|g" "$bench/conf/$1"
}

# Starts the upstream of run directory RUN, the command prefixed by PREFIX... (e.g.
# `taskset -c 0`); sets `up` to its PID.
bench_start_upstream() {
  run=$1
  shift
  mkdir -p "$run/upstream" "$run/tmp-up" "$run/p" "$run/tmp-nginx"
  bench_render upstream-nginx.conf.in "" >"$run/upstream/nginx.conf"
  "$@" nginx -e "$run/up-err.log" -p "$run/upstream" -c "$run/upstream/nginx.conf" \
    >/dev/null 2>&1 &
  up=$!
  pids+=("$up")
}

# Starts PROXY (nginx, haproxy, or meshedge from the binary BIN) on PORT for the current `run`, its
# binary prefixed by PREFIX... (a profiler, `taskset`); sets `gw` to the PID started (the
# prefix's, when it forks the proxy), then waits until the proxy answers.
bench_start_proxy() {
  local proxy=$1 bin=$2 port=$3
  shift 3
  if [[ $proxy == nginx ]]; then
    bench_render nginx.conf.in "$port" | sed 's/^master_process on;/master_process off;/' \
      >"$run/p/nginx.conf"
    "$@" nginx -e "$run/p/err.log" -p "$run/p" -c "$run/p/nginx.conf" >"$run/gw.log" 2>&1 &
  elif [[ $proxy == haproxy ]]; then
    bench_render haproxy.cfg.in "$port" >"$run/p/haproxy.cfg"
    "$@" "$(command -v haproxy || echo /usr/sbin/haproxy)" -db -f "$run/p/haproxy.cfg" \
      >"$run/gw.log" 2>&1 &
  else
    BENCH_LISTEN=127.0.0.1:$port BENCH_CERT=$pki/edge.crt BENCH_KEY=$pki/edge.key \
      BENCH_CLIENT_CERT=$pki/proxy-client.crt BENCH_CLIENT_KEY=$pki/proxy-client.key \
      BENCH_CA=$pki/ca.crt BENCH_UPSTREAM=127.0.0.1:9443 BENCH_UPSTREAM_SNI=upstream.test \
      BENCH_RUN_DIR=$run/p BENCH_WORKERS=1 MESHEDGE_BIN=$bin \
      bash <(sed -e 's|^exec "$bin"|exec '"$*"' "$bin"|' -e 's|http3 = true|http3 = false|' \
        deploy/bench/meshedge-plugin.sh) >"$run/gw.log" 2>&1 &
  fi
  gw=$!
  pids+=("$gw")
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null --cacert "$pki/ca.crt" --resolve "edge.test:$port:127.0.0.1" \
      "https://edge.test:$port/" && return 0
    sleep 0.2
  done
  echo "$proxy did not answer on port $port (log: $run/gw.log)" >&2
  return 1
}

# Prints the proxy's (`gw`'s) user and system CPU time so far, in clock ticks (1/100 s).
bench_cpu_ticks() { sed 's/.*) //' "/proc/$gw/stat" | awk '{print $12, $13}'; }

# Stops the proxy and the upstream of the current `run`.
bench_stop() {
  kill "$gw" "$up" 2>/dev/null || true
  wait "$gw" "$up" 2>/dev/null || true
}
