"""Load test of the deposit webhook with the k6 script's requests and thresholds.

Each virtual user sends signed deposit webhooks (and every tenth iteration a /healthz)
in a loop for the duration; the summary reports latency percentiles per endpoint, the
error rate and deposits accepted, then checks p95 < 2 s, p99 < 5 s and errors < 0.5 %.
Exits 1 when a threshold is breached.

    python e2e/load/webhook_load.py --base-url http://127.0.0.1:8000 --secret whsec_...
    python e2e/load/webhook_load.py --local      # start Redis, PostgreSQL, webhook and worker here
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cricalgo_workload.signatures import sign

THRESHOLDS = {"p95_ms": 2000.0, "p99_ms": 5000.0, "error_rate": 0.005}


@dataclass
class Results:
    webhook_ms: list[float] = field(default_factory=list)
    health_ms: list[float] = field(default_factory=list)
    webhook_errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def webhook_total(self) -> int:
        return len(self.webhook_ms)

    @property
    def error_rate(self) -> float:
        return self.webhook_errors / self.webhook_total if self.webhook_total else 1.0


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


async def _virtual_user(
    client: httpx.AsyncClient, secret: str, users: int, deadline: float, results: Results
) -> None:
    iteration = 0
    while time.monotonic() < deadline:
        body = json.dumps(
            {
                "user_id": f"load-{random.randrange(users)}",
                "amount": f"{random.uniform(1, 100):.2f}",
                "currency": "EUR",
                "provider_reference": f"load-{uuid.uuid4().hex[:12]}",
            }
        ).encode()
        webhook_id = f"msg_load_{uuid.uuid4().hex}"
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, webhook_id, timestamp, body),
        }
        started = time.perf_counter()
        try:
            response = await client.post("/api/v1/webhooks/deposit", content=body, headers=headers)
            status = response.status_code
            ok = status == 202 and bool(response.json().get("tx_id"))
        except (httpx.HTTPError, ValueError):
            status, ok = 0, False
        results.webhook_ms.append((time.perf_counter() - started) * 1000)
        results.statuses[status] = results.statuses.get(status, 0) + 1
        results.webhook_errors += not ok
        if iteration % 10 == 0:
            started = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                await client.get("/healthz")
            results.health_ms.append((time.perf_counter() - started) * 1000)
        iteration += 1


async def run_load(
    base_url: str, secret: str, vus: int, duration: float, users: int = 50
) -> tuple[Results, float]:
    """Run `vus` virtual users for `duration` seconds; return the results and elapsed time."""
    results = Results()
    limits = httpx.Limits(max_connections=vus, max_keepalive_connections=vus)
    async with httpx.AsyncClient(base_url=base_url, timeout=10, limits=limits) as client:
        started = time.monotonic()
        deadline = started + duration
        await asyncio.gather(
            *(_virtual_user(client, secret, users, deadline, results) for _ in range(vus))
        )
        return results, time.monotonic() - started


def summarize(results: Results, elapsed: float) -> tuple[str, bool]:
    """A k6-style summary and whether every threshold held."""

    def trend(name: str, values: list[float]) -> str:
        if not values:
            return f"  {name:<18} no samples"
        stats = {
            "avg": statistics.fmean(values),
            "min": min(values),
            "med": percentile(values, 50),
            "p(90)": percentile(values, 90),
            "p(95)": percentile(values, 95),
            "p(99)": percentile(values, 99),
            "max": max(values),
        }
        return f"  {name:<18} " + " ".join(f"{k}={v:.1f}ms" for k, v in stats.items())

    p95 = percentile(results.webhook_ms, 95)
    p99 = percentile(results.webhook_ms, 99)
    checks = [
        ("webhook_duration p(95) < 2000ms", p95 < THRESHOLDS["p95_ms"], f"{p95:.1f}ms"),
        ("webhook_duration p(99) < 5000ms", p99 < THRESHOLDS["p99_ms"], f"{p99:.1f}ms"),
        (
            "webhook_errors rate < 0.5%",
            results.error_rate < THRESHOLDS["error_rate"],
            f"{results.error_rate:.3%}",
        ),
    ]
    lines = [
        f"  duration           {elapsed:.1f}s",
        f"  webhook requests   {results.webhook_total} ({results.webhook_total / elapsed:.1f}/s)",
        f"  deposits accepted  {results.webhook_total - results.webhook_errors}",
        f"  status codes       {dict(sorted(results.statuses.items()))}",
        trend("webhook_duration", results.webhook_ms),
        trend("health_duration", results.health_ms),
        "  thresholds:",
        *(f"    {'✓' if ok else '✗'} {name}: {value}" for name, ok, value in checks),
    ]
    return "\n".join(lines), all(ok for _, ok, _ in checks)


@contextlib.contextmanager
def local_workload(worker_processes: int = 1) -> Iterator[tuple[str, str]]:
    """Redis, PostgreSQL, the webhook and workers as local processes, for `--local`."""
    from cricalgo_localstack.deposits import new_secret
    from cricalgo_localstack.processes import free_port
    from cricalgo_localstack.services import PostgresServer, RedisServer, new_work_dir
    from cricalgo_localstack.workload_processes import WorkloadProcess

    redis, postgres = RedisServer(new_work_dir("redis")), PostgresServer(new_work_dir("postgres"))
    processes: list[WorkloadProcess] = []
    logs = Path(tempfile.mkdtemp(prefix="cricalgo-load-"))
    try:
        redis.start()
        postgres.start()
        port, secret = free_port(), new_secret()
        env = {
            "DATABASE_URL": postgres.create_database("load"),
            "REDIS_URL": redis.url,
            "CRICALGO_WEBHOOK_SECRET": secret,
            "CRICALGO_PORT": str(port),
            "CRICALGO_LOG_LEVEL": "WARNING",
        }
        if WorkloadProcess("migrate", env, str(logs / "migrate.log")).start().wait() != 0:
            raise RuntimeError(f"migrations failed; see {logs / 'migrate.log'}")
        webhook = WorkloadProcess("webhook", env, str(logs / "webhook.log")).start()
        processes.append(webhook)
        for index in range(worker_processes):
            worker_env = {**env, "CRICALGO_METRICS_PORT": str(free_port())}
            processes.append(
                WorkloadProcess("worker", worker_env, str(logs / f"worker-{index}.log")).start()
            )
        webhook.wait_http(f"http://127.0.0.1:{port}/healthz")
        print(f"local workload on http://127.0.0.1:{port} (logs in {logs})", flush=True)
        yield f"http://127.0.0.1:{port}", secret
    finally:
        for process in processes:
            process.stop()
        postgres.remove_data()
        redis.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--secret", help="the app's whsec_ webhook secret")
    parser.add_argument("--local", action="store_true", help="start a workload here to test")
    parser.add_argument("--vus", type=int, default=20, help="virtual users (default 20)")
    parser.add_argument("--duration", type=float, default=60, help="seconds (default 60)")
    parser.add_argument("--users", type=int, default=50, help="distinct user ids in deposits")
    args = parser.parse_args(argv)
    if not args.local and not args.secret:
        parser.error("--secret is required unless --local starts a workload")

    def run(base_url: str, secret: str) -> int:
        print(f"load: {args.vus} virtual users for {args.duration:.0f}s against {base_url}")
        results, elapsed = asyncio.run(
            run_load(base_url, secret, args.vus, args.duration, args.users)
        )
        summary, passed = summarize(results, elapsed)
        print(summary)
        return 0 if passed else 1

    if args.local:
        with local_workload() as (base_url, secret):
            return run(base_url, secret)
    return run(args.base_url, args.secret)


if __name__ == "__main__":
    sys.exit(main())
