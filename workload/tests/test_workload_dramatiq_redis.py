"""The contract between dramatiq_redis.py and the Dramatiq it was written against: the
pinned version, its dispatch script, and each write to its private layout, checked against
a real Dramatiq consumer on a real Redis. A Dramatiq upgrade fails here first: re-read
dramatiq_redis.py against the new `brokers/redis.py` and `dispatch.lua`, then update the pin."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from cricalgo_workload.broker import CREDIT_ACTOR, close_broker, create_broker, credit_queue
from cricalgo_workload.dramatiq_redis import CreditQueue, requeue_cached, requeue_dead_workers
from cricalgo_workload.settings import Settings

CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"
# sha256 of dramatiq/brokers/redis/dispatch.lua in the pinned version.
DISPATCH_SHA256 = "ba4d872e4fb204ebc3f73ca4719265a9946d70e847856c125314f01a8c90540c"


@pytest.fixture
def redis_settings(redis_server: Any) -> Settings:
    return replace(
        Settings(), redis_url=redis_server.url, queue_name=f"contract-{uuid.uuid4().hex[:8]}"
    )


@pytest.fixture
def broker(redis_settings: Settings) -> Iterator[Any]:
    made = create_broker(redis_settings)
    made.declare_queue(redis_settings.queue_name)
    try:
        yield made
    finally:
        close_broker(made)


def length(redis_settings: Settings, name: str) -> int:
    with redis.Redis.from_url(redis_settings.redis_url) as client:
        return int(client.llen(f"{redis_settings.redis_namespace}:{name}"))


def test_written_against_the_pinned_dramatiq_and_its_dispatch_script() -> None:
    pins = dict(
        line.strip().split("==", 1) for line in CONSTRAINTS.read_text().splitlines() if "==" in line
    )
    assert dramatiq.__version__ == pins["dramatiq"]
    script = Path(dramatiq.__file__).parent / "brokers" / "redis" / "dispatch.lua"
    assert hashlib.sha256(script.read_bytes()).hexdigest() == DISPATCH_SHA256


def test_a_dramatiq_worker_consumes_what_credit_queue_sends(
    broker: Any, redis_settings: Settings
) -> None:
    received: list[str] = []
    done = threading.Event()

    @dramatiq.actor(broker=broker, actor_name=CREDIT_ACTOR, queue_name=redis_settings.queue_name)
    def credit(tx_ids: list[str]) -> None:
        received.extend(tx_ids)
        if len(received) == 250:
            done.set()

    sent = [str(uuid.uuid4()) for _ in range(250)]
    credit_queue(broker, redis_settings).send(sent)  # three messages: 100, 100 and 50
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        assert done.wait(10)
        broker.join(redis_settings.queue_name, timeout=10_000)
    finally:
        worker.stop()
    assert sorted(received) == sorted(sent)


def test_prefetched_messages_go_back_to_the_queue(broker: Any, redis_settings: Settings) -> None:
    queue = credit_queue(broker, redis_settings)
    queue.send([str(uuid.uuid4()) for _ in range(5)], per_message=1)
    consumer = broker.consume(redis_settings.queue_name, prefetch=5, timeout=100)
    assert next(consumer) is not None  # one handed out, four in the prefetch cache
    assert length(redis_settings, redis_settings.queue_name) == 0
    assert requeue_cached(consumer) == 4
    assert length(redis_settings, redis_settings.queue_name) == 4


def test_a_dead_workers_messages_come_back_after_its_heartbeat_timeout(
    redis_settings: Settings,
) -> None:
    settings = replace(redis_settings, worker_heartbeat_timeout_ms=1000)
    dead, alive = create_broker(settings), create_broker(settings)
    try:
        dead.declare_queue(settings.queue_name)
        CreditQueue(dead.client, settings.redis_namespace, settings.queue_name, _encode).send(
            ["a", "b"], per_message=1
        )
        consumer = dead.consume(settings.queue_name, prefetch=2, timeout=100)
        assert next(consumer) is not None  # both fetched: in the dead worker's ack set
        assert length(settings, settings.queue_name) == 0
        requeue_dead_workers(alive, [settings.queue_name])
        assert length(settings, settings.queue_name) == 0  # its heartbeat is still fresh
        with redis.Redis.from_url(settings.redis_url) as client:
            client.zadd(f"{settings.redis_namespace}:__heartbeats__", {dead.broker_id: 0})
        requeue_dead_workers(alive, [settings.queue_name])
        assert length(settings, settings.queue_name) == 2
    finally:
        close_broker(dead)
        close_broker(alive)


def _encode(tx_ids: Sequence[str], redis_id: str, queue: str) -> bytes:
    return dramatiq.Message(
        queue_name=queue,
        actor_name=CREDIT_ACTOR,
        args=(list(tx_ids),),
        kwargs={},
        options={"redis_message_id": redis_id},
    ).encode()
