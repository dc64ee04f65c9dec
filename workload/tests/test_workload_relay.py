"""The relay and the worker's queues against real Redis and PostgreSQL: a backlog is never
sent twice, a lost message is sent again, every queue of `CRICALGO_QUEUES` is consumed, and
messages of many deposits, redelivered, credit each once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import redis
from cricalgo_localstack.workload_processes import wait_for
from cricalgo_workload.broker import close_broker
from cricalgo_workload.settings import Settings
from cricalgo_workload.worker import DepositWorker

from .test_workload_ledger import add_deposit, add_user, balances, ledger, statuses


@pytest.fixture
def idle_worker(settings: Settings) -> Iterator[DepositWorker]:
    """A worker whose relay is driven by the test and whose actor threads never start."""
    worker = DepositWorker(replace(settings, relay_after_seconds=0.1))
    worker.pool.open(wait=True)
    try:
        yield worker
    finally:
        worker.pool.close()
        close_broker(worker.broker)


def queue_length(redis_url: str, settings: Settings, queue: str | None = None) -> int:
    with redis.Redis.from_url(redis_url) as client:
        return int(client.llen(f"{settings.redis_namespace}:{queue or settings.queue_name}"))


def test_relay_never_sends_again_a_message_still_in_the_queue(
    idle_worker: DepositWorker, settings: Settings, redis_server: Any
) -> None:
    add_user(settings.database_url, "alice")
    tx_ids = [add_deposit(settings.database_url, "alice", seconds_ago=60) for _ in range(20)]
    idle_worker.queue.send(tx_ids)
    time.sleep(0.2)  # older than relay_after: the old relay sent all 20 again, every round

    for _ in range(3):
        assert idle_worker.relay_once() == 0
    assert queue_length(redis_server.url, settings) == 1  # one message of 20 deposits

    # Redis loses its data (a restart without persistence): now the messages are lost.
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushdb()
    time.sleep(0.2)
    assert idle_worker.relay_once() == 20
    assert queue_length(redis_server.url, settings) == 1


def test_relay_sends_again_once_the_grace_period_is_over(
    settings: Settings, redis_server: Any
) -> None:
    # A message queued for longer than the grace period is presumed lost (a worker killed
    # while the relay's maintenance could not run, a dead letter whose row stayed pending).
    worker = DepositWorker(
        replace(settings, relay_after_seconds=0.1, relay_queued_grace_seconds=3.0)
    )
    worker.pool.open(wait=True)
    try:
        tx_id = add_deposit(settings.database_url, "bob", seconds_ago=60)
        worker.queue.send([tx_id])
        time.sleep(0.2)
        assert worker.relay_once() == 0
        time.sleep(3.0)
        assert worker.relay_once() == 1
        assert queue_length(redis_server.url, settings) == 2
    finally:
        worker.pool.close()
        close_broker(worker.broker)


def test_worker_consumes_every_configured_queue(settings: Settings) -> None:
    extra = f"{settings.queue_name}-priority"
    both = replace(settings, worker_queues=(settings.queue_name, extra))
    add_user(settings.database_url, "carol")
    first = add_deposit(settings.database_url, "carol", "1")
    second = add_deposit(settings.database_url, "carol", "2")
    worker = DepositWorker(both)
    worker.start(serve_metrics=False)
    try:
        worker.queue.send([first])
        worker.queue.send([second], queue=extra)
        wait_for(lambda: set(statuses(settings.database_url).values()) == {"done"})
    finally:
        worker.stop(timeout_ms=5000)
    assert balances(settings.database_url) == {"carol": Decimal(3)}


def test_queues_setting_lists_every_queue_first_one_first() -> None:
    settings = Settings.from_env({"CRICALGO_QUEUE": "deposits", "CRICALGO_QUEUES": "bulk,deposits"})
    assert settings.queues == ("deposits", "bulk")
    assert Settings.from_env({"CRICALGO_QUEUE": "solo"}).queues == ("solo",)


def test_batches_of_redelivered_deposits_credit_each_once(
    settings: Settings, redis_server: Any
) -> None:
    users = [f"user{i}" for i in range(7)]
    for user in users:
        add_user(settings.database_url, user)
    tx_ids = [add_deposit(settings.database_url, users[i % 7], "1") for i in range(300)]
    parked = [add_deposit(settings.database_url, "stranger", "1") for _ in range(5)]
    worker = DepositWorker(replace(settings, worker_threads=16, relay_after_seconds=3600))
    # Everything three times, interleaved: messages of 1 to 100 deposits, several carrying
    # copies of one deposit, crediting concurrently on 16 threads.
    everything = (tx_ids + parked) * 3
    for size in (1, 7, 100):
        worker.queue.send(everything[: len(everything) // 3], per_message=size)
        everything = everything[len(everything) // 3 :]
    worker.queue.send(everything)
    worker.start(serve_metrics=False)
    try:
        wait_for(
            lambda: sum(s == "done" for s in statuses(settings.database_url).values()) == 300,
            timeout=60,
        )
        worker.broker.join(settings.queue_name, timeout=60_000)
        with redis.Redis.from_url(redis_server.url) as client:
            # Every message finished: nothing is left for the relay to consider queued.
            assert worker.queue.still_queued(tx_ids + parked, 3600) == set()
            assert client.llen(f"{settings.redis_namespace}:{settings.queue_name}") == 0
    finally:
        worker.stop(timeout_ms=5000)
    assert len(ledger(settings.database_url)) == 300
    assert balances(settings.database_url) == {
        u: Decimal(len(tx_ids[i::7])) for i, u in enumerate(users)
    }
    assert {statuses(settings.database_url)[tx] for tx in parked} == {"unmatched"}


def test_a_failing_deposit_dead_letters_alone_and_its_batch_is_credited(
    settings: Settings,
) -> None:
    # A real failure inside PostgreSQL: crediting "slowpoke" sleeps past the statement
    # timeout (half the actor's time limit), so the whole transaction is cancelled.
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
    add_user(settings.database_url, "slowpoke")
    add_user(settings.database_url, "gina")
    fine = [add_deposit(settings.database_url, "gina", "2") for _ in range(4)]
    slow = add_deposit(settings.database_url, "slowpoke", "9")
    worker = DepositWorker(
        replace(settings, task_time_limit_ms=1000, task_max_retries=1, relay_after_seconds=3600)
    )
    worker.queue.send([*fine[:2], slow, *fine[2:]])  # one message of five deposits
    worker.start(serve_metrics=False)
    try:
        wait_for(lambda: statuses(settings.database_url)[slow] == "dead", timeout=30)
    finally:
        worker.stop(timeout_ms=5000)
    assert {statuses(settings.database_url)[tx] for tx in fine} == {"done"}
    assert balances(settings.database_url) == {"gina": Decimal(8)}
