"""The worker role: the `credit_deposit` actor and a process runner with graceful shutdown.

One process per pod: a Dramatiq `Worker` with `CRICALGO_WORKER_THREADS` threads consuming
every queue of `CRICALGO_QUEUES`, each message's deposits credited in one transaction, metrics on
`CRICALGO_METRICS_PORT`, and the relay (relay.py) in a thread of its own.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import dramatiq

from .broker import CREDIT_ACTOR, SINGLE_CREDIT_ACTOR, close_broker, create_broker, credit_queue
from .database import create_pool
from .dramatiq_redis import requeue_prefetched
from .ledger import CreditOutcome, credit_deposits, mark_dead
from .metrics import PoolCollector, WorkerMetrics
from .metrics_server import MetricsServer
from .relay import Relay, RetryMarks
from .settings import Settings
from .worker_middleware import DeadLetters, Outcomes, TaskLogs, TaskMetrics
from .worker_probes import threads_alive, worker_ready

log = logging.getLogger("cricalgo.workload.worker")

# The outcome of a deposit whose batch failed and which was sent again alone.
SPLIT = "split"

# The longest a worker's Redis consumer sleeps between polls of an empty queue. Dramatiq
# backs off exponentially up to this after each empty poll and polls again at once after
# a hit, so below saturation the consumer that took the last message is the likeliest to
# take the next. With a 250 ms cap an idle worker polled ~10x less often than a busy one
# and could starve beside it: in a canary at 50 % the two canary workers (of four) took
# 31 % of the tasks, so the canary's worker SLOs saw half the evidence. At 25 ms an idle
# worker costs ~40 empty polls a second (one Lua call each).
IDLE_POLL_MS = 25


class DepositWorker:
    """Everything one worker process runs, wired from settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics.create(settings.track, settings.version)
        self.pool = create_pool(settings)
        self.outcomes = Outcomes()
        self.broker = create_broker(
            settings,
            [
                TaskMetrics(self.metrics, settings.track, settings.version, self.outcomes),
                TaskLogs(self.outcomes),
                DeadLetters(self._mark_dead),
            ],
        )
        self.queue = credit_queue(self.broker, settings)
        self.broker.add_middleware(RetryMarks(self.queue))
        self.relay = Relay(settings, self.pool, self.broker, self.queue)
        self.metrics.registry.register(
            PoolCollector(
                "worker",
                {"track": settings.track, "version": settings.version},
                lambda: dict(self.pool.get_stats()),
            )
        )

        options: dict[str, Any] = {
            "broker": self.broker,
            "queue_name": settings.queues[0],
            "max_retries": settings.task_max_retries,
            "time_limit": settings.task_time_limit_ms,
        }
        self.actor = dramatiq.actor(actor_name=CREDIT_ACTOR, **options)(self._credit_message)
        # Messages of one deposit, as versions before batches sent them (a canary's stable
        # webhook may still send them to this worker).
        dramatiq.actor(actor_name=SINGLE_CREDIT_ACTOR, **options)(self._credit_one_message)
        for queue in settings.queues:
            self.broker.declare_queue(queue)
        self._worker: dramatiq.Worker | None = None
        self._stopping = False
        self._metrics_server: MetricsServer | None = None
        self.metrics_port: int | None = None

    def credit(self, tx_ids: list[str]) -> list[str]:
        """The actor: credit a message's deposits in one transaction (idempotent); returns
        each one's outcome. If the transaction fails, each deposit is sent again in a
        message of its own, so one bad row fails (and dead-letters) only itself."""
        try:
            with self.pool.connection() as conn:
                outcomes = credit_deposits(conn, tx_ids)
        except Exception as exc:
            if len(tx_ids) == 1:
                raise
            log.warning("deposit_batch_split", extra={"count": len(tx_ids), "error": repr(exc)})
            self.queue.send(tx_ids, per_message=1)
            return [SPLIT] * len(tx_ids)
        for tx_id, outcome in outcomes.items():
            if outcome is CreditOutcome.UNKNOWN_TX:
                log.warning("deposit_unknown_tx", extra={"tx_id": tx_id})
        try:
            self.queue.finished(tx_ids)
        except Exception as exc:  # bookkeeping only: the credits are committed
            log.warning("deposit_settle_failed", extra={"error": repr(exc)})
        return [outcomes[tx_id].value for tx_id in tx_ids]

    def _credit_message(self, tx_ids: list[str]) -> None:
        """The actor: hands each deposit's outcome to the metrics and logs middleware."""
        self.outcomes.clear()
        self.outcomes.record(self.credit(tx_ids))

    def _credit_one_message(self, tx_id: str) -> None:
        """The actor for a message of one deposit."""
        self._credit_message([tx_id])

    def relay_once(self) -> int:
        """One round of the relay (tests and the runbook call it directly)."""
        return self.relay.relay_once()

    def _mark_dead(self, tx_id: str, error: str) -> None:
        with self.pool.connection() as conn:
            mark_dead(conn, tx_id, error)
        self.queue.finished([tx_id])

    def start(self, serve_metrics: bool = True) -> None:
        self.pool.open(wait=False)
        if serve_metrics:
            self._metrics_server = MetricsServer(
                self.metrics.registry,
                self.settings.host,
                self.settings.metrics_port,
                probes={
                    "/healthz": lambda: threads_alive(self._worker),
                    "/readyz": lambda: worker_ready(self._worker, self._stopping, self.pool),
                },
            ).start()
            self.metrics_port = self._metrics_server.port
        self._worker = dramatiq.Worker(
            self.broker,
            queues=set(self.settings.queues),
            worker_threads=self.settings.worker_threads,
            worker_timeout=IDLE_POLL_MS,
        )
        self._worker.start()
        self.relay.start()
        log.info(
            "worker_started",
            extra={
                "queues": list(self.settings.queues),
                "threads": self.settings.worker_threads,
            },
        )

    def stop(self, timeout_ms: int = 30_000) -> None:
        """Finish the messages in hand, give prefetched ones back to Redis, then close."""
        self._stopping = True
        self.relay.stop()
        if self._worker is not None:
            self._worker.stop(timeout=timeout_ms)
            try:
                count = requeue_prefetched(self._worker)
                if count:
                    log.info("worker_requeued_prefetched", extra={"count": count})
            except Exception as exc:
                log.warning("worker_requeue_failed", extra={"error": repr(exc)})
        if self._metrics_server is not None:
            self._metrics_server.stop()
        self.pool.close()
        close_broker(self.broker)
        log.info("worker_stopped")


def run_worker(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    worker = DepositWorker(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    stop.wait()
    worker.stop()
