#!/usr/bin/env python3
"""A minimal HTTP/3 client on aioquic (a QUIC/HTTP/3 stack nobody in this repo wrote),
used by tests/edge_http3.rs.

Sends N GET requests over one QUIC connection and prints one JSON line per response:
{"status": 200, "headers": {...}, "body": "..."}.

usage: h3_client.py --connect 127.0.0.1:PORT --server-name api.example.org \
                    --cacert bundle.pem --path /pay/x [-n 3] [--header name:value] \
                    [--hold SECONDS]

--hold keeps the connection open that long after the last response. A connection the
server refuses or closes during the handshake prints {"error": "..."} and exits 3.
"""
import argparse
import asyncio
import json
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.pending = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        for ev in self.h3.handle_event(event):
            slot = self.pending.get(getattr(ev, "stream_id", None))
            if slot is None:
                continue
            if isinstance(ev, HeadersReceived):
                for k, v in ev.headers:
                    slot["headers"][k.decode()] = v.decode()
            elif isinstance(ev, DataReceived):
                slot["body"] += ev.data
            if getattr(ev, "stream_ended", False):
                slot["done"].set_result(None)

    async def get(self, authority, path, headers):
        stream_id = self._quic.get_next_available_stream_id()
        slot = {"headers": {}, "body": b"", "done": self._loop.create_future()}
        self.pending[stream_id] = slot
        self.h3.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
            ]
            + [(k.encode(), v.encode()) for k, v in headers],
            end_stream=True,
        )
        self.transmit()
        await asyncio.wait_for(slot["done"], 15)
        return {
            "status": int(slot["headers"].get(":status", "0")),
            "headers": {k: v for k, v in slot["headers"].items() if not k.startswith(":")},
            "body": slot["body"].decode(errors="replace"),
        }


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--connect", required=True)
    p.add_argument("--server-name", required=True)
    p.add_argument("--cacert", required=True)
    p.add_argument("--path", default="/")
    p.add_argument("-n", type=int, default=1)
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--hold", type=float, default=0.0)
    a = p.parse_args()
    host, port = a.connect.rsplit(":", 1)
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=a.server_name)
    cfg.load_verify_locations(a.cacert)
    headers = [tuple(h.split(":", 1)) for h in a.header]
    authority = f"{a.server_name}:{port}"
    try:
        async with connect(host, int(port), configuration=cfg, create_protocol=Client) as client:
            for _ in range(a.n):
                print(json.dumps(await client.get(authority, a.path, headers)), flush=True)
            await asyncio.sleep(a.hold)
    except ConnectionError as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
