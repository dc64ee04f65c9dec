"""Under load, with the webhook and workers as real processes: SIGKILL a worker, restart
Redis losing its data, stop PostgreSQL for a few seconds, shut everything down gracefully.
Afterwards every deposit that got a 202 is credited exactly once, and no 2xx was given
while PostgreSQL was down."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cricalgo_localstack.deposits import DepositLoad
from cricalgo_localstack.workload_processes import WorkloadProcess, wait_for

pytestmark = pytest.mark.slow
USERS = ["u1", "u2", "u3", "u4"]
TOKEN = "resilience-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[WorkloadProcess] = []

    def webhook(self) -> WorkloadProcess:
        process = WorkloadProcess(
            "webhook", {**self.env, "CRICALGO_PORT": str(self.port)}, str(self.logs / "webhook.log")
        ).start()
        self.processes.append(process)
        process.wait_http(f"{self.url}/healthz")
        return process

    def worker(self, name: str) -> WorkloadProcess:
        port = free_port()
        process = WorkloadProcess(
            "worker",
            {**self.env, "CRICALGO_METRICS_PORT": str(port)},
            str(self.logs / f"{name}.log"),
        ).start()
        self.processes.append(process)
        process.wait_http(f"http://127.0.0.1:{port}/metrics")
        return process


@pytest.fixture
def stack(
    database_url: str, redis_server: Any, webhook_secret: str, tmp_path: Path
) -> Iterator[Stack]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "CRICALGO_WEBHOOK_SECRET": webhook_secret,
        "CRICALGO_API_TOKEN": TOKEN,
        "CRICALGO_QUEUE": f"res-{time.monotonic_ns()}",
        "CRICALGO_WORKER_THREADS": "4",
        "CRICALGO_TASK_MIN_BACKOFF_MS": "100",
        "CRICALGO_TASK_MAX_BACKOFF_MS": "1000",
        "CRICALGO_TASK_MAX_RETRIES": "20",
        "CRICALGO_RELAY_AFTER_SECONDS": "3",
        "CRICALGO_RELAY_INTERVAL_SECONDS": "0.5",
        # A killed worker's messages come back one heartbeat timeout after it died.
        "CRICALGO_WORKER_HEARTBEAT_TIMEOUT_MS": "5000",
        "CRICALGO_LOG_LEVEL": "WARNING",
        "DB_POOL_TIMEOUT": "1",
        "DB_POOL_SIZE": "2",
        "DB_MAX_OVERFLOW": "6",
    }
    running = Stack(env, tmp_path)
    try:
        yield running
    finally:
        for process in reversed(running.processes):
            process.stop()


def register_users(url: str) -> None:
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {TOKEN}"}) as http:
        for user in USERS:
            assert http.post("/api/v1/users", json={"user_id": user}).status_code in (200, 201)


def assert_credited_exactly_once(dsn: str, accepted: dict[str, str]) -> None:
    def ledger() -> dict[str, Decimal]:
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT tx_id::text, amount FROM ledger_entries").fetchall()
        return {tx: amount for tx, amount in rows}

    wait_for(lambda: set(accepted) <= set(ledger()), timeout=90, interval=0.5)
    entries = ledger()
    with psycopg.connect(dsn) as conn:
        count, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT tx_id) FROM ledger_entries"
        ).fetchone() or (0, 0)
        balance_total = conn.execute("SELECT coalesce(sum(amount), 0) FROM balances").fetchone()
    assert count == distinct == len(entries)
    assert {tx: entries[tx] for tx in accepted} == {tx: Decimal(a) for tx, a in accepted.items()}
    assert balance_total is not None
    assert balance_total[0] == sum(entries.values())


def test_faults_under_load_lose_nothing_and_credit_once(
    stack: Stack, redis_server: Any, postgres_server: Any, database_url: str, webhook_secret: str
) -> None:
    stack.webhook()
    doomed = stack.worker("worker-1")
    stack.worker("worker-2")
    register_users(stack.url)
    load = DepositLoad(stack.url, webhook_secret, USERS).start()
    try:
        time.sleep(2)
        doomed.signal(signal.SIGKILL)  # mid-batch: its in-flight messages are never acked
        doomed.wait()
        stack.worker("worker-3")
        time.sleep(1.5)
        redis_server.restart()  # every queued message is gone
        time.sleep(1.5)
        postgres_server.stop()
        down_from = time.monotonic()
        time.sleep(3)
        down_until = time.monotonic()
        postgres_server.start()
        time.sleep(3)
    finally:
        load.stop()

    statuses = [status for *_, status, _, _ in load.results]
    assert statuses.count(202) > 50
    during_outage = [
        status for started, ended, status, _, _ in load.results
        if started >= down_from and ended <= down_until
    ]  # fmt: skip
    assert during_outage, "no request ran entirely inside the outage"
    assert not [status for status in during_outage if 200 <= status < 300]
    assert 503 in during_outage
    assert_credited_exactly_once(database_url, load.accepted())


def test_graceful_shutdown_loses_nothing(
    stack: Stack, database_url: str, webhook_secret: str
) -> None:
    # The relay waits an hour here: recovery must come from the shutdown itself.
    stack.env["CRICALGO_RELAY_AFTER_SECONDS"] = "3600"
    webhook = stack.webhook()
    worker = stack.worker("worker-1")
    register_users(stack.url)
    load = DepositLoad(stack.url, webhook_secret, USERS).start()
    time.sleep(2)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    time.sleep(1)
    webhook.signal(signal.SIGTERM)
    assert webhook.wait() == 0
    load.stop()
    accepted = load.accepted()
    assert len(accepted) > 20
    # A new worker picks up whatever the old one had not started; nothing was lost.
    stack.worker("worker-2")
    assert_credited_exactly_once(database_url, accepted)
