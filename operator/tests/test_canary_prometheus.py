"""The Prometheus client and the built-in PromQL templates against a real Prometheus.

Real exporters (the workload's own metric classes, served by prometheus-client on
loopback) emit traffic whose error ratio, latency, task failures and queue depth the test
sets; Prometheus scrapes them every second; each built-in template must return the
injected value.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import canary_traffic as traffic  # loaded by conftest.py
import pytest
from cricalgo_operator.canary import CanaryConfig
from cricalgo_operator.canary.model import step_reading
from cricalgo_operator.canary.prometheus import (
    PrometheusClient,
    PrometheusQueryError,
    PrometheusResponseError,
    PrometheusUnavailable,
)
from cricalgo_operator.canary.promql import builtin_template
from cricalgo_operator.canary.readings import AnalysisTarget, collect_readings
from cricalgo_workload.metrics import _LATENCY_BUCKETS
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

Traffic, TrackExporter, spread = traffic.Traffic, traffic.TrackExporter, traffic.spread
BATCHES_PER_SECOND = traffic.BATCHES_PER_SECOND
NAMESPACE = "shop"
NAME = "pay"


class IstioExporter:
    """Envoy-style `istio_*` series for both tracks' app Deployments."""

    def __init__(self, traffic: dict[str, Traffic]) -> None:
        self.traffic = traffic
        self.registry = CollectorRegistry()
        labels = ["reporter", "destination_workload_namespace", "destination_workload"]
        self.requests = Counter(
            "istio_requests_total", "requests", [*labels, "response_code"], registry=self.registry
        )
        self.duration = Histogram(
            "istio_request_duration_milliseconds",
            "latency",
            labels,
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
            registry=self.registry,
        )
        self._stop = threading.Event()

    def start(self) -> str:
        self.server, self.thread = start_http_server(0, "127.0.0.1", registry=self.registry)
        self.driver = threading.Thread(target=self._drive, daemon=True)
        self.driver.start()
        return f"127.0.0.1:{self.server.server_port}"

    def _drive(self) -> None:
        while not self._stop.wait(1 / BATCHES_PER_SECOND):
            for track, t in self.traffic.items():
                workload = f"{NAME}-app-canary" if track == "canary" else f"{NAME}-app"
                base = ("destination", NAMESPACE, workload)
                # The source-side report must not be double counted.
                self.requests.labels("source", NAMESPACE, workload, "200").inc(t.requests)
                errors, slow = spread(t.errors, t.requests), spread(t.slow, t.requests)
                for i in range(t.requests):
                    self.requests.labels(*base, "503" if i in errors else "200").inc()
                    seconds = t.slow_seconds if i in slow else t.fast_seconds
                    self.duration.labels(*base).observe(seconds * 1000)

    def stop(self) -> None:
        self._stop.set()
        self.driver.join()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


CANARY_TRAFFIC = Traffic(errors=5, slow=2, tasks=50, failed_tasks=2, queue_depth=37)
STABLE_TRAFFIC = Traffic(errors=0, slow=0, fast_seconds=0.05, tasks=50, failed_tasks=0)


@pytest.fixture(scope="module")
def exporters(prometheus_server: Any) -> Iterator[dict[str, Any]]:
    canary = TrackExporter("canary", "v2", CANARY_TRAFFIC)
    stable = TrackExporter("stable", "v1", STABLE_TRAFFIC)
    istio = IstioExporter({"canary": CANARY_TRAFFIC, "stable": STABLE_TRAFFIC})
    try:
        for exporter in (canary, stable):
            prometheus_server.set_targets(
                f"canary-test-{exporter.track}",
                exporter.start().split(","),
                {"namespace": NAMESPACE, "app": NAME, "track": exporter.track,
                 "version": exporter.version},
            )  # fmt: skip
        prometheus_server.set_targets("canary-test-istio", [istio.start()])
        yield {"canary": canary, "stable": stable, "istio": istio}
    finally:
        for job in ("canary-test-canary", "canary-test-stable", "canary-test-istio"):
            prometheus_server.set_targets(job, [])
        for exporter in (canary, stable, istio):
            if hasattr(exporter, "driver"):
                exporter.stop()


