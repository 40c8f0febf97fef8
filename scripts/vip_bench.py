"""VIP failover benchmark: meshedge fleet agents against keepalived 2.2.7 (issue 8).

Run through scripts/bench-vip.sh (root; builds the lab with deploy/netns/fleet-lab.sh).
Three nodes and a client namespace on one bridge (198.18.0.0/15). nginx on :8080 answers
its node's name. Systems:
  keepalived-default  n1 MASTER (priority 150), n2 BACKUP (100), VRRPv2, advert_int 1
  keepalived-fast     the same, VRRPv3, advert_int 0.01 (its limit)
  meshedge            `meshedge fleet` on n1, n2, n3 (n3 votes, hosts no gateway); each
                      eligible agent supervises its nginx as the gateway; default timing
                      (vip_lease 100ms); `meshedge-18ms` sets vip_lease = "18ms",
                      `meshedge-30ms` the first default
Faults, applied to the node holding the VIP while the open-loop client runs (200 req/s, a
new connection per request, 100 ms timeout):
  link-cut        its veth goes down, then up again
  killed          kill -9 of its VIP daemon (keepalived / agent) and nginx, then both restarted
  hung            SIGSTOP of its VIP daemon, then SIGCONT; nginx keeps serving
  gateway-killed  kill -9 of nginx alone (the meshedge agent restarts it; keepalived has no
                  supervisor, so the bench restarts nginx at the end of the fault)
Holders are read from `ip -ts monitor address` in every node namespace (kernel events,
microsecond timestamps); requests from the client's own record.
Prints a table and writes the raw figures as JSON.

    python3 vip_bench.py MESHEDGE_BIN LAB_SCRIPT OUT_JSON [SYSTEMS] [FAULTS] [ROUNDS]
    python3 vip_bench.py --table OUT_JSON      (the table again, from a run's JSON)
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

PREFIX = "vb"
VIP = "198.18.1.1"
NODES = (1, 2, 3)
RATE, TIMEOUT = 200.0, 0.1
BEFORE, DURING, AFTER = 1.0, 4.0, 4.0
HERE = os.path.dirname(os.path.abspath(__file__))

NGINX = """worker_processes 1;
pid {dir}/nginx-n{i}.pid;
error_log {dir}/nginx-n{i}.err;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  server {{ listen 8080; location / {{ return 200 "n{i}\\n"; }} }}
  server {{ listen 127.0.0.1:8081; location /ready {{ return 200 "ok\\n"; }} }}
}}
"""

KEEPALIVED = """global_defs {{
  router_id n{i}
  {version}
}}
vrrp_instance VI {{
  state {state}
  interface eth0
  virtual_router_id 51
  priority {priority}
  advert_int {advert}
  virtual_ipaddress {{
    {vip}/15 dev eth0
  }}
}}
"""

FLEET = """node = "n{i}"
zone = "a"
listen = "198.18.0.{i}:7946"
peers = ["198.18.0.1:7946", "198.18.0.2:7946", "198.18.0.3:7946"]
key_file = "{dir}/fleet.key"
expected_members = 3
vip_lease = "{lease}"
eligible = {eligible}
min_per_zone = 2

[gateway]
command = ["nginx", "-c", "{dir}/nginx-n{i}.conf", "-g", "daemon off;"]
ready = "127.0.0.1:8081"
ready_path = "/ready"
serve = "198.18.0.{i}:8080"

