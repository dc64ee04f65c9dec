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
