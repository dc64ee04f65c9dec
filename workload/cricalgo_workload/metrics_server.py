"""A small HTTP server for a metrics port: `/metrics`, optional health probes, 404 for
everything else.

prometheus_client's own `start_http_server` answers every path with the metrics, so a
probe of `/healthz` or `/readyz` there always succeeds whatever the process's state. This
one serves the metrics through prometheus_client's WSGI app (content negotiation, gzip)
and the probes from callables that tell the truth about the process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

# A probe answers (healthy, details); the details go into the JSON body.
Probe = Callable[[], tuple[bool, Mapping[str, Any]]]
StartResponse = Callable[..., Any]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes every few seconds: no access log."""


def _json(start_response: StartResponse, status: str, body: Mapping[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


class MetricsServer:
    """Serves `registry` on `host:port` (0: any free port, see `port`) in daemon threads."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        probes: Mapping[str, Probe] | None = None,
    ) -> None:
        self.metrics_app = make_wsgi_app(registry)
        self.probes = dict(probes or {})
        self.server = make_server(
            host, port, self, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
        self.port: int = self.server.server_port
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="metrics-server", daemon=True
        )

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self.metrics_app(environ, start_response)
        probe = self.probes.get(path)
        if probe is None:
            return _json(start_response, "404 Not Found", {"ok": False, "error": "not_found"})
        try:
            healthy, details = probe()
        except Exception as exc:  # a probe that fails is a failing probe, not a crash
            healthy, details = False, {"error": type(exc).__name__}
        status = "200 OK" if healthy else "503 Service Unavailable"
        return _json(start_response, status, {"ok": healthy, **details})

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
