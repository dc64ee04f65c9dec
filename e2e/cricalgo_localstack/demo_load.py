"""Signed deposit webhooks through the mesh, as a payment provider would send them, with
every answer recorded (time, status) and the tx_id of every deposit answered 202."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class MeshLoad:
    """Threads posting signed deposits through the mesh, counting answers per second."""

    mesh_url: str
    host: str
    secret: str
    threads: int = 3
    answers: list[tuple[float, int]] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        import httpx
        from cricalgo_workload.testing import deposit_body, signed_headers

        with httpx.Client(base_url=self.mesh_url, headers={"Host": self.host}, timeout=10) as http:
            while not self._stop.is_set():
                body = deposit_body(user_id="alice")
                try:
                    response = http.post(
                        "/api/v1/webhooks/deposit",
                        content=body,
                        headers=signed_headers(self.secret, body),
                    )
                    status = response.status_code
                    tx_id = response.json().get("tx_id") if status == 202 else None
                except (httpx.TransportError, ValueError):
                    status, tx_id = 0, None
                with self._lock:
                    self.answers.append((time.time(), status))
                    if tx_id:
                        self.accepted.add(str(tx_id))
                self._stop.wait(0.05)

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
