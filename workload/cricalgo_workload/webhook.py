"""`POST /api/v1/webhooks/deposit`: verify, validate, make durable, answer 202, enqueue."""

from __future__ import annotations

import logging
import time

import psycopg
from psycopg_pool import PoolTimeout
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse

from .deposit_event import InvalidDeposit, parse_deposit
from .inbox import InboxItem
from .services import AppServices
from .signatures import SignatureError, verify

log = logging.getLogger("cricalgo.workload.webhook")

RETRY_AFTER_SECONDS = 5


def _error(status: int, error: str, detail: str, **extra: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": error, "detail": detail, **extra}, status)


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it exceeds `limit` (the rest is never read)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def deposit_webhook(request: Request) -> JSONResponse:
    started = time.perf_counter()
    services: AppServices = request.app.state.services
    settings = services.settings

    body = await _read_capped(request, settings.max_body_bytes)
    if body is None:
        services.count_deposit("rejected")
        return _error(413, "body_too_large", f"body exceeds {settings.max_body_bytes} bytes")
    if not services.webhook_keys:
        log.error("webhook_secret_missing")
        return _error(503, "not_configured", "no webhook secret configured")
    try:
        delivery = verify(
            services.webhook_keys,
            request.headers,
            body,
            now=time.time(),
            tolerance_seconds=settings.webhook_tolerance_seconds,
        )
    except SignatureError as exc:
        services.count_deposit("rejected")
        return _error(401, "invalid_signature", exc.reason)
    try:
        event = parse_deposit(body)
    except InvalidDeposit as exc:
        services.count_deposit("rejected")
        return _error(422, "invalid_body", exc.message, field=exc.field)

    try:
        recorded = await services.inbox.record(
            InboxItem(settings.webhook_provider, delivery.webhook_id, event, body)
        )
    except (PoolTimeout, psycopg.Error) as exc:
        # Not durable, so not accepted: the provider must deliver again.
        log.warning("deposit_not_durable", extra={"error": repr(exc)})
        return JSONResponse(
            {"ok": False, "error": "unavailable", "detail": "database unavailable, retry later"},
            503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    services.count_deposit("duplicate" if recorded.duplicate else "accepted")
    durable_ms = round((time.perf_counter() - started) * 1000, 2)
    payload = {"ok": True, "tx_id": recorded.tx_id}
    if recorded.duplicate:
        # The first delivery enqueued it (or the relay will): nothing more to send.
        log.info("deposit_duplicate", extra={"tx_id": recorded.tx_id, "durable_ms": durable_ms})
        return JSONResponse(payload, 202)
    return JSONResponse(
        payload,
        202,
        # Answered first, enqueued after (a lost enqueue is found again by the relay).
        background=BackgroundTask(services.enqueue, recorded.tx_id, started),
    )
