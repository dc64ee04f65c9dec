"""Synthetic workload traffic for the canary tests and benchmark: real metrics, real HTTP.

Each `TrackExporter` plays one track's app and worker pods: the workload's own metric
classes (cricalgo_workload.metrics), served by prometheus-client on loopback, fed in
batches by a thread with the error ratio, latency, task failures and queue depth that the
caller sets (and may change while it runs).

Not a test module: test files load it with `load_traffic()` (tests directories are not
packages under the project's pytest settings).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from cricalgo_workload.metrics import WebhookMetrics, WorkerMetrics
from prometheus_client import CollectorRegistry, start_http_server

ROUTE = "/api/v1/webhooks/deposit"
BATCHES_PER_SECOND = 10


@dataclass
class Traffic:
    """What one track's pods see per batch."""

    requests: int = 100
    errors: int = 0  # of `requests`, answered 500
    slow: int = 0  # of `requests`, taking `slow_seconds`; the rest take `fast_seconds`
    fast_seconds: float = 0.3
    slow_seconds: float = 4.0
    tasks: int = 50
    failed_tasks: int = 0
    task_seconds: float = 0.3
    queue_depth: float = 0.0


def spread(count: int, total: int) -> set[int]:
    """Indices of `count` items spread evenly over `total` (so partial batches stay fair)."""
    return {round(i * total / count) for i in range(count)} if count else set()


@dataclass
class TrackExporter:
    """One track's app and worker metrics, driven in batches by a thread."""

    track: str
    version: str
    traffic: Traffic
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> str:
        self.web = WebhookMetrics.create(self.track, self.version)
        self.worker = WorkerMetrics.create(self.track, self.version)
        self.servers = []
        targets = []
        for registry in (self.web.registry, self.worker.registry):
            server, thread = start_http_server(0, "127.0.0.1", registry=registry)
            self.servers.append((server, thread))
            targets.append(f"127.0.0.1:{server.server_port}")
        self.driver = threading.Thread(target=self._drive, daemon=True)
        self.driver.start()
        return ",".join(targets)

    def _drive(self) -> None:
        labels = (self.track, self.version)
        while not self._stop.wait(1 / BATCHES_PER_SECOND):
            t = self.traffic
            errors, slow = spread(t.errors, t.requests), spread(t.slow, t.requests)
            for i in range(t.requests):
                status = "500" if i in errors else "202"
                self.web.requests.labels(ROUTE, "POST", status, *labels).inc()
                seconds = t.slow_seconds if i in slow else t.fast_seconds
                self.web.request_duration.labels(ROUTE, "POST", *labels).observe(seconds)
            # Probes must not count as traffic.
            self.web.requests.labels("/healthz", "GET", "500", *labels).inc(5)
            failed = spread(t.failed_tasks, t.tasks)
            for i in range(t.tasks):
                outcome = "failure" if i in failed else "success"
                self.worker.tasks.labels("credit_deposit", outcome, *labels).inc()
                self.worker.task_duration.labels("credit_deposit", *labels).observe(t.task_seconds)
            self.web.queue_depth.labels("deposits", *labels).set(t.queue_depth)

    def stop(self) -> None:
        self._stop.set()
        self.driver.join()
        for server, thread in self.servers:
            server.shutdown()
            server.server_close()
            thread.join()

    def scrape_as(self, prometheus: object, job: str, namespace: str, app: str) -> None:
        """Have `prometheus` (the prometheus_server fixture) scrape this track as pod
        discovery would label it."""
        labels = {"namespace": namespace, "app": app, "track": self.track, "version": self.version}
        prometheus.set_targets(job, self.start().split(","), labels)  # type: ignore[attr-defined]