def config(templates: str = "workload", **canary: Any) -> CanaryConfig:
    spec = {"image": "pay:v2", "canary": {"analysisInterval": "5s", "stepDuration": "10s",
                                           "templates": templates, **canary}}  # fmt: skip
    return CanaryConfig.from_spec(spec)


TASK_P95 = builtin_template("workload", "taskDurationP95")
TARGET = AnalysisTarget(NAMESPACE, NAME, canary_version="v2", stable_version="v1")


@pytest.fixture
async def client(prometheus_server: Any) -> AsyncIterator[PrometheusClient]:
    async with PrometheusClient(prometheus_server.url, timeout=5, retries=1) as c:
        yield c


async def wait_for_full_window(client: PrometheusClient, cfg: CanaryConfig) -> None:
    """Until all 5 exporters have been scraped for longer than the analysis window."""
    deadline = time.monotonic() + 60
    query = 'min(count_over_time(up{job=~"canary-test-.*"}[15s]))'
    while time.monotonic() < deadline:
        result = await client.query(query)
        if result.value is not None and result.value >= cfg.analysis_interval + 3:
            count = await client.query('count(up{job=~"canary-test-.*"} == 1)')
            if count.value == 5:
                return
        await asyncio.sleep(1)
    pytest.fail("Prometheus did not scrape the test exporters within 60 s")


def expected_quantile(
    q: float, observations: dict[float, int], buckets: tuple[float, ...]
) -> float:
    """histogram_quantile's linear interpolation for a known set of observations."""
    total = sum(observations.values())
    rank = q * total
    below = 0.0
    lower = 0.0
    for upper in buckets:
        count = sum(n for v, n in observations.items() if lower < v <= upper)
        if below + count >= rank and count:
            return lower + (upper - lower) * (rank - below) / count
        below += count
        lower = upper
    raise AssertionError("quantile beyond the last bucket")


async def test_workload_templates_return_injected_values(
    exporters: dict[str, Any], client: PrometheusClient
) -> None:
    cfg = config(
        metrics=[{"name": "taskDurationP95", "query": TASK_P95, "compareTo": "stable"}],
    )
    await wait_for_full_window(client, cfg)
    readings = await collect_readings(client, cfg, TARGET)
    value = {r.name: r.value for r in readings if r.track == "canary"}
    t = CANARY_TRAFFIC
    assert value["errorRate"] == pytest.approx(t.errors / t.requests, abs=0.005)
    latencies = {t.fast_seconds: t.requests - t.slow, t.slow_seconds: t.slow}
    p95 = expected_quantile(0.95, latencies, _LATENCY_BUCKETS)
    p99 = expected_quantile(0.99, latencies, _LATENCY_BUCKETS)
    assert value["latencyP95"] == pytest.approx(p95, rel=0.05)
    assert value["latencyP99"] == pytest.approx(p99, rel=0.1)
    assert p95 < 0.5 < 2.0 < p99  # the two quantiles land in the injected values' buckets
    assert value["taskFailureRate"] == pytest.approx(t.failed_tasks / t.tasks, abs=0.005)
    assert value["queueDepth"] == 37
    tasks_p95 = expected_quantile(0.95, {t.task_seconds: 1}, _LATENCY_BUCKETS)
    assert value["taskDurationP95"] == pytest.approx(tasks_p95, rel=0.05)
    # Volume over the 5 s window: 100 requests per batch, 10 batches a second.
    assert value["requests"] == pytest.approx(5 * BATCHES_PER_SECOND * t.requests, rel=0.3)
    assert value["tasks"] == pytest.approx(5 * BATCHES_PER_SECOND * t.tasks, rel=0.3)
    stable = {r.name: r.value for r in readings if r.track == "stable"}
    assert stable["taskDurationP95"] == pytest.approx(tasks_p95, rel=0.05)


