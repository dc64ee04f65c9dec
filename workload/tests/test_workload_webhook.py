"""The deposit webhook against real PostgreSQL and Redis: durable before 202, duplicates,
PostgreSQL or Redis away."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from cricalgo_localstack.deposits import deposit_body, signed_headers
from cricalgo_localstack.workload_processes import wait_for
from cricalgo_workload.broker import queue_key
from cricalgo_workload.settings import Settings


def inbox_rows(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT tx_id::text, event_id, user_id, amount::text, currency, status"
            " FROM deposit_inbox ORDER BY received_at"
        ).fetchall()


def test_accepted_deposit_is_durable_and_enqueued(
    post_deposit: Any, settings: Settings, redis_server: Any
) -> None:
    import redis

    response = post_deposit(deposit_body(user_id="bob", amount="12.34", currency="USD"))

    assert response.status_code == 202
    body = response.json()
    assert body["ok"] is True
    rows = inbox_rows(settings.database_url)
    assert rows == [(body["tx_id"], rows[0][1], "bob", "12.34000000", "USD", "pending")]
    with redis.Redis.from_url(redis_server.url) as client:
        # The enqueue runs right after the response; the message lands in the queue.
        assert wait_for(lambda: client.llen(queue_key(settings)) == 1)


def test_deposit_streamed_in_chunks_is_accepted_whole(
    client: httpx.Client, webhook_secret: str, settings: Settings
) -> None:
    body = deposit_body(user_id="carol", amount="7.50")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the body arrives in pieces
        for start in range(0, len(body), 16):
            yield body[start : start + 16]

    response = client.post(
        "/api/v1/webhooks/deposit", content=chunks(), headers=signed_headers(webhook_secret, body)
    )

    assert response.status_code == 202
    assert response.headers["content-type"] == "application/json"
    tx_id = response.json()["tx_id"]
    assert [(row[0], row[2], row[3]) for row in inbox_rows(settings.database_url)] == [
        (tx_id, "carol", "7.50000000")
    ]


def test_duplicate_delivery_answers_the_same_tx_id(post_deposit: Any, settings: Settings) -> None:
    body = deposit_body()
    first = post_deposit(body, webhook_id="msg_same")
    second = post_deposit(body, webhook_id="msg_same")

    assert first.status_code == second.status_code == 202
    assert first.json()["tx_id"] == second.json()["tx_id"]
    assert len(inbox_rows(settings.database_url)) == 1


def test_postgres_down_answers_503_never_2xx(
    post_deposit: Any, settings: Settings, postgres_server: Any
) -> None:
    assert post_deposit().status_code == 202
    postgres_server.stop()
    try:
        responses = [post_deposit() for _ in range(3)]
    finally:
        postgres_server.start()

    assert [r.status_code for r in responses] == [503, 503, 503]
    assert all(r.headers["retry-after"] == "5" for r in responses)
    assert all(r.json()["error"] == "unavailable" for r in responses)
    # The pool recovers once PostgreSQL is back, without restarting the app.
    assert wait_for(lambda: post_deposit().status_code == 202, timeout=30, interval=0.5)
    assert len(inbox_rows(settings.database_url)) == 2


@pytest.mark.slow
def test_redis_down_still_accepts_and_the_relay_delivers(
    post_deposit: Any, settings: Settings, redis_server: Any, worker: Any, client: Any, auth: Any
) -> None:
    assert client.post("/api/v1/users", json={"user_id": "alice"}, headers=auth).status_code == 201
    redis_server.stop()
    try:
        responses = [post_deposit(deposit_body(user_id="alice", amount="1")) for _ in range(3)]
    finally:
        redis_server.start()

    assert [r.status_code for r in responses] == [202, 202, 202]
    assert {row[5] for row in inbox_rows(settings.database_url)} == {"pending"}
    # Nothing reached Redis; the worker's relay finds the rows and they are credited.
    wait_for(lambda: {row[5] for row in inbox_rows(settings.database_url)} == {"done"}, timeout=30)
    user = client.get("/api/v1/users/alice", headers=auth).json()
    assert user["balances"] == {"EUR": "3"}


async def test_group_insert_handles_duplicates_inside_and_across_groups(database_url: str) -> None:
    from cricalgo_workload.deposit_event import parse_deposit
    from cricalgo_workload.inbox import InboxItem, record_deposits

    def item(event_id: str) -> InboxItem:
        body = deposit_body()
        return InboxItem("prov", event_id, parse_deposit(body), body)

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        first = await record_deposits(conn, [item("e1"), item("e2"), item("e1")])
        again = await record_deposits(conn, [item("e2"), item("e3")])

    assert [r.duplicate for r in first] == [False, False, True]
    assert first[2].tx_id == first[0].tx_id
    assert again[0].tx_id == first[1].tx_id
    assert [r.duplicate for r in again] == [True, False]
    assert len(inbox_rows(database_url)) == 3


async def test_group_insert_keeps_amounts_and_raw_bodies_exactly(database_url: str) -> None:
    from cricalgo_workload.deposit_event import parse_deposit
    from cricalgo_workload.inbox import InboxItem, record_deposits

    # The smallest and largest amounts the ledger holds, and a body that is not UTF-8
    # (JSON in UTF-16 is valid input): the group travels as JSON, the body as base64.
    bodies = [
        deposit_body(amount="0.00000001"),
        deposit_body(amount="999999999999.99999999"),
        deposit_body(amount="12.5").decode().encode("utf-16"),
    ]
    items = [InboxItem("prov", f"e{i}", parse_deposit(b), b) for i, b in enumerate(bodies)]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        recorded = await record_deposits(conn, items)

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT amount::text, payload FROM deposit_inbox WHERE tx_id = ANY(%s::uuid[])"
            " ORDER BY event_id",
            ([r.tx_id for r in recorded],),
        ).fetchall()
    assert rows == [
        ("0.00000001", bodies[0]),
        ("999999999999.99999999", bodies[1]),
        ("12.50000000", bodies[2]),
    ]


async def test_batched_enqueue_is_consumed_by_a_dramatiq_consumer(
    settings: Settings, redis_server: Any
) -> None:
    import redis.asyncio as aioredis
    from cricalgo_workload.broker import (
        CREDIT_ACTOR,
        AsyncCreditSender,
        close_broker,
        create_broker,
    )

    tx_ids = [f"tx-{i}" for i in range(5)]
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        sender = AsyncCreditSender(client, settings)
        await sender.send(tx_ids[:3])
        # A restarted Redis has forgotten the script: it is loaded again on the way.
        await client.script_flush()
        await sender.send(tx_ids[3:])
    finally:
        await client.aclose()

    broker = create_broker(settings)
    consumer = broker.consume(settings.queue_name, prefetch=10, timeout=500)
    received = []
    try:
        for message in consumer:
            if message is None:
                break
            received.append((message.actor_name, message.args))
            consumer.ack(message)
    finally:
        consumer.close()
        close_broker(broker)
    # One message per send, carrying its deposits.
    assert sorted(received) == [(CREDIT_ACTOR, (tx_ids[:3],)), (CREDIT_ACTOR, (tx_ids[3:],))]
