"""The Dramatiq Redis broker and the messages the workload sends through it.

The broker is built explicitly (no global broker) so the webhook, the worker and tests
each own theirs. Messages carry only the inbox row's `tx_id`: the row is the truth.
"""

from __future__ import annotations

from collections.abc import Sequence

import dramatiq
import redis
import redis.asyncio as aioredis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware, Retries, ShutdownNotifications, TimeLimit

from .dramatiq_redis import ENQUEUE_MANY, CreditQueue, EncodeCredit, enqueue_args, enqueue_keys
from .dramatiq_redis import queue_key as dramatiq_queue_key
from .settings import Settings

# A message of CREDIT_ACTOR carries a list of tx_ids, credited in one transaction; a deposit
# whose batch fails is sent again alone, so its retries and dead letter are its own.
CREDIT_ACTOR = "credit_deposits"
SINGLE_CREDIT_ACTOR = "credit_deposit"


def redis_client(settings: Settings) -> redis.Redis:
    """A Redis client that fails fast when Redis is away (the inbox makes that safe)."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=1,
        socket_timeout=5,
        health_check_interval=15,
        retry_on_timeout=False,
    )


def create_broker(settings: Settings, extra_middleware: Sequence[Middleware] = ()) -> RedisBroker:
    """A Redis broker with only the middleware the workload uses (Dramatiq's Prometheus
    middleware is left out: the worker exports the metrics of docs/metrics.md itself).
    `extra_middleware` goes first: Dramatiq runs `after_*` hooks in reverse order, so its
    `after_process_message` sees a message Retries has just failed."""
    middleware: list[Middleware] = [
        *extra_middleware,
        TimeLimit(time_limit=settings.task_time_limit_ms),
        ShutdownNotifications(),
        Retries(
            max_retries=settings.task_max_retries,
            min_backoff=settings.task_min_backoff_ms,
            max_backoff=settings.task_max_backoff_ms,
        ),
    ]
    return RedisBroker(
        client=redis_client(settings),
        namespace=settings.redis_namespace,
        heartbeat_timeout=settings.worker_heartbeat_timeout_ms,
        middleware=middleware,
    )


def close_broker(broker: RedisBroker) -> None:
    """Close the broker and its Redis connections (RedisBroker.close leaves them open)."""
    broker.close()
    broker.client.close()


def credit_message(
    settings: Settings,
    tx_ids: Sequence[str],
    options: dict[str, object] | None = None,
    queue: str | None = None,
) -> dramatiq.Message[object]:
    return dramatiq.Message(
        queue_name=queue or settings.queue_name,
        actor_name=CREDIT_ACTOR,
        args=(list(tx_ids),),
        kwargs={},
        options=options or {},
    )


def encode_credit(settings: Settings) -> EncodeCredit:
    """The encoder `dramatiq_redis` sends credit messages with."""

    def encode(tx_ids: Sequence[str], redis_id: str, queue: str) -> bytes:
        return credit_message(settings, tx_ids, {"redis_message_id": redis_id}, queue).encode()

    return encode


def credit_queue(broker: RedisBroker, settings: Settings) -> CreditQueue:
    """Sends credit messages through `broker`'s Redis client (the worker's relay)."""
    return CreditQueue(
        broker.client, settings.redis_namespace, settings.queue_name, encode_credit(settings)
    )


def enqueue_credit(broker: RedisBroker, settings: Settings, tx_id: str) -> None:
    """Send the credit message for `tx_id` (raises if Redis is unreachable)."""
    credit_queue(broker, settings).send([tx_id])


class AsyncCreditSender:
    """Sends credit messages from asyncio, a batch per command (one round trip).

    `RedisBroker.enqueue` is synchronous and costs a round trip and a Lua call per message
    (and a redis-py MULTI pipeline costs four commands' worth of client work): this makes
    the same writes as Dramatiq's own enqueue in one script call, so a Dramatiq worker
    consumes the messages like any other (tested against a real consumer). The webhook has
    no Dramatiq middleware that hooks enqueues, so none is run.
    """

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        # redis-py sends EVALSHA and loads the script again if Redis lost it (a restart).
        self.script = client.register_script(ENQUEUE_MANY)
        self.settings = settings
        self.encode = encode_credit(settings)
        self.keys = enqueue_keys(settings.redis_namespace, settings.queue_name)

    async def send(self, tx_ids: Sequence[str]) -> None:
        """Send the credit messages of `tx_ids`; raises if Redis is unreachable or refuses
        (part of the batch may then be queued: a message sent twice credits once)."""
        args = enqueue_args(tx_ids, self.settings.queue_name, self.encode)
        await self.script(keys=self.keys, args=args)


def queue_key(settings: Settings, queue: str | None = None) -> str:
    """The Redis list holding a queue's waiting message ids (by default the first)."""
    return dramatiq_queue_key(settings.redis_namespace, queue or settings.queue_name)