async def test_templates_separate_the_tracks(
    exporters: dict[str, Any], client: PrometheusClient
) -> None:
    cfg = config(
        metrics=[
            {
                "name": "errorRate",
                "query": builtin_template("workload", "errorRate"),
                "compareTo": "stable",
            },
            {
                "name": "latencyP95",
                "query": builtin_template("workload", "latencyP95"),
                "compareTo": "stable",
            },
        ]
    )
    await wait_for_full_window(client, cfg)
    readings = await collect_readings(client, cfg, TARGET)
    stable = {r.name: r.value for r in readings if r.track == "stable"}
    assert stable["errorRate"] == 0  # no 5xx series at all is a zero ratio, not no data
    expected = expected_quantile(0.95, {STABLE_TRAFFIC.fast_seconds: 1}, _LATENCY_BUCKETS)
    assert stable["latencyP95"] == pytest.approx(expected, rel=0.05)


async def test_istio_templates_return_injected_values(
    exporters: dict[str, Any], client: PrometheusClient
) -> None:
    cfg = config("istio")
    await wait_for_full_window(client, cfg)
    readings = await collect_readings(client, cfg, TARGET)
    value = {r.name: r.value for r in readings if r.track == "canary"}
    t = CANARY_TRAFFIC
    assert value["errorRate"] == pytest.approx(t.errors / t.requests, abs=0.005)
    buckets = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    latencies = {t.fast_seconds: t.requests - t.slow, t.slow_seconds: t.slow}
    assert value["latencyP95"] == pytest.approx(
        expected_quantile(0.95, latencies, buckets), rel=0.05
    )
    assert value["latencyP99"] == pytest.approx(
        expected_quantile(0.99, latencies, buckets), rel=0.1
    )
    assert value["requests"] == pytest.approx(5 * BATCHES_PER_SECOND * t.requests, rel=0.3)
    # Worker and queue checks still come from the workload's own metrics.
    assert value["queueDepth"] == 37


async def test_custom_metric_template_variables(
    exporters: dict[str, Any], client: PrometheusClient
) -> None:
    query = (
        'sum(rate(cricalgo_deposits_total{namespace="{namespace}", app="{name}",'
        ' track="{track}"}[{interval}])) or vector(42)'
    )
    cfg = config(metrics=[{"name": "custom", "query": query, "max": 100}])
    await wait_for_full_window(client, cfg)
    readings = await collect_readings(client, cfg, TARGET)
    assert readings.get("custom").value == 42


async def test_client_results_nan_empty_inf_scalar(client: PrometheusClient) -> None:
    assert (await client.query("0/0")).reason == "NaN"
    assert (await client.query("0/0")).value is None
    empty = await client.query('up{job="no-such-job"}')
    assert empty.value is None
    assert empty.reason == "empty"
    inf = await client.query("1/0")
    assert inf.value is not None
    assert math.isinf(inf.value)
    assert (await client.query("scalar(vector(3))")).value == 3


async def test_client_typed_errors(client: PrometheusClient) -> None:
    with pytest.raises(PrometheusQueryError, match="bad_data"):
        await client.query("sum(")
    with pytest.raises(PrometheusResponseError, match="one series"):
        await client.query('vector(1) or label_replace(vector(2), "a", "b", "", "")')
    with pytest.raises(PrometheusResponseError, match="result type"):
        await client.query("vector(1)[1m:10s]")


SECRET = "internal-token-7f3a"


