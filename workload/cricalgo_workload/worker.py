"""The worker role: the `credit_deposit` actor, its metrics and logs, the relay, and a
process runner with graceful shutdown.

One process per pod: a Dramatiq `Worker` with `CRICALGO_WORKER_THREADS` threads, metrics on
`CRICALGO_METRICS_PORT`, and a relay thread that re-enqueues inbox rows whose message was
lost (Redis restarted, the webhook died between commit and enqueue, a worker was killed).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from prometheus_client import start_http_server
from psycopg_pool import ConnectionPool

from .broker import CREDIT_ACTOR, close_broker, create_broker, enqueue_credit
from .database import create_pool
from .inbox import pending_for_relay, rematch_unmatched
from .ledger import CreditOutcome, credit_deposit, mark_dead
from .metrics import PoolCollector, WorkerMetrics
from .settings import Settings

log = logging.getLogger("cricalgo.workload.worker")

_OUTCOMES = {
    CreditOutcome.PARKED.value: "parked",
    # A message for a row that does not exist cannot succeed by retrying.
    CreditOutcome.UNKNOWN_TX.value: "failure",
}


class DepositTaskMiddleware(Middleware):
    """Outcome metrics, duration, and dead-letter handling for every message.

    Its `after_process_message` runs after Retries', so `message.failed` tells a message that
    will be retried from one that exhausted its retries (Dramatiq moves it to the dead-letter
    queue; we count it, log it and mark its inbox row dead).
    """

    def __init__(self, metrics: WorkerMetrics, track: str, version: str) -> None:
        self.metrics = metrics
        self.labels = {"track": track, "version": version}
        self.pool: ConnectionPool | None = None
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        with self._lock:
            self._started[message.message_id] = time.perf_counter()
        log.info(
            "deposit_task_started",
            extra={
                "tx_id": message.args[0] if message.args else None,
                "attempt": message.options.get("retries", 0) + 1,
                "queued_ms": round(time.time() * 1000 - message.message_timestamp, 1),
            },
        )

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        with self._lock:
            started = self._started.pop(message.message_id, None)
        duration = time.perf_counter() - started if started is not None else 0.0
        actor = message.actor_name
        tx_id = message.args[0] if message.args else None
        self.metrics.task_duration.labels(actor=actor, **self.labels).observe(duration)
        if exception is None:
            # One outcome per execution (alerts divide the failing ones by the total).
            outcome = _OUTCOMES.get(result, "success")
            log.info(
                "deposit_task_completed",
                extra={
                    "tx_id": tx_id,
                    "outcome": result,
                    "duration_ms": round(duration * 1000, 2),
                },
            )
        elif message.failed:
            outcome = "dead_letter"
            self.metrics.dead_letters.labels(actor=actor, **self.labels).inc()
            log.error(
                "deposit_dead_lettered",
                extra={
                    "tx_id": tx_id,
                    "retries": message.options.get("retries"),
                    "error": repr(exception),
                },
            )
            self._mark_dead(tx_id, repr(exception))
        else:
            outcome = "retry"
            log.warning(
                "deposit_task_failed",
                extra={
                    "tx_id": tx_id,
                    "attempt": message.options.get("retries"),
                    "error": repr(exception),
                    "duration_ms": round(duration * 1000, 2),
                },
            )
        self.metrics.tasks.labels(actor=actor, outcome=outcome, **self.labels).inc()

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        with self._lock:
            self._started.pop(message.message_id, None)

    def _mark_dead(self, tx_id: str | None, error: str) -> None:
        if self.pool is None or tx_id is None:
            return
        try:
            with self.pool.connection() as conn:
                mark_dead(conn, tx_id, error)
        except Exception:
            # The row stays pending; the relay will offer it again later.
            log.exception("deposit_mark_dead_failed", extra={"tx_id": tx_id})


class DepositWorker:
    """Everything one worker process runs, wired from settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics.create(settings.track, settings.version)
        self.task_middleware = DepositTaskMiddleware(self.metrics, settings.track, settings.version)
        self.broker = create_broker(settings, [self.task_middleware])
        self.pool = create_pool(settings)
        self.task_middleware.pool = self.pool
        self.metrics.registry.register(
            PoolCollector(
                "worker",
                {"track": settings.track, "version": settings.version},
                lambda: dict(self.pool.get_stats()),
            )
        )
        self.actor = dramatiq.actor(
            broker=self.broker,
            actor_name=CREDIT_ACTOR,
            queue_name=settings.queue_name,
            max_retries=settings.task_max_retries,
            time_limit=settings.task_time_limit_ms,
        )(self.credit)
        self._stop = threading.Event()
        self._worker: dramatiq.Worker | None = None
        self._relay_thread: threading.Thread | None = None
        self._metrics_server: Any = None
        self.metrics_port: int | None = None

    def credit(self, tx_id: str) -> str:
        """The actor: credit one inbox row (idempotent; raises to retry)."""
        with self.pool.connection() as conn:
            outcome = credit_deposit(conn, tx_id)
        if outcome is CreditOutcome.UNKNOWN_TX:
            log.warning("deposit_unknown_tx", extra={"tx_id": tx_id})
        return outcome.value

    def relay_once(self) -> int:
        """Re-enqueue pending rows whose message may be lost; returns how many."""
        with self.pool.connection() as conn:
            tx_ids = rematch_unmatched(conn) + pending_for_relay(
                conn, self.settings.relay_after_seconds
            )
        for tx_id in tx_ids:
            enqueue_credit(self.broker, self.settings, tx_id)
        if tx_ids:
            log.info("deposit_relayed", extra={"count": len(tx_ids)})
        return len(tx_ids)

    def _relay_loop(self) -> None:
        while not self._stop.wait(self.settings.relay_interval_seconds):
            try:
                self.relay_once()
            except Exception as exc:
                log.warning("deposit_relay_failed", extra={"error": repr(exc)})

    def start(self, serve_metrics: bool = True) -> None:
        self.pool.open(wait=False)
        if serve_metrics:
            self._metrics_server, _ = start_http_server(
                self.settings.metrics_port, self.settings.host, registry=self.metrics.registry
            )
            self.metrics_port = self._metrics_server.server_port
        self._worker = dramatiq.Worker(
            self.broker,
            queues={self.settings.queue_name},
            worker_threads=self.settings.worker_threads,
            worker_timeout=250,
        )
        self._worker.start()
        self._relay_thread = threading.Thread(target=self._relay_loop, name="relay", daemon=True)
        self._relay_thread.start()
        log.info(
            "worker_started",
            extra={"queue": self.settings.queue_name, "threads": self.settings.worker_threads},
        )

    def stop(self, timeout_ms: int = 30_000) -> None:
        """Finish the messages in hand, give prefetched ones back to Redis, then close."""
        self._stop.set()
        if self._worker is not None:
            self._worker.stop(timeout=timeout_ms)
            self._requeue_prefetched(self._worker)
        if self._relay_thread is not None:
            self._relay_thread.join(timeout=10)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        self.pool.close()
        close_broker(self.broker)
        log.info("worker_stopped")

    def _requeue_prefetched(self, worker: dramatiq.Worker) -> None:
        """Give back messages the Redis consumer fetched but never handed to a thread.

        Dramatiq's `Worker.stop` requeues its in-memory work queue but not the Redis
        consumer's prefetch cache; those would wait in this worker's ack set until another
        worker notices the missing heartbeat (and the relay would find their rows even later).
        """
        for thread in list(getattr(worker, "consumers", {}).values()):
            consumer = getattr(thread, "consumer", None)
            cache = getattr(consumer, "message_cache", None)
            if consumer is None or not cache:
                continue
            try:
                messages = [dramatiq.Message.decode(data) for data in cache if data]
                consumer.requeue(messages)
                cache.clear()
                log.info("worker_requeued_prefetched", extra={"count": len(messages)})
            except Exception as exc:
                log.warning("worker_requeue_failed", extra={"error": repr(exc)})


def run_worker(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    worker = DepositWorker(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    stop.wait()
    worker.stop()
