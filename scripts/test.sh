#!/usr/bin/env bash
# The README test command: installs what the tests need when missing, then runs
# cargo fmt --check, clippy -D warnings and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in openssl:openssl curl:curl promtool:prometheus dig:bind9-dnsutils named:bind9 dnsmasq:dnsmasq ip:iproute2 nft:nftables arping:iputils-arping; do
  bin=${pair%%:*}; pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need_apt+=("$pkg")
done
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
command -v runuser >/dev/null 2>&1 || need_apt+=(util-linux)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
# The dashboard's browser test (tests/edge_dashboard.rs): Debian's chromium, node and npm.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# tests/deploy.rs: systemd-analyze verify on deploy/systemd/*.service.
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test.sh: installing ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# The fleet's VIP fence is a TUN device (tests/fleet_vip_netns.rs): some containers lack
# the device node although the kernel has the driver.
if [ ! -c /dev/net/tun ]; then
  mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 600 /dev/net/tun || true
fi
# The HTTP/3 process test uses aioquic's client (tests/h3_client.py).
python3 -c 'import aioquic' >/dev/null 2>&1 || {
  echo "test.sh: installing aioquic (pip)" >&2
  python3 -m pip install -q aioquic || python3 -m pip install -q --break-system-packages aioquic
}
# Debian's packages start their daemons on install on some machines; the tests start
# their own instances (DNS servers, a PostgreSQL cluster in a temp dir run as the postgres
# user) on 127.0.0.x ports and never use the system ones.

# The agent's interop test drives the Workload API with the Python SPIFFE client (py-spiffe).
if ! python3 -c 'import spiffe' >/dev/null 2>&1; then
  echo "test.sh: pip install spiffe" >&2
  python3 -m pip install -q spiffe 2>/dev/null || python3 -m pip install -q --break-system-packages spiffe
fi

# tests/deploy.rs validates deploy/kubernetes/ with kubernetes-validate (PyPI); it also needs
# systemd-analyze (Debian's systemd) and promtool (prometheus), installed above.
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "test.sh: pip install kubernetes-validate" >&2
  python3 -m pip install -q kubernetes-validate 2>/dev/null || python3 -m pip install -q --break-system-packages kubernetes-validate
fi

# playwright-core (pinned in tests/dashboard/package-lock.json) drives that chromium; it
# downloads no browser.
if [ ! -d tests/dashboard/node_modules/playwright-core ]; then
  echo "test.sh: npm ci in tests/dashboard (playwright-core)" >&2
  (cd tests/dashboard && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

export PATH="$PATH:/usr/sbin:/sbin"
export CARGO_TERM_COLOR=never

echo "== cargo fmt --check" >&2
cargo fmt --all --check
echo "== cargo clippy --all-targets -D warnings" >&2
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test" >&2
cargo test --workspace -- --test-threads 2
