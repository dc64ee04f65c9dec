"""Polling the real servers until a condition holds: one helper for every suite's tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float = 60.0,
    context: Callable[[], str] | None = None,
    interval: float = 0.2,
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout`.

    A bound on liveness, not a timing assertion. `context` adds what the failure message
    should show beyond the probe's last answer (e.g. the CR's last status).
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    detail = f"; {context()}" if context is not None else ""
    message = f"timed out after {timeout:g} s waiting for {what} (last: {last!r})"
    raise AssertionError(message + detail)
