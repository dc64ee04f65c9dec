"""Support for tests, smoke tests and benchmarks: secrets, deposit bodies, signed headers."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from .signatures import sign


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
        "provider_reference": f"ref-{uuid.uuid4().hex[:8]}",
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


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy; raise AssertionError with the last value if not."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)
        value = predicate()
    return value


class LiveServer:
    """The webhook app served by a real uvicorn on a free port, in a background thread."""

    def __init__(self, app: Any, port: int = 0) -> None:
        import socket
        import threading

        import uvicorn

        if port == 0:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            loop="asyncio",
            timeout_graceful_shutdown=10,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), timeout=20)
        if not self.server.started:
            raise RuntimeError("uvicorn did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class WorkloadProcess:
    """`python -m cricalgo_workload ROLE` as a child process with its own environment."""

    def __init__(self, role: str, env: dict[str, str], log_path: str) -> None:
        self.role = role
        self.env = env
        self.log_path = log_path
        self.process: Any = None

    def start(self) -> WorkloadProcess:
        import subprocess
        import sys

        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cricalgo_workload", self.role],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_http(self, url: str, timeout: float = 30) -> None:
        import httpx

        def answers() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.role} exited; see {self.log_path}")
            try:
                return httpx.get(url, timeout=1).status_code < 500
            except httpx.TransportError:
                return False

        wait_for(answers, timeout=timeout, interval=0.1)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        return int(self.process.wait(timeout=timeout))

    def stop(self) -> None:
        import signal as signals

        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signals.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except Exception:
                self.process.kill()
                self.process.wait()


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
