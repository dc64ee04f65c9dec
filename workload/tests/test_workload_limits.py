"""Request limits on the real webhook: header count and size (431), a body that does not
arrive in time (408), and a full inbox queue (503 + Retry-After at once, nothing stored)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from cricalgo_localstack.deposits import deposit_body, signed_headers
from cricalgo_localstack.workload_processes import LiveServer, wait_for
from cricalgo_workload.app import create_app
from cricalgo_workload.settings import Settings

PATH = "/api/v1/webhooks/deposit"


@pytest.fixture
def limited(settings: Settings) -> Iterator[tuple[LiveServer, Settings]]:
    tight = replace(
        settings,
        max_header_count=20,
        max_header_bytes=4096,
        body_read_timeout_seconds=0.5,
        inbox_queue_limit=2,
    )
    server = LiveServer(create_app(tight)).start()
    try:
        yield server, tight
    finally:
        server.stop()


def test_too_many_or_too_large_headers_are_431(
    limited: tuple[LiveServer, Settings], webhook_secret: str
) -> None:
    server, _ = limited
    content = deposit_body()
    signed = signed_headers(webhook_secret, content)
    many = {**signed, **{f"x-extra-{i}": "1" for i in range(30)}}
    large = {**signed, "x-large": "a" * 5000}
    with httpx.Client(base_url=server.url) as http:
        answers = [
            http.post(PATH, content=content, headers=many),
            http.post(PATH, content=content, headers=large),
            http.get("/healthz", headers=many),
        ]
        fine = http.post(PATH, content=content, headers=signed)
    assert [a.status_code for a in answers] == [431, 431, 431]
    assert {a.json()["error"] for a in answers} == {"headers_too_large"}
    assert fine.status_code == 202


def test_a_body_that_does_not_arrive_in_time_is_408(
    limited: tuple[LiveServer, Settings], webhook_secret: str
) -> None:
    server, _ = limited
    content = deposit_body()
    headers = signed_headers(webhook_secret, content)
    url = urlsplit(server.url)
    request = (
        f"POST {PATH} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: {len(content)}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    ).encode() + content[:10]  # ... and the rest never comes
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(4096):  # the server closes the connection after a 408
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"error":"body_timeout"' in answer


def test_a_full_inbox_queue_answers_503_at_once(
    limited: tuple[LiveServer, Settings], webhook_secret: str
) -> None:
    server, settings = limited
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def deliver() -> None:
        content = deposit_body()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            response = http.post(
                PATH, content=content, headers=signed_headers(webhook_secret, content)
            )
        with lock:
            results.append(response)

    # Inserts wait while another session holds this lock: the writers block, and the
    # deliveries behind them fill the queue.
    with psycopg.connect(settings.database_url) as blocker:
        blocker.execute("LOCK TABLE deposit_inbox IN SHARE ROW EXCLUSIVE MODE")
        threads = [threading.Thread(target=deliver) for _ in range(16)]
        for thread in threads:
            thread.start()
        wait_for(lambda: any(r.status_code == 503 for r in list(results)), timeout=20)
        blocker.rollback()
    for thread in threads:
        thread.join(timeout=30)

    statuses = sorted(r.status_code for r in results)
    full = [r for r in results if r.status_code == 503]
    accepted = {r.json()["tx_id"] for r in results if r.status_code == 202}
    assert set(statuses) == {202, 503}, statuses
    assert all(r.json()["error"] == "overloaded" for r in full)
    assert all(r.headers["retry-after"] == "5" for r in full)
    with psycopg.connect(settings.database_url) as conn:
        stored = {str(row[0]) for row in conn.execute("SELECT tx_id FROM deposit_inbox")}
    assert stored == accepted


def test_the_users_api_reads_small_bodies_only(client: httpx.Client, auth: dict[str, str]) -> None:
    big = client.post("/api/v1/users", content=b'{"user_id": "' + b"a" * 5000 + b'"}', headers=auth)
    fine = client.post("/api/v1/users", json={"user_id": "alice"}, headers=auth)
    assert big.status_code == 413
    assert big.json()["error"] == "body_too_large"
    assert fine.status_code == 201
