"""Fixtures for the workload tests: a migrated database per test on the real PostgreSQL,
a queue of its own per test on the real Redis, and signed deliveries."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from cricalgo_localstack.deposits import deposit_body, new_secret, signed_headers
from cricalgo_localstack.workload_processes import LiveServer
from cricalgo_workload.app import create_app
from cricalgo_workload.migrations import migrate
from cricalgo_workload.settings import Settings
from cricalgo_workload.worker import DepositWorker

API_TOKEN = "test-api-token"
WEBHOOK_PATH = "/api/v1/webhooks/deposit"


@pytest.fixture
def webhook_secret() -> str:
    return new_secret()


@pytest.fixture
def database_url(postgres_server: Any) -> str:
    dsn: str = postgres_server.create_database(f"wl_{uuid.uuid4().hex[:12]}")
    migrate(dsn)
    return dsn


@pytest.fixture
def settings(database_url: str, redis_server: Any, webhook_secret: str) -> Settings:
    return replace(
        Settings(),
        database_url=database_url,
        redis_url=redis_server.url,
        webhook_secrets=(webhook_secret,),
        api_token=API_TOKEN,
        queue_name=f"deposits-{uuid.uuid4().hex[:8]}",
        db_pool_size=2,
        db_max_overflow=8,
        task_min_backoff_ms=50,
        task_max_backoff_ms=200,
        relay_after_seconds=1.0,
        relay_interval_seconds=0.2,
        stats_interval_seconds=0.2,
        worker_threads=4,
        track="canary",
        version="v-test",
    )


@pytest.fixture
def live_app(settings: Settings) -> Iterator[LiveServer]:
    server = LiveServer(create_app(settings)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(live_app: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_app.url, timeout=30) as http:
        yield http


@pytest.fixture
def auth() -> dict[str, str]:
    return {"authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def post_deposit(client: httpx.Client, webhook_secret: str) -> Callable[..., Any]:
    def post(body: bytes | None = None, webhook_id: str | None = None) -> Any:
        body = deposit_body() if body is None else body
        return client.post(
            WEBHOOK_PATH, content=body, headers=signed_headers(webhook_secret, body, webhook_id)
        )

    return post


@pytest.fixture
def worker(settings: Settings) -> Iterator[DepositWorker]:
    running = DepositWorker(settings)
    running.start(serve_metrics=False)
    try:
        yield running
    finally:
        running.stop(timeout_ms=5000)
