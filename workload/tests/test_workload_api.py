"""Health, readiness, metrics, the bearer-protected API and fault injection."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import httpx
import psycopg
from cricalgo_localstack.deposits import deposit_body, signed_headers
from cricalgo_localstack.workload_processes import LiveServer, wait_for
from cricalgo_workload.app import create_app
from cricalgo_workload.settings import Settings
from cricalgo_workload.worker import DepositWorker


def test_api_needs_the_bearer_token(client: httpx.Client, auth: dict[str, str]) -> None:
    assert client.get("/api/v1/users/alice").status_code == 401
    wrong = {"authorization": "Bearer nope"}
    assert client.post("/api/v1/users", json={"user_id": "x"}, headers=wrong).status_code == 401
    assert client.get("/api/v1/users/alice", headers=auth).status_code == 404
    assert client.get("/api/v1/users/%00bad", headers=auth).status_code == 404
    assert client.get("/api/v1/transactions/not-a-uuid", headers=auth).status_code == 404
    response = client.post("/api/v1/users", json={"user_id": "bad id"}, headers=auth)
    assert response.status_code == 422
    assert response.json()["field"] == "user_id"


def test_api_is_closed_without_a_configured_token(settings: Settings) -> None:
    server = LiveServer(create_app(replace(settings, api_token=None))).start()
    try:
        response = httpx.get(f"{server.url}/api/v1/users/alice")
    finally:
        server.stop()
    assert response.status_code == 403


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the series `name` whose labels include `labels`."""
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[2]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match[3])
    return None


def test_metrics_follow_the_contract(
    client: httpx.Client, post_deposit: Any, auth: dict[str, str], settings: Settings
) -> None:
    assert post_deposit().status_code == 202
    repeated = deposit_body()
    assert post_deposit(repeated, webhook_id="msg_dup").status_code == 202
    assert post_deposit(repeated, webhook_id="msg_dup").status_code == 202
    assert post_deposit(b"{}").status_code == 422
    client.get("/api/v1/users/alice", headers=auth)
    labels = {"track": "canary", "version": "v-test"}

    def scrape_when_gauges_are_fresh() -> str:
        text = client.get("/metrics").text
        return text if sample(text, "cricalgo_inbox_pending", **labels) == 2 else ""

    text = wait_for(scrape_when_gauges_are_fresh)
    webhook = {"route": "/api/v1/webhooks/deposit", "method": "POST", **labels}
    assert sample(text, "cricalgo_http_requests_total", status="202", **webhook) == 3
    assert sample(text, "cricalgo_http_requests_total", status="422", **webhook) == 1
    assert sample(text, "cricalgo_http_request_duration_seconds_count", **webhook) == 4
    assert (
        sample(text, "cricalgo_http_requests_total", route="/api/v1/users/{user_id}", status="404")
        == 1
    )
    assert "/api/v1/users/alice" not in text
    assert sample(text, "cricalgo_deposits_total", outcome="accepted", **labels) == 2
    assert sample(text, "cricalgo_deposits_total", outcome="duplicate", **labels) == 1
    assert sample(text, "cricalgo_deposits_total", outcome="rejected", **labels) == 1
    assert sample(text, "cricalgo_inbox_pending", **labels) == 2
    assert sample(text, "cricalgo_inbox_unmatched", **labels) == 0
    assert (sample(text, "cricalgo_inbox_oldest_pending_age_seconds", **labels) or -1) >= 0
    assert sample(text, "cricalgo_queue_depth", queue=settings.queue_name, **labels) is not None
    assert (
        sample(text, "cricalgo_db_pool_connections", state="max", role="webhook", **labels)
        == settings.pool_max_size
    )
    # PostgreSQL's own count and limit, for the alert near max_connections.
    assert (sample(text, "cricalgo_db_server_connections", state="used", **labels) or 0) >= 1
    with psycopg.connect(settings.database_url) as conn:
        limit = conn.execute("SHOW max_connections").fetchone()
    assert limit is not None
    assert sample(text, "cricalgo_db_server_connections", state="max", **labels) == int(limit[0])


def test_worker_serves_its_metrics_on_its_own_port(settings: Settings) -> None:
    worker = DepositWorker(replace(settings, metrics_port=0))
    worker.start()
    try:
        text = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/metrics").text
    finally:
        worker.stop(timeout_ms=5000)
    assert sample(
        text, "cricalgo_db_pool_connections", state="max", role="worker",
        track="canary", version="v-test",
    ) == settings.pool_max_size  # fmt: skip
    assert "# TYPE cricalgo_tasks_total counter" in text
    assert "# TYPE cricalgo_task_duration_seconds histogram" in text


def test_fault_injection_hits_the_webhook_only(settings: Settings, webhook_secret: str) -> None:
    faulty = replace(settings, fault_error_rate=1.0, fault_latency_ms=5)
    server = LiveServer(create_app(faulty)).start()
    try:
        with httpx.Client(base_url=server.url) as http:
            body = deposit_body()
            response = http.post(
                "/api/v1/webhooks/deposit",
                content=body,
                headers=signed_headers(webhook_secret, body),
            )
            health = http.get("/healthz")
    finally:
        server.stop()
    assert response.status_code == 500
    assert response.json() == {"ok": False, "error": "injected_fault"}
    assert health.status_code == 200