[[vip]]
address = "{vip}"
prefix = 15
interface = "eth0"
"""


def ns(i):
    return f"{PREFIX}-n{i}"


def lab(cmd, *args):
    subprocess.run(["bash", LAB, cmd, PREFIX, *map(str, args)], check=True)


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
                out += kids
                todo += kids
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def signal_all(pids, sig):
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


class Holders:
    """Who holds the VIP over time, from kernel address events in every node namespace."""

    def __init__(self):
        self.events = []  # (time, node, held)
        self.lock = threading.Lock()
        self.procs = []
        for i in NODES:
            p = subprocess.Popen(["ip", "-n", ns(i), "-ts", "monitor", "address"],
                                 stdout=subprocess.PIPE, text=True)
            self.procs.append(p)
            threading.Thread(target=self.read, args=(i, p), daemon=True).start()
        time.sleep(0.3)

    def read(self, node, proc):
        pattern = re.compile(r"^\[(\S+)\] (Deleted )?\d+: \S+\s+inet " + re.escape(VIP) + "/")
        for line in proc.stdout:
            m = pattern.match(line)
            if m:
                t = time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%dT%H:%M:%S"))
                t += float("0." + m.group(1)[20:])
                with self.lock:
                    self.events.append((t, node, m.group(2) is None))

    def now(self):
        held = set()
        for i in NODES:
            out = subprocess.run(["ip", "-n", ns(i), "-o", "addr", "show"],
                                 capture_output=True, text=True).stdout
            if f" {VIP}/" in out:
                held.add(i)
        return held

    def spans(self, start, end, initial):
        """Seconds with no holder and with two or more in [start, end), and holders at end."""
        with self.lock:
            events = sorted(self.events)
        held = set(initial)
        none = two = 0.0
        t = start
        for (et, node, on) in events:
            if et < start:
                continue
            if et >= end:
                break
            none += (et - t) if not held else 0
            two += (et - t) if len(held) >= 2 else 0
            (held.add if on else held.discard)(node)
            t = et
        none += (end - t) if not held else 0
        two += (end - t) if len(held) >= 2 else 0
        return none, two, held

    def stop(self):
        for p in self.procs:
            p.terminate()
            p.wait()


class Keepalived:
    def __init__(self, fast):
        self.name = "keepalived-fast" if fast else "keepalived-default"
        self.fast = fast
        self.daemons, self.nginx = {}, {}

    def start_node(self, i):
        if i == 3:
            return
        conf = f"{DIR}/ka-{self.name}-n{i}.conf"
        with open(conf, "w") as f:
            f.write(KEEPALIVED.format(
                i=i, vip=VIP, state="MASTER" if i == 1 else "BACKUP",
                priority=150 if i == 1 else 100,
                advert="0.01" if self.fast else "1",
                version="vrrp_version 3" if self.fast else ""))
        self.nginx[i] = start_nginx(i)
        self.daemons[i] = subprocess.Popen(
            ["ip", "netns", "exec", ns(i), "keepalived", "-n", "-l", "-P", "-f", conf,
             "-p", f"{DIR}/ka-n{i}.pid", "-r", f"{DIR}/ka-vrrp-n{i}.pid"],
            stdout=subprocess.DEVNULL, stderr=open(f"{DIR}/ka-n{i}.log", "a"))

    def daemon_pids(self, i):
        return [self.daemons[i].pid] + descendants(self.daemons[i].pid)

    def gateway_pids(self, i):
        return [self.nginx[i].pid] + descendants(self.nginx[i].pid)

    def stop(self):
        for i in list(self.daemons):
            signal_all(self.daemon_pids(i), signal.SIGCONT)
            self.daemons[i].terminate()
            self.daemons[i].wait()
        for i in list(self.nginx):
            self.nginx[i].terminate()
            self.nginx[i].wait()
        for i in (1, 2):
            subprocess.run(["ip", "-n", ns(i), "addr", "del", f"{VIP}/15", "dev", "eth0"],
                           capture_output=True)


class Meshedge:
    def __init__(self, binary, lease):
        self.name = "meshedge" if lease == "100ms" else f"meshedge-{lease}"
        self.lease = lease
        self.binary = binary
        self.daemons = {}
        with open(f"{DIR}/fleet.key", "wb") as f:
            f.write(os.urandom(32))

    def start_node(self, i):
        conf = f"{DIR}/fleet-n{i}.toml"
        with open(conf, "w") as f:
            f.write(FLEET.format(i=i, dir=DIR, vip=VIP, lease=self.lease,
                                 eligible="false" if i == 3 else "true"))
        self.daemons[i] = subprocess.Popen(
            ["ip", "netns", "exec", ns(i), self.binary, "fleet", "--config", conf],
            stdout=subprocess.DEVNULL, stderr=open(f"{DIR}/fleet-n{i}.log", "a"))

    def daemon_pids(self, i):
        return [self.daemons[i].pid]

    def gateway_pids(self, i):
        return descendants(self.daemons[i].pid)

    def stop(self):
        for i in list(self.daemons):
            signal_all([self.daemons[i].pid], signal.SIGCONT)
            self.daemons[i].terminate()
            try:
                self.daemons[i].wait(15)
            except subprocess.TimeoutExpired:
                signal_all(self.daemon_pids(i) + self.gateway_pids(i), signal.SIGKILL)
                self.daemons[i].wait()


def start_nginx(i):
    conf = f"{DIR}/nginx-n{i}.conf"
    return subprocess.Popen(["ip", "netns", "exec", ns(i), "nginx", "-c", conf,
                             "-g", "daemon off;"], stderr=subprocess.DEVNULL)


def run_scenario(system, fault, holders):
    for i in NODES:
        system.start_node(i)
    deadline = time.time() + 30
    while True:
        held = holders.now()
        if len(held) == 1 and serves(held):
            break
        if time.time() > deadline:
            raise SystemExit(f"{system.name}: no single serving holder within 30 s ({held})")
        time.sleep(0.2)
    time.sleep(2.0)
    old = holders.now().pop()
    client = subprocess.Popen(
        ["ip", "netns", "exec", f"{PREFIX}-cl", "python3", f"{HERE}/vip_client.py", VIP,
         "8080", str(BEFORE + DURING + AFTER), str(RATE), str(TIMEOUT)],
        stdout=subprocess.PIPE, text=True)
    time.sleep(BEFORE)
    initial = holders.now()
    fault_at = time.time()
    if fault == "link-cut":
        lab("cut", old)
    elif fault == "killed":
        pids = system.daemon_pids(old) + system.gateway_pids(old)
        signal_all(pids, signal.SIGKILL)
        system.daemons[old].wait()
        if isinstance(system, Keepalived):
            system.nginx[old].wait()
    elif fault == "gateway-killed":
        signal_all(system.gateway_pids(old), signal.SIGKILL)
        if isinstance(system, Keepalived):
            system.nginx[old].wait()
    else:
        stopped = system.daemon_pids(old)
        signal_all(stopped, signal.SIGSTOP)
    ready_again = ready_watch(old, fault_at, DURING) if fault == "gateway-killed" else None
    time.sleep(DURING)
    restore_at = time.time()
    if fault == "link-cut":
        lab("heal", old)
    elif fault == "killed":
        system.start_node(old)
    elif fault == "gateway-killed":
        if isinstance(system, Keepalived):
            system.nginx[old] = start_nginx(old)
    else:
        signal_all(stopped, signal.SIGCONT)
    requests = json.loads(client.communicate()[0])["requests"]
    end = time.time()
    during = [r for r in requests if fault_at <= r[0] < restore_at]
    after = [r for r in requests if r[0] >= restore_at]
    survivor = [r[0] for r in during if r[1] and r[2] != f"n{old}"]
    failed = [r[0] for r in during if not r[1]]
    none, two, _ = holders.spans(fault_at, end, initial)
    _, _, held_at_restore = holders.spans(fault_at, restore_at, initial)
    _, _, held_end = holders.spans(fault_at, end, initial)
    result = {
        "system": system.name, "fault": fault, "old_holder": old,
        "requests": len(requests),
        "served_by_survivor_after_s": (survivor[0] - fault_at) if survivor else None,
        "failed_during": len(failed),
        "failed_window_s": (failed[-1] - failed[0]) if failed else 0.0,
        "no_holder_s": none, "two_holders_s": two,
        "holder_at_restore": sorted(held_at_restore), "holder_at_end": sorted(held_end),
        "failback_failed": sum(1 for r in after if not r[1]),
        "moved_on_restore": sorted(held_at_restore) != sorted(held_end),
        "gateway_ready_again_s": ready_again[0] if ready_again else None,
    }
    system.stop()
    with holders.lock:
        holders.events.clear()
    time.sleep(0.5)
    return result


def ready_watch(node, since, span):
    """Polls the node's gateway readiness for `span` s from a thread; the returned list gets
    the seconds from `since` to the first ready answer."""
    found = []

    def poll():
        while time.time() < since + span and not found:
            out = subprocess.run(["ip", "netns", "exec", ns(node), "curl", "-s", "-m", "0.2",
                                  "http://127.0.0.1:8081/ready"],
                                 capture_output=True, text=True).stdout
            if out.strip() == "ok" and time.time() < since + span:
                found.append(time.time() - since)
            time.sleep(0.01)

    threading.Thread(target=poll, daemon=True).start()
    return found


def serves(held):
    (i,) = held
    out = subprocess.run(["ip", "netns", "exec", f"{PREFIX}-cl", "curl", "-s", "-m", "1",
                          f"http://{VIP}:8080/"], capture_output=True, text=True).stdout
    return out.strip() == f"n{i}"


def ready_text(fault, values):
    if fault != "gateway-killed":
        return "-"
    if any(v is None for v in values):
        return f"not restarted in {sum(v is None for v in values)} of {len(values)}"
    values = sorted(values)
    return f"{values[len(values) // 2] * 1000:.0f} ms [{values[0] * 1000:.0f}-{values[-1] * 1000:.0f}]"


def table(results):
    """One row per system and fault: median [min-max] over the rounds; worst case for the
    holder spans; failback failures summed over the rounds."""
    rows = ["| system | fault | rounds | VIP serves from a survivor after | failed requests | "
            "no holder (max) | two holders (max) | failback: failed requests | moved back | "
            "gateway ready again |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    groups = {}
    for r in results:
        groups.setdefault((r["system"], r["fault"]), []).append(r)

    def spread(values, fmt):
        values = sorted(values)
        mid = values[len(values) // 2]
        if len(values) == 1:
            return fmt(mid)
        return f"{fmt(mid)} [{fmt(values[0])}-{fmt(values[-1])}]"

    for (system, fault), runs in groups.items():
        took = [r["served_by_survivor_after_s"] for r in runs]
        if all(t is None for t in took):
            took_text = "no move"
        elif any(t is None for t in took):
            took_text = f"moved in {sum(t is not None for t in took)} of {len(took)}"
        else:
            took_text = spread([t * 1000 for t in took], lambda v: f"{v:.0f}") + " ms"
        rows.append(
            f"| {system} | {fault} | {len(runs)} | {took_text} | "
            f"{spread([r['failed_during'] for r in runs], str)} | "
            f"{max(r['no_holder_s'] for r in runs) * 1000:.0f} ms | "
            f"{max(r['two_holders_s'] for r in runs) * 1000:.0f} ms | "
            f"{sum(r['failback_failed'] for r in runs)} | "
            f"{sum(r['moved_on_restore'] for r in runs)} of {len(runs)} | "
            f"{ready_text(fault, [r.get('gateway_ready_again_s') for r in runs])} |")
    return "\n".join(rows)


def make_system(name, binary):
    if name.startswith("meshedge"):
        return Meshedge(binary, name.partition("-")[2] or "100ms")
    return Keepalived(name == "keepalived-fast")


def main():
    global DIR, LAB
    binary, LAB, out = sys.argv[1], sys.argv[2], sys.argv[3]
    systems = (sys.argv[4] if len(sys.argv) > 4 else
               "keepalived-default,keepalived-fast,meshedge").split(",")
    faults = (sys.argv[5] if len(sys.argv) > 5 else "link-cut,killed,hung").split(",")
    rounds = int(sys.argv[6]) if len(sys.argv) > 6 else 3
    DIR = tempfile.mkdtemp(prefix="vip-bench-")
    for i in NODES:
        with open(f"{DIR}/nginx-n{i}.conf", "w") as f:
            f.write(NGINX.format(i=i, dir=DIR))
    lab("up", len(NODES))
    holders = Holders()
    results = []
    try:
        for _ in range(rounds):
            for name in systems:
                for fault in faults:
                    r = run_scenario(make_system(name, binary), fault, holders)
                    print(json.dumps(r), flush=True)
                    results.append(r)
    finally:
        holders.stop()
        lab("down", len(NODES))
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    print(table(results))


if len(sys.argv) == 3 and sys.argv[1] == "--table":
    with open(sys.argv[2]) as f:
        print(table(json.load(f)))
else:
    main()
