"""What makes two deliveries the same deposit, on the real webhook, PostgreSQL and Redis:
the same webhook id must carry the same body (else 409), a provider reference is accepted
once whatever the webhook id (the repeat answers the first tx_id), and Svix's header names
are accepted like the standard ones."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import psycopg
from cricalgo_localstack.deposits import deposit_body, signed_headers
from cricalgo_workload.settings import Settings
from cricalgo_workload.signatures import sign

PATH = "/api/v1/webhooks/deposit"


def body(reference: str, amount: str = "10.50", user_id: str = "alice") -> bytes:
    return json.dumps(
        {"user_id": user_id, "amount": amount, "currency": "EUR", "provider_reference": reference}
    ).encode()


def inbox(dsn: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT tx_id::text, event_id, provider_reference FROM deposit_inbox"
            " ORDER BY received_at"
        ).fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def deposits_counted(client: httpx.Client, outcome: str) -> float:
    """`cricalgo_deposits_total{outcome=...}` as the app's /metrics shows it."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("cricalgo_deposits_total{") and f'outcome="{outcome}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_same_webhook_id_with_another_body_is_409(
    post_deposit: Any, client: httpx.Client, settings: Settings, caplog: Any
) -> None:
    first = post_deposit(body("ref-1"), webhook_id="msg_reused")
    again = post_deposit(body("ref-1"), webhook_id="msg_reused")
    other = post_deposit(body("ref-1", amount="99.00"), webhook_id="msg_reused")

    assert first.status_code == again.status_code == 202
    assert again.json()["tx_id"] == first.json()["tx_id"]
    assert other.status_code == 409
    assert other.json() == {
        "ok": False,
        "error": "id_conflict",
        "detail": other.json()["detail"],
        "tx_id": first.json()["tx_id"],
    }
    assert "different body" in other.json()["detail"]
    assert deposits_counted(client, "id_conflict") == 1
    assert [r for r in caplog.records if r.getMessage() == "deposit_conflict"]
    assert len(inbox(settings.database_url)) == 1


def test_a_provider_reference_is_accepted_once_under_any_webhook_id(
    post_deposit: Any, client: httpx.Client, settings: Settings
) -> None:
    first = post_deposit(body("ref-once"), webhook_id="msg_a")
    resent = post_deposit(body("ref-once"), webhook_id="msg_b")
    reused = post_deposit(body("ref-once", amount="1.00"), webhook_id="msg_c")

    assert first.status_code == resent.status_code == 202
    assert resent.json()["tx_id"] == first.json()["tx_id"]
    assert deposits_counted(client, "duplicate_reference") == 1
    # The same reference for another deposit is not that deposit: a conflict.
    assert reused.status_code == 409
    assert reused.json()["error"] == "reference_conflict"
    assert reused.json()["tx_id"] == first.json()["tx_id"]
    assert [row[1] for row in inbox(settings.database_url)] == ["msg_a"]


def test_svix_header_names_are_accepted(
    client: httpx.Client, webhook_secret: str, settings: Settings
) -> None:
    content = deposit_body()
    now = int(time.time())
    svix = {
        "svix-id": "msg_svix_1",
        "svix-timestamp": str(now),
        "svix-signature": sign(webhook_secret, "msg_svix_1", now, content),
        "content-type": "application/json",
    }
    accepted = client.post(PATH, content=content, headers=svix)
    # The same message under the standard names is the same delivery.
    standard = client.post(
        PATH, content=content, headers=signed_headers(webhook_secret, content, "msg_svix_1")
    )
    tampered = client.post(PATH, content=content + b" ", headers=svix)

    assert accepted.status_code == 202, accepted.text
    assert standard.status_code == 202
    assert standard.json()["tx_id"] == accepted.json()["tx_id"]
    assert tampered.status_code == 401
    assert [row[1] for row in inbox(settings.database_url)] == ["msg_svix_1"]
