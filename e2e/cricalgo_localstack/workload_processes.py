"""The workload run for tests: the app on a real uvicorn in a thread, or a role as a child
process, and the short poll its tests use."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any


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
