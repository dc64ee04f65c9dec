"""Prometheus metrics; the names and labels are the contract in docs/metrics.md.

Each process builds its own registry so the webhook and worker (and tests running both in
one process) never share or collide; `track` and `version` are constant labels on all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip

PoolStats = Callable[[], dict[str, int]]


class PoolCollector(Collector):
    """`cricalgo_db_pool_connections{state,role}` read from psycopg_pool at scrape time."""

    def __init__(self, role: str, labels: dict[str, str], stats: PoolStats) -> None:
        self.role = role
        self.labels = labels
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "cricalgo_db_pool_connections",
            "psycopg pool connections by state",
            labels=["state", "role", *self.labels],
        )
        stats = self.stats()
        size = stats.get("pool_size", 0)
        idle = stats.get("pool_available", 0)
        values = {"in_use": size - idle, "idle": idle, "max": stats.get("pool_max", 0)}
        for state, value in values.items():
            family.add_metric([state, self.role, *self.labels.values()], value)
        yield family


@dataclass
class WebhookMetrics:
    registry: CollectorRegistry
    requests: Counter
    request_duration: Histogram
    deposits: Counter
    inbox_pending: Gauge
    inbox_oldest_age: Gauge
    inbox_unmatched: Gauge
    queue_depth: Gauge
    server_connections: Gauge

    @classmethod
    def create(cls, track: str, version: str) -> WebhookMetrics:
        registry = CollectorRegistry()
        labels = ["track", "version"]
        return cls(
            registry=registry,
            requests=Counter(
                "cricalgo_http_requests_total",
                "HTTP requests",
                ["route", "method", "status", *labels],
                registry=registry,
            ),
            request_duration=Histogram(
                "cricalgo_http_request_duration_seconds",
                "Server-side HTTP latency",
                ["route", "method", *labels],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            deposits=Counter(
                "cricalgo_deposits_total",
                "Webhook deliveries by outcome",
                ["outcome", *labels],
                registry=registry,
            ),
            inbox_pending=Gauge(
                "cricalgo_inbox_pending",
                "Inbox rows not yet credited (counted up to 1,000)",
                labels,
                registry=registry,
            ),
            inbox_unmatched=Gauge(
                "cricalgo_inbox_unmatched",
                "Deposits parked for a user that does not exist (counted up to 1,000)",
                labels,
                registry=registry,
            ),
            inbox_oldest_age=Gauge(
                "cricalgo_inbox_oldest_pending_age_seconds",
                "Age of the oldest pending inbox row",
                labels,
                registry=registry,
            ),
            queue_depth=Gauge(
                "cricalgo_queue_depth",
                "Messages waiting in the Dramatiq queue",
                ["queue", *labels],
                registry=registry,
            ),
            server_connections=Gauge(
                "cricalgo_db_server_connections",
                "PostgreSQL client connections in use (all clients) and max_connections",
                ["state", *labels],
                registry=registry,
            ),
        )


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry
    tasks: Counter
    task_duration: Histogram
    dead_letters: Counter

    @classmethod
    def create(cls, track: str, version: str) -> WorkerMetrics:
        registry = CollectorRegistry()
        labels = ["actor", "track", "version"]
        return cls(
            registry=registry,
            tasks=Counter(
                "cricalgo_tasks_total",
                "Task executions by outcome",
                [labels[0], "outcome", *labels[1:]],
                registry=registry,
            ),
            task_duration=Histogram(
                "cricalgo_task_duration_seconds",
                "Task run time",
                labels,
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            dead_letters=Counter(
                "cricalgo_dead_letters_total",
                "Messages that exhausted their retries",
                labels,
                registry=registry,
            ),
        )
