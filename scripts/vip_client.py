"""Open-loop HTTP client for the VIP benchmark (scripts/vip_bench.py).

Starts one request every 1/RATE s on a new connection, each with TIMEOUT s for connect +
answer, for DURATION s, whatever earlier requests are doing (so an outage costs requests at
the offered rate, as in the reference keepalived measurement). Prints one JSON document:
{"requests": [[start_unix_time, ok, body], ...]}.

    python3 vip_client.py ADDRESS PORT DURATION RATE TIMEOUT
"""

import asyncio
import json
import sys
import time


async def one(address, port, timeout, results):
    start = time.time()
    try:
        async def exchange():
            reader, writer = await asyncio.open_connection(address, port)
            writer.write(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            data = await reader.read(512)
            writer.close()
            return data

        data = await asyncio.wait_for(exchange(), timeout)
        head, _, body = data.partition(b"\r\n\r\n")
        ok = head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200")
        results.append([start, ok, body.decode(errors="replace").strip()])
    except (OSError, asyncio.TimeoutError):
        results.append([start, False, ""])


async def main():
    address, port = sys.argv[1], int(sys.argv[2])
    duration, rate, timeout = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    results, tasks = [], []
    begin = time.time()
    n = 0
    while True:
        at = begin + n / rate
        if at - begin >= duration:
            break
        await asyncio.sleep(max(0.0, at - time.time()))
        tasks.append(asyncio.create_task(one(address, port, timeout, results)))
        n += 1
    await asyncio.gather(*tasks)
    results.sort()
    print(json.dumps({"requests": results}))


asyncio.run(main())
