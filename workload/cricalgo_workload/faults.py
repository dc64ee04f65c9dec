"""Fault injection for canary tests (off by default): extra latency and a share of 500s.

Installed on the webhook route only. An injected 500 happens before anything is written,
so the provider retries and no deposit is lost.
"""

from __future__ import annotations

import asyncio
import random

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class FaultInjectionMiddleware:
    def __init__(
        self, app: ASGIApp, error_rate: float, latency_ms: int, rng: random.Random | None = None
    ) -> None:
        self.app = app
        self.error_rate = error_rate
        self.latency_ms = latency_ms
        self.rng = rng or random.Random()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        if self.error_rate and self.rng.random() < self.error_rate:
            response = JSONResponse({"ok": False, "error": "injected_fault"}, status_code=500)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
