"""`/readyz` is about the pod itself (started, pool open, schema current), never about a
dependency's outage: with Redis down the app stays ready and accepts deposits; with
PostgreSQL down it stays ready and answers 503 + Retry-After itself."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import httpx
import psycopg
from cricalgo_localstack.workload_processes import LiveServer, wait_for
from cricalgo_workload.app import create_app
from cricalgo_workload.migrations import load_migrations, migrate
from cricalgo_workload.settings import Settings


def ready(client: httpx.Client) -> httpx.Response:
    response = wait_for(lambda: (r := client.get("/readyz")).status_code == 200 and r, timeout=20)
    assert isinstance(response, httpx.Response)
    return response


def test_ready_reports_the_pod_itself(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"ok": True}
    assert ready(client).json() == {
        "ok": True,
        "checks": {"started": "ok", "pool": "ok", "schema": "ok"},
    }


def test_redis_outage_keeps_the_pod_ready_and_accepting(
    client: httpx.Client, post_deposit: Any, redis_server: Any
) -> None:
    ready(client)
    redis_server.stop()
    try:
        readyz = client.get("/readyz")
        deposit = post_deposit()
    finally:
        redis_server.start()
    assert readyz.status_code == 200, readyz.text
    assert deposit.status_code == 202, deposit.text


def test_postgres_outage_keeps_the_pod_ready_and_it_answers_503_itself(
    client: httpx.Client, post_deposit: Any, postgres_server: Any
) -> None:
    ready(client)
    postgres_server.stop()
    try:
        readyz = client.get("/readyz")
        deposit = post_deposit()
    finally:
        postgres_server.start()
    assert readyz.status_code == 200, readyz.text
    assert deposit.status_code == 503
    assert deposit.headers["retry-after"] == "5"
    assert deposit.json()["error"] == "unavailable"


def test_schema_behind_the_code_is_not_ready_until_migrated(
    settings: Settings, postgres_server: Any
) -> None:
    dsn = postgres_server.create_database(f"wl_{uuid.uuid4().hex[:12]}")
    migrate(dsn)
    newest = max(m.version for m in load_migrations())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = %s", (newest,))
    server = LiveServer(create_app(replace(settings, database_url=dsn)))
    server.start()
    try:
        with httpx.Client(base_url=server.url) as http:
            behind = wait_for(
                lambda: "needs" in (r := http.get("/readyz")).json()["checks"]["schema"] and r
            )
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, 'again')",
                    (newest,),
                )
            now_ready = ready(http)
    finally:
        server.stop()
    assert behind.status_code == 503
    assert f"this code needs {newest}" in behind.json()["checks"]["schema"]
    assert now_ready.json()["checks"]["schema"] == "ok"
