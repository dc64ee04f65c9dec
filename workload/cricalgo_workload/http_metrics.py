"""Pure ASGI middleware: request count and latency by route template, method and status."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestMetricsMiddleware:
    """Counts every HTTP request and observes its latency up to the last byte of the
    response (a background task that runs after the response is not part of it)."""

    def __init__(
        self, app: ASGIApp, requests: Counter, duration: Histogram, track: str, version: str
    ) -> None:
        self.app = app
        self.requests = requests
        self.duration = duration
        self.labels = {"track": track, "version": version}
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._histograms: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        finished: float | None = None

        async def send_observed(message: Message) -> None:
            nonlocal status, finished
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                finished = time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            elapsed = (finished or time.perf_counter()) - started
            # The route template, never the raw path: raw paths would explode cardinality.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self._counter(route, method, status).inc()
            self._histogram(route, method).observe(elapsed)

    def _counter(self, route: str, method: str, status: int) -> Counter:
        key = (route, method, status)
        child = self._counters.get(key)
        if child is None:
            child = self.requests.labels(
                route=route, method=method, status=str(status), **self.labels
            )
            self._counters[key] = child
        return child

    def _histogram(self, route: str, method: str) -> Histogram:
        key = (route, method)
        child = self._histograms.get(key)
        if child is None:
            child = self.duration.labels(route=route, method=method, **self.labels)
            self._histograms[key] = child
        return child
