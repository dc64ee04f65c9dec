"""The credit actor against real PostgreSQL and Redis: exactly once, parking, dead letters."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import httpx
import psycopg
import pytest
import redis
from cricalgo_localstack.deposits import deposit_body, signed_headers
from cricalgo_localstack.workload_processes import wait_for
from cricalgo_workload.broker import enqueue_credit
from cricalgo_workload.settings import Settings
from cricalgo_workload.worker import DepositWorker
from prometheus_client import generate_latest


def status_of(dsn: str, tx_id: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT status FROM deposit_inbox WHERE tx_id = %s", (tx_id,)).fetchone()
        assert row is not None
        return str(row[0])


def ledger(dsn: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT tx_id::text, user_id, amount::text FROM ledger_entries ORDER BY entry_id"
        ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]


def register(client: httpx.Client, auth: dict[str, str], user_id: str) -> Any:
    return client.post("/api/v1/users", json={"user_id": user_id}, headers=auth)


def test_deposit_is_credited_once_even_when_delivered_again(
    client: httpx.Client, auth: dict[str, str], post_deposit: Any, worker: DepositWorker,
    settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="cricalgo.workload")
    assert register(client, auth, "alice").status_code == 201
    tx_id = post_deposit(deposit_body(user_id="alice", amount="10.25")).json()["tx_id"]
    wait_for(lambda: status_of(settings.database_url, tx_id) == "done")

    # Redelivery: Dramatiq delivers at least once; the relay may send it again too.
    for _ in range(3):
        enqueue_credit(worker.broker, settings, tx_id)
    assert worker.credit([tx_id]) == ["already_done"]
    worker.broker.join(settings.queue_name, timeout=10_000)
    # The redeliveries are counted apart from the credit.
    metrics = wait_for(
        lambda: (
            (text := generate_latest(worker.metrics.registry).decode()).count(
                'outcome="already_done"'
            )
            and text
        )
    )
    credited = [line for line in metrics.splitlines() if 'outcome="credited"' in line]
    assert [line.rsplit(" ", 1)[1] for line in credited if "_total" in line] == ["1.0"]

    assert ledger(settings.database_url) == [(tx_id, "alice", "10.25000000")]
    user = client.get("/api/v1/users/alice", headers=auth).json()
    assert user["balances"] == {"EUR": "10.25"}
    transaction = client.get(f"/api/v1/transactions/{tx_id}", headers=auth).json()
    assert transaction["status"] == "done"
    assert transaction["ledger_entry_id"] is not None
    # The outcomes reach the middleware without a return value Dramatiq would warn about.
    assert not [r for r in caplog.records if "returned a value" in r.getMessage()]
    timing = {r.getMessage(): r for r in caplog.records if getattr(r, "tx_id", None) == tx_id}
    assert {"deposit_enqueued", "deposit_task_started", "deposit_task_completed"} <= set(timing)
    assert timing["deposit_enqueued"].since_received_ms >= 0  # type: ignore[attr-defined]
    assert timing["deposit_task_completed"].duration_ms >= 0  # type: ignore[attr-defined]


def test_unknown_user_is_parked_then_credited_on_registration(
    client: httpx.Client, auth: dict[str, str], post_deposit: Any, worker: DepositWorker,
    settings: Settings,
) -> None:  # fmt: skip
    tx_ids = [
        post_deposit(deposit_body(user_id="carol", amount=amount)).json()["tx_id"]
        for amount in ("5", "7.5")
    ]
    for tx_id in tx_ids:
        wait_for(lambda tx_id=tx_id: status_of(settings.database_url, tx_id) == "unmatched")
    assert ledger(settings.database_url) == []
    metrics = generate_latest(worker.metrics.registry).decode()
    assert 'outcome="parked"' in metrics

    response = register(client, auth, "carol")
    assert response.status_code == 201
    assert response.json()["released_deposits"] == 2
    for tx_id in tx_ids:
        wait_for(lambda tx_id=tx_id: status_of(settings.database_url, tx_id) == "done")
    assert client.get("/api/v1/users/carol", headers=auth).json()["balances"] == {"EUR": "12.5"}
    # Registering again is harmless.
    assert register(client, auth, "carol").json() == {
        "ok": True, "user_id": "carol", "created": False, "released_deposits": 0,
    }  # fmt: skip


def test_exhausted_retries_dead_letter_the_message(
    settings: Settings, client: httpx.Client, auth: dict[str, str], post_deposit: Any,
    redis_server: Any,
) -> None:  # fmt: skip
    # A real failure inside PostgreSQL: crediting "slowpoke" sleeps past the statement
    # timeout, which is half the actor's time limit, so PostgreSQL cancels it first.
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN IF NEW.user_id = 'slowpoke' THEN PERFORM pg_sleep(5); END IF;"
            " RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER stall BEFORE INSERT ON ledger_entries"
            " FOR EACH ROW EXECUTE FUNCTION stall()"
        )
    worker_settings = replace(settings, task_time_limit_ms=1000, task_max_retries=2)
    assert worker_settings.statement_timeout_ms < worker_settings.task_time_limit_ms
    worker = DepositWorker(worker_settings)
    worker.start(serve_metrics=False)
    try:
        assert register(client, auth, "slowpoke").status_code == 201
        tx_id = post_deposit(deposit_body(user_id="slowpoke")).json()["tx_id"]
        wait_for(lambda: status_of(settings.database_url, tx_id) == "dead", timeout=30)
        # The row turns dead inside the last attempt; its middleware counts the outcome
        # once that attempt returns, a moment later.
        wait_for(
            lambda: 'outcome="dead_letter"' in generate_latest(worker.metrics.registry).decode(),
            timeout=30,
        )
        metrics = generate_latest(worker.metrics.registry).decode()
    finally:
        worker.stop(timeout_ms=5000)

    assert "cricalgo_dead_letters_total{" in metrics
    assert 'outcome="retry"' in metrics
    assert 'outcome="dead_letter"' in metrics
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT attempts, last_error FROM deposit_inbox WHERE tx_id = %s", (tx_id,)
        ).fetchone()
    assert row is not None
    assert "statement timeout" in row[1]
    with redis.Redis.from_url(redis_server.url) as client:
        dead = client.zcard(f"{settings.redis_namespace}:{settings.queue_name}.XQ")
    # One dead letter per message; the relay may have sent the row's message more than once.
    assert dead >= 1
    assert ledger(settings.database_url) == []


async def test_hundred_concurrent_deliveries_of_one_event_credit_once(
    live_app: Any, webhook_secret: str, settings: Settings, worker: DepositWorker,
) -> None:  # fmt: skip
    body = deposit_body(user_id="dave", amount="100")
    headers = signed_headers(webhook_secret, body, webhook_id="msg_storm")
    async with httpx.AsyncClient(base_url=live_app.url, timeout=30) as http:
        await http.post(
            "/api/v1/users",
            json={"user_id": "dave"},
            headers={"authorization": f"Bearer {settings.api_token}"},
        )
        responses = await asyncio.gather(
            *[http.post("/api/v1/webhooks/deposit", content=body, headers=headers)
              for _ in range(100)]
        )  # fmt: skip
    assert {r.status_code for r in responses} == {202}
    tx_ids = {r.json()["tx_id"] for r in responses}
    assert len(tx_ids) == 1
    tx_id = tx_ids.pop()
    await asyncio.to_thread(wait_for, lambda: status_of(settings.database_url, tx_id) == "done")
    assert ledger(settings.database_url) == [(tx_id, "dave", "100.00000000")]
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT amount::text FROM balances").fetchall() == [("100.00000000",)]
