"""Open-loop load at a fixed rate (a separate process from the server): request i is due at
start + i/rate whatever happened to earlier ones; latency counts from the due time, so a
stalled server cannot hide its queueing (no coordinated omission, as wrk2 measures).

The generator must be much cheaper than the server it measures, on a machine where both
share two cores: requests are pre-encoded bytes written on a fixed set of keep-alive
connections opened before the clock starts, responses are parsed by httptools (C), the
loop is uvloop and the garbage collector is off for the run. A request due while every
connection is busy waits for one (and that wait counts).

Usage: fixed_rate.py URL REQUESTS_JSONL RATE SECONDS [CONNECTIONS] -> prints one JSON line.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import sys
import time
from typing import cast
from urllib.parse import urlsplit

import httptools
import uvloop

PATH = "/api/v1/webhooks/deposit"


def encode_request(host: str, delivery: dict[str, str]) -> bytes:
    body = delivery["body"].encode()
    head = (
        f"POST {PATH} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"webhook-id: {delivery['id']}\r\nwebhook-timestamp: {delivery['ts']}\r\n"
        f"webhook-signature: {delivery['sig']}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.due = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, request: bytes, due: float) -> None:
        assert self.transport is not None
        self.due = due
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.load.completed(self, self.parser.get_status_code(), self.due)

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.lost(self)


class Load:
    def __init__(self, requests: list[bytes], rate: float) -> None:
        self.requests = requests
        self.rate = rate
        self.free: collections.deque[Connection] = collections.deque()
        self.backlog: collections.deque[tuple[bytes, float]] = collections.deque()
        self.busy: set[Connection] = set()
        self.latencies: list[float] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self.finished = asyncio.get_running_loop().create_future()

    def dispatch(self, request: bytes, due: float) -> None:
        if self.free:
            connection = self.free.popleft()
            self.busy.add(connection)
            connection.send(request, due)
        else:
            self.backlog.append((request, due))

    def completed(self, connection: Connection, status: int, due: float) -> None:
        self.latencies.append(time.perf_counter() - due)
        self.statuses[status] += 1
        if self.backlog:
            connection.send(*self.backlog.popleft())
        else:
            self.busy.discard(connection)
            self.free.append(connection)
        self._check_done()

    def lost(self, connection: Connection) -> None:
        if connection in self.busy:
            self.busy.discard(connection)
            self.latencies.append(time.perf_counter() - connection.due)
            self.statuses[0] += 1
        if connection in self.free:
            self.free.remove(connection)
        self._check_done()

    def _check_done(self) -> None:
        if len(self.latencies) == len(self.requests) and not self.finished.done():
            self.finished.set_result(None)


async def run(
    url: str, deliveries: list[dict[str, str]], rate: float, seconds: float, connections: int
) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    total = min(len(deliveries), int(rate * seconds))
    requests = [encode_request(f"{host}:{port}", d) for d in deliveries[:total]]
    loop = asyncio.get_running_loop()
    load = Load(requests, rate)
    for _ in range(connections):
        _, protocol = await loop.create_connection(lambda: Connection(load), host, port)
        load.free.append(protocol)

    gc.collect()
    gc.disable()
    start = time.perf_counter() + 0.1
    i = 0
    while i < total:
        now = time.perf_counter()
        # Send everything already due, then sleep until the next one is.
        while i < total and start + i / rate <= now:
            load.dispatch(requests[i], start + i / rate)
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
    await asyncio.wait_for(load.finished, timeout=120)
    elapsed = time.perf_counter() - start
    gc.enable()
    for connection in list(load.free) + list(load.busy):
        if connection.transport is not None:
            connection.transport.close()

    latencies = sorted(load.latencies)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {
        "requests": total,
        "rps": total / elapsed,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": latencies[-1] * 1000,
        "non_202": sum(n for status, n in load.statuses.items() if status != 202),
    }


def main() -> None:
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    url, path, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    connections = int(sys.argv[5]) if len(sys.argv) == 6 else 64
    with open(path) as f:
        loaded = [json.loads(line) for line in f]
    print(json.dumps(uvloop.run(run(url, loaded, rate, seconds, connections))))


if __name__ == "__main__":
    main()
