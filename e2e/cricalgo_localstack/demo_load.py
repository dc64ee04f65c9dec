"""Signed deposit webhooks through the mesh, as a payment provider would send them, with
every answer recorded (time, status) and the tx_id of every deposit answered 202."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class MeshLoad:
    """Threads posting signed deposits through the mesh, counting answers per second."""

    mesh_url: str
    host: str
    secret: str
    threads: int = 3
    answers: list[tuple[float, int]] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)
    # When a deposit was sent a second time after the connection closed unanswered.
    resent: list[float] = field(default_factory=list)
    # Why requests got no HTTP answer (exception names).
    errors: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        import httpx

        from cricalgo_localstack.deposits import deposit_body

        with httpx.Client(base_url=self.mesh_url, headers={"Host": self.host}, timeout=10) as http:
            while not self._stop.is_set():
                status, tx_id = self._deliver(http, deposit_body(user_id="alice"))
                with self._lock:
                    self.answers.append((time.time(), status))
                    if tx_id:
                        self.accepted.add(str(tx_id))
                self._stop.wait(0.05)

    def _deliver(self, http: Any, body: bytes) -> tuple[int, str | None]:
        """POST one deposit; (status, tx_id), status 0 when no HTTP answer came.

        When the server closes the connection without answering, the deposit is sent again
        once, as a provider redelivers a webhook: an nginx worker retiring after a reload
        closes its idle keep-alive connections, and a request can cross that close on the
        wire. The event id makes the second delivery the same deposit."""
        import httpx

        from cricalgo_localstack.deposits import post_deposit

        for attempt in (1, 2):
            try:
                return post_deposit(http, self.secret, body)
            except httpx.RemoteProtocolError as err:
                with self._lock:
                    self.resent.append(time.time())
                    if attempt == 2:
                        self.errors[type(err).__name__] += 1
            except (httpx.TransportError, ValueError) as err:
                with self._lock:
                    self.errors[type(err).__name__] += 1
                return 0, None
        return 0, None

    def start(self) -> None:
        self._workers = [
            threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(15)

    def statuses(self, since: float, until: float) -> Counter[int]:
        with self._lock:
            return Counter(status for t, status in self.answers if since <= t < until)

    def resent_between(self, since: float, until: float) -> int:
        with self._lock:
            return sum(1 for t in self.resent if since <= t < until)
