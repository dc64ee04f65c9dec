"""The relay: finds inbox rows whose credit message was lost and sends it again.

A message is lost when the webhook died between its commit and its enqueue, when Redis
restarted without its data, or when a worker was killed with messages in hand (Dramatiq
gives those back once the worker's heartbeat stops; the relay runs that maintenance every
round). A pending row is sent again only if no message for it is queued, running or waiting
for a retry: the enqueued set in Redis says which are, so a backlog is never multiplied.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware
from psycopg_pool import ConnectionPool

from .broker import CREDIT_ACTOR, SINGLE_CREDIT_ACTOR
from .dramatiq_redis import CreditQueue, requeue_dead_workers
from .inbox import pending_for_relay, rematch_unmatched
from .settings import Settings
from .worker_middleware import tx_ids_of

log = logging.getLogger("cricalgo.workload.worker")


class Relay:
    """One round every `relay_interval_seconds`, in a thread of the worker process."""

    def __init__(
        self, settings: Settings, pool: ConnectionPool, broker: RedisBroker, queue: CreditQueue
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.broker = broker
        self.queue = queue
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def relay_once(self) -> int:
        """Send again the messages of pending rows that have none; returns how many."""
        requeue_dead_workers(self.broker, self.settings.queues)
        with self.pool.connection() as conn:
            rematched = rematch_unmatched(conn)
            candidates = pending_for_relay(conn, self.settings.relay_after_seconds)
        queued = self.queue.still_queued(candidates, self.settings.relay_queued_grace_seconds)
        tx_ids = rematched + [tx_id for tx_id in candidates if tx_id not in queued]
        self.queue.send(tx_ids)
        if tx_ids or queued:
            log.info("deposit_relayed", extra={"count": len(tx_ids), "still_queued": len(queued)})
        return len(tx_ids)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.relay_interval_seconds):
            try:
                self.relay_once()
            except Exception as exc:
                log.warning("deposit_relay_failed", extra={"error": repr(exc)})

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


class RetryMarks(Middleware):
    """Stamps a credit message that Dramatiq schedules for a retry in the enqueued set, so
    the relay counts it as waiting, not lost, for the grace period from now."""

    def __init__(self, queue: CreditQueue) -> None:
        self.queue = queue

    def after_enqueue(self, broker: dramatiq.Broker, message: Any, delay: int | None) -> None:
        if delay is None or message.actor_name not in (CREDIT_ACTOR, SINGLE_CREDIT_ACTOR):
            return
        try:
            self.queue.touch(tx_ids_of(message))
        except Exception as exc:
            log.warning("deposit_retry_mark_failed", extra={"error": repr(exc)})
