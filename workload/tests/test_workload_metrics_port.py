"""Metrics ports: the webhook's `/metrics` moves to `CRICALGO_WEBHOOK_METRICS_PORT` when
that is set, and the worker's metrics port answers honest `/healthz` and `/readyz` (and
404 elsewhere), where prometheus_client's own server answered 200 on every path."""

from __future__ import annotations

import socket
from dataclasses import replace

import httpx
from cricalgo_localstack.workload_processes import LiveServer
from cricalgo_workload.app import create_app
from cricalgo_workload.settings import Settings
from cricalgo_workload.worker import DepositWorker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_webhook_metrics_on_their_own_port(settings: Settings) -> None:
    metrics_port = free_port()
    server = LiveServer(create_app(replace(settings, webhook_metrics_port=metrics_port))).start()
    try:
        with httpx.Client(base_url=server.url) as app:
            assert app.get("/healthz").status_code == 200
            on_app_port = app.get("/metrics")
        with httpx.Client(base_url=f"http://127.0.0.1:{metrics_port}") as metrics:
            scraped = metrics.get("/metrics")
            elsewhere = metrics.get("/healthz")
    finally:
        server.stop()
    assert on_app_port.status_code == 404
    assert scraped.status_code == 200
    assert 'cricalgo_http_requests_total{method="GET",route="/healthz"' in scraped.text
    assert elsewhere.status_code == 404


def test_webhook_metrics_on_the_app_port_by_default(client: httpx.Client) -> None:
    assert "cricalgo_deposits_total" in client.get("/metrics").text


def test_worker_probes_tell_the_truth(settings: Settings) -> None:
    worker = DepositWorker(replace(settings, metrics_port=0))
    worker.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{worker.metrics_port}") as http:
            healthy, ready = http.get("/healthz"), http.get("/readyz")
            unknown, scraped = http.get("/nope"), http.get("/metrics")
            worker.pool.close()
            pool_closed = http.get("/readyz")
            assert worker._worker is not None
            worker._worker.stop(timeout=5000)  # its threads end: nothing consumes any more
            threads_gone = http.get("/healthz")
    finally:
        worker.stop(timeout_ms=5000)
    assert healthy.status_code == ready.status_code == 200
    assert ready.json()["checks"] == {"started": "ok", "threads": "ok", "pool": "ok"}
    assert unknown.status_code == 404
    assert "# TYPE cricalgo_tasks_total counter" in scraped.text
    assert pool_closed.status_code == 503
    assert pool_closed.json()["checks"]["pool"] == "closed"
    assert threads_gone.status_code == 503
    assert "dead" in threads_gone.json()["threads"]
