"""The worker's Dramatiq middleware, one class per concern: metrics, logs, dead letters.

Dramatiq runs `after_*` hooks in reverse order and these are installed before Retries, so
in `after_process_message` `message.failed` tells a message that will be retried from one
that exhausted its retries (Dramatiq then moves it to the dead-letter queue).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from .ledger import CreditOutcome
from .metrics import WorkerMetrics

log = logging.getLogger("cricalgo.workload.worker")

# The `outcome` label of cricalgo_tasks_total for each result of the actor.
OUTCOMES = {
    CreditOutcome.CREDITED.value: "credited",
    CreditOutcome.ALREADY_DONE.value: "already_done",
    CreditOutcome.PARKED.value: "parked",
    # A stale message for a dead-lettered row: skipped, neither credited nor failed.
    CreditOutcome.DEAD.value: "dead",
    # A message for a row that does not exist cannot succeed by retrying.
    CreditOutcome.UNKNOWN_TX.value: "failure",
    # The deposit's batch failed; it was sent again in a message of its own.
    "split": "retry",
}


def tx_ids_of(message: Any) -> list[str]:
    """The deposits a credit message carries (a list, or one id in older messages)."""
    if not message.args:
        return []
    first = message.args[0]
    return [str(tx) for tx in first] if isinstance(first, list) else [str(first)]


class Outcomes:
    """The outcomes of the message the current thread is processing, handed from the actor
    to the middleware. The actor returns None: Dramatiq logs a warning for every message
    whose actor returns a value without its Results middleware."""

    def __init__(self) -> None:
        self._local = threading.local()

    def record(self, outcomes: list[str]) -> None:
        self._local.outcomes = outcomes

    def clear(self) -> None:
        self._local.outcomes = []

    def current(self) -> list[str]:
        return list(getattr(self._local, "outcomes", []))


def _log(level: int, event: str, extra: dict[str, Any]) -> None:
    """A log line built without `log.info`'s walk up the stack for the caller's file and
    line (the JSON lines never show them; this runs twice per deposit)."""
    if log.isEnabledFor(level):
        log.handle(log.makeRecord(log.name, level, __file__, 0, event, (), None, extra=extra))


class _Timer:
    """Start times of the messages in hand, by message id (threads share a middleware)."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    def start(self, message: Any) -> None:
        with self._lock:
            self._started[message.message_id] = time.perf_counter()

    def stop(self, message: Any) -> float:
        with self._lock:
            started = self._started.pop(message.message_id, None)
        return time.perf_counter() - started if started is not None else 0.0


class TaskMetrics(Middleware):
    """`cricalgo_tasks_total{outcome}`, `cricalgo_task_duration_seconds` and
    `cricalgo_dead_letters_total`: one outcome per execution (alerts divide the failing
    ones by the total)."""

    def __init__(
        self, metrics: WorkerMetrics, track: str, version: str, outcomes: Outcomes
    ) -> None:
        self.metrics = metrics
        self.outcomes = outcomes
        self.labels = {"track": track, "version": version}
        self.timer = _Timer()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.timer.start(message)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        actor = message.actor_name
        duration = self.timer.stop(message)
        self.metrics.task_duration.labels(actor=actor, **self.labels).observe(duration)
        if exception is None:
            # One outcome per deposit (alerts divide the failing ones by the total).
            counts = collections.Counter(
                OUTCOMES.get(r, "credited") for r in self.outcomes.current()
            )
        elif message.failed:
            counts = collections.Counter({"dead_letter": 1})
            self.metrics.dead_letters.labels(actor=actor, **self.labels).inc()
        else:
            counts = collections.Counter({"retry": 1})
        for outcome, count in counts.items():
            self.metrics.tasks.labels(actor=actor, outcome=outcome, **self.labels).inc(count)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.timer.stop(message)


class TaskLogs(Middleware):
    """`deposit_task_started`, `deposit_task_completed`, `deposit_task_failed` and
    `deposit_dead_lettered`, with the attempt, time in the queue and duration."""

    def __init__(self, outcomes: Outcomes) -> None:
        self.timer = _Timer()
        self.outcomes = outcomes

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.timer.start(message)
        attempt = message.options.get("retries", 0) + 1
        queued_ms = round(time.time() * 1000 - message.message_timestamp, 1)
        for tx_id in tx_ids_of(message):
            _log(
                logging.INFO,
                "deposit_task_started",
                {"tx_id": tx_id, "attempt": attempt, "queued_ms": queued_ms},
            )

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        duration_ms = round(self.timer.stop(message) * 1000, 2)
        tx_ids = tx_ids_of(message)
        if exception is None:
            for tx_id, outcome in zip(tx_ids, self.outcomes.current(), strict=False):
                _log(
                    logging.INFO,
                    "deposit_task_completed",
                    {"tx_id": tx_id, "outcome": outcome, "duration_ms": duration_ms},
                )
            return
        for tx_id in tx_ids:
            if message.failed:
                _log(
                    logging.ERROR,
                    "deposit_dead_lettered",
                    {
                        "tx_id": tx_id,
                        "retries": message.options.get("retries"),
                        "error": repr(exception),
                    },
                )
            else:
                _log(
                    logging.WARNING,
                    "deposit_task_failed",
                    {
                        "tx_id": tx_id,
                        "attempt": message.options.get("retries"),
                        "error": repr(exception),
                        "duration_ms": duration_ms,
                    },
                )

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.timer.stop(message)


class DeadLetters(Middleware):
    """Marks the inbox row of a message that exhausted its retries `dead` (the relay then
    leaves it alone; `cricalgo-workload redrive` sends it again)."""

    def __init__(self, mark_dead: Callable[[str, str], None]) -> None:
        self.mark_dead = mark_dead

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None or not message.failed:
            return
        for tx_id in tx_ids_of(message):
            try:
                self.mark_dead(tx_id, repr(exception))
            except Exception:
                # The row stays pending; the relay will offer it again later.
                log.exception("deposit_mark_dead_failed", extra={"tx_id": tx_id})