# What a non-Prometheus service inside the network answers at each path.
INTERNAL_ANSWERS: dict[str, tuple[int, Any]] = {
    "a": (500, f"{SECRET} boom"),
    "b": (400, {"status": "error", "errorType": SECRET, "error": SECRET}),
    "c": (
        200,
        {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [
                    {"metric": {"k": SECRET}, "value": [1, "1"]},
                    {"metric": {}, "value": [1, SECRET]},
                ],
            },
        },
    ),
    "d": (200, {"status": "success", "data": {"resultType": SECRET, "result": [SECRET]}}),
}


@pytest.fixture
def internal_service(nginx_server: Any) -> Iterator[str]:
    """A real HTTP service inside the network that is not Prometheus: the kind of URL a
    hostile CR names to read it through the operator's status and Events."""
    port = nginx_server.port
    locations = []
    for path, (code, body) in INTERNAL_ANSWERS.items():
        text = body if isinstance(body, str) else json.dumps(body)
        kind = "text/plain" if isinstance(body, str) else "application/json"
        locations.append(f"  location /{path}/ {{ default_type {kind}; return {code} '{text}'; }}")
    nginx_server.apply_http_config(
        f"server {{ listen 127.0.0.1:{port};\n" + "\n".join(locations) + "\n}\n"
    )
    yield nginx_server.url
    nginx_server.apply_http_config(
        f"server {{ listen 127.0.0.1:{port};\n  location / {{ return 404; }}\n}}\n"
    )


async def test_errors_never_carry_what_the_server_sent(internal_service: str) -> None:
    """Error text ends up in status and Events: only status codes and local facts."""
    messages = []
    for path in ("a", "b", "c", "d"):
        async with PrometheusClient(f"{internal_service}/{path}", retries=0) as client:
            readings = await collect_readings(client, config(), TARGET)
        messages += [r.error for r in readings]
    assert messages
    assert all(m for m in messages)
    assert not [m for m in messages if SECRET in m]
    assert any("HTTP 500" in m for m in messages)
    assert any("query refused (HTTP 400, not a Prometheus error)" in m for m in messages)
    assert any("expected one series, got 2" in m for m in messages)
    assert any("unsupported result type" in m for m in messages)


async def test_client_unreachable_after_bounded_retries() -> None:
    # Nothing listens on port 1 of loopback: connection refused on every attempt.
    async with PrometheusClient("http://127.0.0.1:1", timeout=1, retries=2, backoff=0.01) as c:
        with pytest.raises(PrometheusUnavailable, match="after 3 attempts"):
            await c.query("up")


async def test_unreachable_prometheus_gives_no_data_readings() -> None:
    async with PrometheusClient("http://127.0.0.1:1", timeout=1, retries=0) as c:
        readings = await collect_readings(c, config(), TARGET)
    assert all(r.value is None for r in readings)
    assert all("PrometheusUnavailable" in r.error for r in readings)


@pytest.mark.parametrize("templates", ["workload", "istio"])
async def test_step_counts_of_the_sequential_decision(
    exporters: dict[str, Any], client: PrometheusClient, templates: str
) -> None:
    cfg = config(
        templates,
        decision="sequential",
        metrics=[{"name": "errorRate", "compareTo": "stable", "max": 0.05}],
    )
    await wait_for_full_window(client, cfg)
    target = AnalysisTarget(NAMESPACE, NAME, "v2", "v1", step_seconds=6)
    readings = await collect_readings(client, cfg, target)

    def count(name: str, track: str = "canary") -> float:
        value = readings.get(step_reading(name), track).value
        assert value is not None, readings
        return value

    t = CANARY_TRAFFIC
    # Increases over the 6 s the step has run: counts, not rates.
    assert count("requests") == pytest.approx(6 * BATCHES_PER_SECOND * t.requests, rel=0.3)
    assert count("errors") / count("requests") == pytest.approx(t.errors / t.requests, abs=0.005)
    assert count("failedTasks") / count("tasks") == pytest.approx(
        t.failed_tasks / t.tasks, abs=0.005
    )
    # A stable without 5xx has zero errors, not no data.
    assert count("errors", "stable") == 0
    assert count("requests", "stable") > 0
