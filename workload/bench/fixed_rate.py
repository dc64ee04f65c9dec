"""Open-loop load at a fixed rate (a separate process from the server): request i is due at
start + i/rate whatever happened to earlier ones; latency counts from the due time, so a
stalled server cannot hide its queueing (no coordinated omission).

Usage: fixed_rate.py URL REQUESTS_JSONL RATE SECONDS  -> prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp


async def run(
    url: str, deliveries: list[dict[str, str]], rate: float, seconds: float
) -> dict[str, float]:
    total = min(len(deliveries), int(rate * seconds))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(url, connector=connector) as session:

        async def send(due: float, delivery: dict[str, str]) -> None:
            headers = {
                "webhook-id": delivery["id"],
                "webhook-timestamp": delivery["ts"],
                "webhook-signature": delivery["sig"],
                "content-type": "application/json",
            }
            try:
                async with session.post(
                    "/api/v1/webhooks/deposit", data=delivery["body"].encode(), headers=headers
                ) as response:
                    await response.read()
                    status = response.status
            except aiohttp.ClientError:
                status = 0
            latencies.append(time.perf_counter() - due)
            statuses[status] = statuses.get(status, 0) + 1

        start = time.perf_counter() + 0.2
        tasks = []
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(due, deliveries[i])))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {
        "requests": total,
        "rps": total / elapsed,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "non_202": sum(n for s, n in statuses.items() if s != 202),
    }


if __name__ == "__main__":
    url, path, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    with open(path) as f:
        loaded = [json.loads(line) for line in f]
    print(json.dumps(asyncio.run(run(url, loaded, rate, seconds))))
