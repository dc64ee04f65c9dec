"""Group commit for the worker: the deposits that Dramatiq's threads hand over while a batch
is being credited are credited together, in one PostgreSQL transaction, by the next batch.

Each actor call still waits for its own deposit's outcome, so Dramatiq acks, retries and
dead-letters every message on its own, exactly as without batching. A batch that fails
(a statement timeout, a lost connection) is not blamed on every message in it: each of its
deposits is then credited alone by its own thread, so one bad row fails only its message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from psycopg_pool import ConnectionPool

from .ledger import CreditOutcome, credit_deposits

log = logging.getLogger("cricalgo.workload.worker")

# Called after a batch commits, with the tx_ids whose messages are finished.
Settled = Callable[[Sequence[str]], None]


@dataclass(eq=False)
class _Waiter:
    tx_id: str
    woken: threading.Event = field(default_factory=threading.Event)
    outcome: CreditOutcome | None = None
    error: BaseException | None = None
    alone: bool = False  # the batch failed: credit this one by itself
    lead: bool = False  # this thread commits the next batch


class CreditBatcher:
    """One batch in flight per process; the thread whose deposit arrives when none is in
    flight commits it (with whatever else is waiting), then hands the next batch to a
    waiting thread, so no thread of Dramatiq's is kept from acking its own message."""

    def __init__(
        self, pool: ConnectionPool, max_batch: int = 200, settled: Settled | None = None
    ) -> None:
        self.pool = pool
        self.max_batch = max_batch
        self.settled = settled
        self._lock = threading.Lock()
        self._waiting: list[_Waiter] = []
        self._busy = False

    def credit(self, tx_id: str) -> CreditOutcome:
        """Credit `tx_id` in the next batch; raises what crediting it alone raised."""
        me = _Waiter(tx_id)
        with self._lock:
            if self._busy:
                self._waiting.append(me)
            else:
                self._busy = me.lead = True
        if not me.lead:
            self._wait(me)
        if me.lead:
            with self._lock:
                batch = [me, *self._waiting[: self.max_batch - 1]]
                del self._waiting[: self.max_batch - 1]
            try:
                self._commit(batch)
            finally:
                # Interrupted (Dramatiq's time limit raises inside the thread): the others
                # credit their deposits alone rather than wait for this batch forever.
                for waiter in batch[1:]:
                    if not waiter.woken.is_set():
                        waiter.alone = True
                        waiter.woken.set()
                self._hand_over()
        if me.alone:
            return self._credit_alone(tx_id)
        if me.error is not None:
            raise me.error
        assert me.outcome is not None
        return me.outcome

    def _wait(self, me: _Waiter) -> None:
        # In short waits, so that an exception raised into this thread (a time limit, a
        # shutdown) is delivered; leaving then must not strand the batch handed to it.
        try:
            while not me.woken.wait(0.05):
                pass
        except BaseException:
            with self._lock:
                if me in self._waiting:
                    self._waiting.remove(me)
                lead = me.lead
            if lead:
                self._hand_over()
            raise

    def _commit(self, batch: list[_Waiter]) -> None:
        try:
            with self.pool.connection() as conn:
                outcomes = credit_deposits(conn, [w.tx_id for w in batch])
        except Exception as exc:
            for waiter in batch:
                if len(batch) == 1:
                    waiter.error = exc
                else:
                    waiter.alone = True
            self._wake(batch)
            return
        for waiter in batch:
            waiter.outcome = outcomes[waiter.tx_id]
        self._notify_settled(list(outcomes))
        self._wake(batch)

    def _credit_alone(self, tx_id: str) -> CreditOutcome:
        with self.pool.connection() as conn:
            outcome = credit_deposits(conn, [tx_id])[tx_id]
        self._notify_settled([tx_id])
        return outcome

    def _notify_settled(self, tx_ids: list[str]) -> None:
        if self.settled is not None:
            try:
                self.settled(tx_ids)
            except Exception as exc:  # bookkeeping only: the credits are committed
                log.warning("deposit_settle_failed", extra={"error": repr(exc)})

    @staticmethod
    def _wake(batch: list[_Waiter]) -> None:
        for waiter in batch:
            waiter.woken.set()

    def _hand_over(self) -> None:
        with self._lock:
            if not self._waiting:
                self._busy = False
                return
            nxt = self._waiting.pop(0)
            nxt.lead = True
        nxt.woken.set()
