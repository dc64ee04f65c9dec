"""`POST /api/v1/webhooks/deposit`: verify, validate, make durable, answer 202, enqueue.

The service's hottest path, so it is a raw ASGI endpoint mounted as a Starlette route: the
route still matches path and method (405 otherwise) and the app's middleware still counts
and times it, but no Request/Response objects are built per delivery and the answer goes
out with pre-encoded headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import psycopg
from psycopg_pool import PoolTimeout
from starlette.types import Receive, Scope, Send

from .deposit_event import InvalidDeposit, parse_deposit
from .inbox import InboxItem, Outcome
from .services import AppServices, InboxFull
from .signatures import SIGNATURE_HEADER_NAMES, SignatureError, verify

log = logging.getLogger("cricalgo.workload.webhook")

RETRY_AFTER_SECONDS = 5

_HEADERS_READ = frozenset((b"content-length", *(name.encode() for name in SIGNATURE_HEADER_NAMES)))
_CONTENT_TYPE = (b"content-type", b"application/json")
_RETRY_AFTER = (b"retry-after", str(RETRY_AFTER_SECONDS).encode())
# The rest of a body that timed out may still arrive: the connection cannot be reused.
_CLOSE = (b"connection", b"close")


def _error_body(error: str, detail: str, **extra: str) -> bytes:
    # The same bytes Starlette's JSONResponse would send.
    return json.dumps(
        {"ok": False, "error": error, "detail": detail, **extra},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


_UNAVAILABLE = _error_body("unavailable", "database unavailable, retry later")
_NOT_CONFIGURED = _error_body("not_configured", "no webhook secret configured")
_OVERLOADED = _error_body("overloaded", "too many deliveries waiting to be written, retry later")
_CONFLICT_DETAIL = {
    Outcome.ID_CONFLICT: "this webhook id was first delivered with a different body;"
    " a new message needs a new webhook id",
    Outcome.REFERENCE_CONFLICT: "this provider_reference was first delivered for a different"
    " user, amount or currency",
}


def _read_headers(scope: Scope) -> dict[str, str]:
    """The few request headers the webhook reads; the first of repeated ones wins, as in
    Starlette's `Headers.get`."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in _HEADERS_READ:
            key = name.decode("latin-1")
            if key not in found:
                found[key] = value.decode("latin-1")
    return found


class ClientGone(Exception):
    """The client disconnected before its body was read."""


async def _read_capped(receive: Receive, declared: str | None, limit: int) -> bytes | None:
    """The body, or None as soon as it exceeds `limit` (the rest is never read). A client
    that disconnects mid-body gets no answer: `ClientGone` is raised."""
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body if len(body) <= limit else None
    buffer = bytearray(body)
    while True:
        if len(buffer) > limit:
            return None
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        buffer += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(buffer) if len(buffer) <= limit else None


async def _answer(
    send: Send, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), _CONTENT_TYPE, *extra],
        }
    )
    await send({"type": "http.response.body", "body": body})


class DepositWebhook:
    """The deposit endpoint, as an ASGI app bound to the app's services."""

    def __init__(self, services: AppServices) -> None:
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        services = self.services
        settings = services.settings
        headers = _read_headers(scope)

        try:
            async with asyncio.timeout(settings.body_read_timeout_seconds):
                body = await _read_capped(
                    receive, headers.get("content-length"), settings.max_body_bytes
                )
        except ClientGone:
            return
        except TimeoutError:
            services.count_deposit("rejected")
            detail = f"body not received within {settings.body_read_timeout_seconds:g} s"
            await _answer(send, 408, _error_body("body_timeout", detail), (_CLOSE,))
            return
        if body is None:
            services.count_deposit("rejected")
            detail = f"body exceeds {settings.max_body_bytes} bytes"
            await _answer(send, 413, _error_body("body_too_large", detail))
            return
        if not services.webhook_keys:
            log.error("webhook_secret_missing")
            await _answer(send, 503, _NOT_CONFIGURED)
            return
        try:
            delivery = verify(
                services.webhook_keys,
                headers,
                body,
                now=time.time(),
                tolerance_seconds=settings.webhook_tolerance_seconds,
            )
        except SignatureError as exc:
            services.count_deposit("rejected")
            await _answer(send, 401, _error_body("invalid_signature", exc.reason))
            return
        try:
            event = parse_deposit(body)
        except InvalidDeposit as exc:
            services.count_deposit("rejected")
            await _answer(send, 422, _error_body("invalid_body", exc.message, field=exc.field))
            return

        try:
            recorded = await services.inbox.record(
                InboxItem(settings.webhook_provider, delivery.webhook_id, event, body)
            )
        except InboxFull:
            # Fast, before the request waits in line: PostgreSQL is slower than the
            # deliveries arriving, and waiting longer would only time the sender out.
            services.count_deposit("overloaded")
            await _answer(send, 503, _OVERLOADED, (_RETRY_AFTER,))
            return
        except (PoolTimeout, psycopg.Error) as exc:
            # Not durable, so not accepted: the provider must deliver again.
            log.warning("deposit_not_durable", extra={"error": repr(exc)})
            await _answer(send, 503, _UNAVAILABLE, (_RETRY_AFTER,))
            return

        outcome = recorded.outcome
        services.count_deposit(outcome)
        if outcome in _CONFLICT_DETAIL:
            log.warning(
                "deposit_conflict",
                extra={
                    "outcome": outcome,
                    "webhook_id": delivery.webhook_id,
                    "provider_reference": event.provider_reference,
                    "first_tx_id": recorded.tx_id,
                },
            )
            conflict = _error_body(outcome, _CONFLICT_DETAIL[outcome], tx_id=recorded.tx_id)
            await _answer(send, 409, conflict)
            return
        # tx_id is a UUID we generated: nothing in it needs JSON escaping.
        answer = b'{"ok":true,"tx_id":"' + recorded.tx_id.encode() + b'"}'
        if recorded.duplicate:
            durable_ms = round((time.perf_counter() - started) * 1000, 2)
            await _answer(send, 202, answer)
            # The first delivery enqueued it (or the relay will): nothing more to send.
            log.info(
                "deposit_duplicate",
                extra={"tx_id": recorded.tx_id, "outcome": outcome, "durable_ms": durable_ms},
            )
            return
        await _answer(send, 202, answer)
        # Answered first, enqueued after (a lost enqueue is found again by the relay).
        services.enqueuer.submit(recorded.tx_id, started)
