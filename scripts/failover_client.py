#!/usr/bin/env python3
"""Failover benchmark client (scripts/bench-failover.sh): a paced HTTP/1.1 keep-alive load
over TLS to one proxy, which injects the fault itself at fixed times and summarises what
the clients saw.

  failover_client.py --port P --rate 500 --conns 20 --duration 14 --fault-at 3 \
      --restore-at 10 --mode kill|stop --pids 1,2 [--restart 'shell command']

Each response body names the upstream instance (a1..c2). Printed: one JSON object with
errors (non-200 or failed exchanges), p99 latency of requests started in the 2 s after the
fault, the time after the fault at which the last slow (> 250 ms) request started (how long
the proxy kept trying the failed zone), and the time after the restore of the first answer
from zone a (failback).
"""
import argparse
import asyncio
import json
import os
import signal
import ssl
import subprocess
import time


async def exchange(reader, writer, host):
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    close = chunked = False
    for line in lines[1:]:
        k, _, v = line.partition(":")
        k, v = k.strip().lower(), v.strip().lower()
        if k == "content-length":
            length = int(v)
        if k == "connection" and v == "close":
            close = True
        if k == "transfer-encoding" and "chunked" in v:
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        body = await reader.readexactly(length) if length else b""
    return status, body.decode("latin-1").strip(), close


async def worker(a, start, interval, results, offset):
    ctx = ssl.create_default_context(cafile=a.ca)
    ctx.check_hostname = True
    conn = None
    next_at = start + offset
    end = start + a.duration
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if next_at > now:
            await asyncio.sleep(next_at - now)
        sent = time.monotonic()
        next_at += interval
        try:
            if conn is None:
                conn = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", a.port, ssl=ctx, server_hostname="edge.test"), 5)
            status, body, close = await asyncio.wait_for(exchange(*conn, "edge.test"), 5)
            if close:
                conn[1].close()
                conn = None
        except Exception:
            status, body = 0, ""
            if conn is not None:
                conn[1].close()
            conn = None
        results.append((sent - start, time.monotonic() - sent, status, body))


async def faults(a, start):
    pids = [int(p) for p in a.pids.split(",") if p]
    await asyncio.sleep(max(0, start + a.fault_at - time.monotonic()))
    for p in pids:
        os.kill(p, signal.SIGKILL if a.mode == "kill" else signal.SIGSTOP)
    await asyncio.sleep(max(0, start + a.restore_at - time.monotonic()))
    if a.mode == "kill":
        subprocess.Popen(a.restart, shell=True)
    else:
        for p in pids:
            os.kill(p, signal.SIGCONT)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--rate", type=float, default=500)
    p.add_argument("--conns", type=int, default=20)
    p.add_argument("--duration", type=float, default=14)
    p.add_argument("--fault-at", type=float, default=3)
    p.add_argument("--restore-at", type=float, default=10)
    p.add_argument("--mode", choices=["kill", "stop"], default="kill")
    p.add_argument("--pids", default="")
    p.add_argument("--restart", default="true")
    a = p.parse_args()
    results = []
    start = time.monotonic() + 0.2
    interval = a.conns / a.rate
    tasks = [worker(a, start, interval, results, i * interval / a.conns) for i in range(a.conns)]
    await asyncio.gather(faults(a, start), *tasks)
    fault, restore = a.fault_at, a.restore_at
    errors = [r for r in results if r[2] != 200]
    after = sorted(r[1] for r in results if fault <= r[0] < fault + 2)
    p99 = after[int(len(after) * 0.99) - 1] if after else None
    slow = [r[0] - fault for r in results if r[0] >= fault and r[1] > 0.25]
    back = [r[0] - restore for r in results if r[0] >= restore and r[2] == 200 and r[3].startswith("a")]
    print(json.dumps({
        "requests": len(results),
        "errors": len(errors),
        "errors_after_fault": len([r for r in errors if r[0] >= fault]),
        "error_statuses": sorted({str(r[2]) for r in errors}),
        "error_times": sorted(round(r[0], 3) for r in errors)[:10],
        "p99_ms_2s_after_fault": round(p99 * 1000, 1) if p99 is not None else None,
        "last_slow_request_s_after_fault": round(max(slow), 2) if slow else 0.0,
        "back_on_zone_a_s_after_restore": round(min(back), 2) if back else None,
        "zone_a_share_before_fault": round(
            len([r for r in results if r[0] < fault and r[3].startswith("a")])
            / max(1, len([r for r in results if r[0] < fault])), 2),
    }))


if __name__ == "__main__":
    asyncio.run(main())
