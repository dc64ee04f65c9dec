"""Everything that reads or writes Dramatiq's private Redis layout, in one place.

Dramatiq's `RedisBroker` (the version pinned in constraints.txt; the contract test in
workload/tests/test_workload_dramatiq_redis.py fails when that changes) keeps, per queue:
- `{namespace}:{queue}`: a list of message ids waiting to be fetched;
- `{namespace}:{queue}.msgs`: a hash from message id to encoded message, from enqueue until
  the ack (so a message is in it while queued, prefetched, running or held for a retry);
- `{namespace}:__acks__.{broker_id}.{queue}`: the ids a worker fetched and has not acked;
- `{namespace}:__heartbeats__`: each worker's last dispatch call, by which its unacked
  messages are given back to the queue once it stops beating ("maintenance").

Besides, the workload keeps `{namespace}:cricalgo.enqueued`, a sorted set from tx_id to the
time its credit message was last sent. The relay consults it so that it never sends again
a message that is queued or waiting for a retry; a message that finishes (credited, already
done, parked, dead-lettered) removes its tx_id.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

# For an immediate enqueue, Dramatiq's dispatch script makes two writes: the encoded
# message into the hash `{namespace}:{queue}.msgs` under a fresh id, and that id onto the
# list `{namespace}:{queue}`. This script makes them for several messages, and stamps each
# message's tx_ids in the enqueued set; no consumer runs between the writes (Redis runs a
# script alone), so none sees an id without its message.
# KEYS: queue list, message hash, enqueued set
# ARGV: now_ms, then per message: id, encoded message, n, its n tx_ids
ENQUEUE_MANY = """
local i = 2
while i <= #ARGV do
    local n = tonumber(ARGV[i + 2])
    redis.call("hset", KEYS[2], ARGV[i], ARGV[i + 1])
    redis.call("rpush", KEYS[1], ARGV[i])
    for j = i + 3, i + 2 + n do
        redis.call("zadd", KEYS[3], ARGV[1], ARGV[j])
    end
    i = i + 3 + n
end
return i
"""

# Deposits per credit message: the worker credits a message's deposits in one transaction,
# and Dramatiq's cost per message (fetch, ack, middleware) is shared by all of them.
DEPOSITS_PER_MESSAGE = 100

# Encodes the credit message of (tx_ids, redis message id, queue).
EncodeCredit = Callable[[Sequence[str], str, str], bytes]


def queue_key(namespace: str, queue: str) -> str:
    """The Redis list holding the queue's waiting message ids."""
    return f"{namespace}:{queue}"


def enqueued_key(namespace: str) -> str:
    return f"{namespace}:cricalgo.enqueued"


def enqueue_keys(namespace: str, queue: str) -> list[str]:
    return [
        queue_key(namespace, queue),
        f"{queue_key(namespace, queue)}.msgs",
        enqueued_key(namespace),
    ]


def enqueue_args(
    tx_ids: Sequence[str], queue: str, encode: EncodeCredit, per_message: int = DEPOSITS_PER_MESSAGE
) -> list[Any]:
    """ARGV of `ENQUEUE_MANY`: the credit messages of `tx_ids`, `per_message` a message."""
    args: list[Any] = [int(time.time() * 1000)]
    for start in range(0, len(tx_ids), per_message):
        chunk = tx_ids[start : start + per_message]
        # Each message in Redis needs its own id (RedisBroker.enqueue does the same).
        redis_id = str(uuid.uuid4())
        args += (redis_id, encode(chunk, redis_id, queue), len(chunk), *chunk)
    return args


class CreditQueue:
    """The worker's side: send credit messages (the relay, re-drives) and keep the
    enqueued set, with the broker's own Redis client (synchronous)."""

    def __init__(
        self, client: redis.Redis, namespace: str, default_queue: str, encode: EncodeCredit
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.default_queue = default_queue
        self.encode = encode
        self._enqueue = client.register_script(ENQUEUE_MANY)

    def send(
        self,
        tx_ids: Sequence[str],
        queue: str | None = None,
        per_message: int = DEPOSITS_PER_MESSAGE,
    ) -> None:
        """Enqueue the credit messages of `tx_ids`, `per_message` deposits a message, in one
        round trip (raises if Redis is unreachable; part of them may then be queued: a
        message sent twice credits once)."""
        if tx_ids:
            queue = queue or self.default_queue
            self._enqueue(
                keys=enqueue_keys(self.namespace, queue),
                args=enqueue_args(tx_ids, queue, self.encode, per_message),
            )

    def still_queued(self, tx_ids: Sequence[str], within_seconds: float) -> set[str]:
        """The tx_ids whose message was sent less than `within_seconds` ago and has not
        finished: queued, running or waiting for a retry."""
        if not tx_ids:
            return set()
        scores = self.client.zmscore(enqueued_key(self.namespace), list(tx_ids))
        oldest = (time.time() - within_seconds) * 1000
        return {tx for tx, s in zip(tx_ids, scores, strict=True) if s is not None and s >= oldest}

    def touch(self, tx_ids: Iterable[str]) -> None:
        """Record that these messages were sent again (a retry scheduled by Dramatiq)."""
        now = int(time.time() * 1000)
        mapping = dict.fromkeys(tx_ids, now)
        if mapping:
            self.client.zadd(enqueued_key(self.namespace), mapping)

    def finished(self, tx_ids: Iterable[str]) -> None:
        """Forget these messages: nothing is left to do for them."""
        ids = list(tx_ids)
        if ids:
            self.client.zrem(enqueued_key(self.namespace), *ids)


def requeue_dead_workers(broker: RedisBroker, queues: Iterable[str]) -> None:
    """Give the unacked messages of workers whose heartbeat stopped back to their queues.

    Dramatiq does this itself, but only in a random 0.1 % of its dispatch calls; the relay
    calls the same maintenance every round so a killed worker's messages come back about
    one heartbeat timeout after it died, before the relay would send them again."""
    for queue in queues:
        for name in (queue, f"{queue}.DQ"):
            broker.scripts["dispatch"](
                keys=[broker.namespace],
                args=[
                    "qsize",  # a read-only command: only the maintenance runs
                    int(time.time() * 1000),
                    name,
                    broker.broker_id,
                    broker.heartbeat_timeout,
                    broker.dead_message_ttl,
                    1,
                    broker._max_unpack_size(),
                ],
            )


def requeue_prefetched(worker: dramatiq.Worker) -> int:
    """Give back messages the Redis consumers fetched but never handed to a thread.

    Dramatiq's `Worker.stop` requeues its in-memory work queue but not the Redis
    consumer's prefetch cache; those would wait in this worker's ack set until another
    worker notices the missing heartbeat. Returns how many were given back."""
    return sum(
        requeue_cached(consumer)
        for thread in list(getattr(worker, "consumers", {}).values())
        if (consumer := getattr(thread, "consumer", None)) is not None
    )


def requeue_cached(consumer: Any) -> int:
    """Give one Redis consumer's prefetched, not yet handed out, messages back."""
    cache = getattr(consumer, "message_cache", None)
    if not cache:
        return 0
    messages = [dramatiq.Message.decode(data) for data in cache if data]
    consumer.requeue(messages)
    cache.clear()
    return len(messages)
