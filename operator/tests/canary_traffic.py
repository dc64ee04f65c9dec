"""Synthetic workload traffic for the canary tests and benchmark: real metrics, real HTTP.

Each `TrackExporter` plays one track's app and worker pods: the workload's own metric
classes (cricalgo_workload.metrics), served by prometheus-client on loopback, fed in
batches by a thread with the error ratio, latency, task failures and queue depth that the
caller sets (and may change while it runs).

Not a test module: test files load it with `load_traffic()` (tests directories are not
packages under the project's pytest settings).
"""

from __future__ import annotations

import math
import random
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
    # Random mode, when > 0: requests (and as many tasks) arrive as a Poisson process at
    # this many per second, each failing with probability `error_rate`; the fixed
    # per-batch counts above are then ignored.
    rate: float = 0.0
    error_rate: float = 0.0


def spread(count: int, total: int) -> set[int]:
    """Indices of `count` items spread evenly over `total` (so partial batches stay fair)."""
    return {round(i * total / count) for i in range(count)} if count else set()


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method; the means here are a few per batch)."""
    limit, product, count = math.exp(-mean), rng.random(), 0
    while product > limit:
        product *= rng.random()
        count += 1
    return count


@dataclass
class TrackExporter:
    """One track's app and worker metrics, driven in batches by a thread."""

    track: str
    version: str
    traffic: Traffic
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    seed: int = 0
    errors_served: int = 0  # requests answered 500 so far (what clients saw)
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
        rng = random.Random(self.seed)
        while not self._stop.wait(1 / BATCHES_PER_SECOND):
            t = self.traffic
            if t.rate > 0:
                self._random_batch(t, rng)
                continue
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

    def _random_batch(self, t: Traffic, rng: random.Random) -> None:
        labels = (self.track, self.version)
        for _ in range(_poisson(rng, t.rate / BATCHES_PER_SECOND)):
            failed = rng.random() < t.error_rate
            self.web.requests.labels(ROUTE, "POST", "500" if failed else "202", *labels).inc()
            self.web.request_duration.labels(ROUTE, "POST", *labels).observe(t.fast_seconds)
            self.worker.tasks.labels("credit_deposit", "success", *labels).inc()
            self.worker.task_duration.labels("credit_deposit", *labels).observe(t.task_seconds)
            self.errors_served += failed
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
