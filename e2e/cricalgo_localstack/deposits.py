"""Signed deposit deliveries for tests, smoke tests, the demo and benchmarks: secrets,
bodies, Standard Webhooks headers, and a load that records every answer."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from typing import Any

from cricalgo_workload.signatures import sign


def new_secret() -> str:
    """A fresh Standard Webhooks secret."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def deposit_body(
    user_id: str = "alice", amount: str = "10.50", currency: str = "EUR", **extra: Any
) -> bytes:
    payload = {
        "user_id": user_id,
        "amount": amount,
        "currency": currency,
        # Unique per deposit: a repeated reference is the same deposit (or a 409).
        "provider_reference": f"ref-{uuid.uuid4().hex}",
        **extra,
    }
    return json.dumps(payload).encode()


def signed_headers(
    secret: str, body: bytes, webhook_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """The headers a Standard Webhooks sender attaches to `body`."""
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
        "content-type": "application/json",
    }


def post_deposit(http: Any, secret: str, body: bytes) -> tuple[int, str | None]:
    """POST one signed deposit with an httpx client: (status, tx_id of a 202 or None).
    Transport errors propagate: callers decide whether to resend."""
    response = http.post(
        "/api/v1/webhooks/deposit", content=body, headers=signed_headers(secret, body)
    )
    status = int(response.status_code)
    return status, response.json().get("tx_id") if status == 202 else None


class DepositLoad:
    """Threads that post signed deposits until stopped, recording every answer."""

    def __init__(self, url: str, secret: str, users: list[str], threads: int = 6) -> None:
        import threading

        self.url = url
        self.secret = secret
        self.users = users
        self.results: list[tuple[float, float, int, str | None, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, index: int) -> None:
        import random

        import httpx

        rng = random.Random(index)
        with httpx.Client(base_url=self.url, timeout=15) as http:
            while not self._stop.is_set():
                amount = f"{rng.randint(1, 10_000)}.{rng.randint(0, 99):02d}"
                body = deposit_body(user_id=rng.choice(self.users), amount=amount)
                started = time.monotonic()
                try:
                    status, tx_id = post_deposit(http, self.secret, body)
                except httpx.TransportError:
                    status, tx_id = 0, None
                    time.sleep(0.05)
                with self._lock:
                    self.results.append((started, time.monotonic(), status, tx_id, amount))

    def start(self) -> DepositLoad:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def accepted(self) -> dict[str, str]:
        """tx_id -> amount of every delivery that was answered 202."""
        with self._lock:
            return {tx: amount for _, _, status, tx, amount in self.results if tx and status == 202}
