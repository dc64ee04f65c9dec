"""The smoke-test API behind a bearer token: register users, read users and transactions."""

from __future__ import annotations

import asyncio
import hmac
import uuid

import psycopg
from psycopg_pool import PoolTimeout
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse

from .deposit_event import USER_ID, InvalidJson, loads_strict
from .ledger import get_transaction, get_user, register_user
from .services import AppServices


def _error(status: int, error: str, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": error, "detail": detail}, status, headers=headers)


def _unauthorized(request: Request) -> JSONResponse | None:
    services: AppServices = request.app.state.services
    token = services.settings.api_token
    if token is None:
        return _error(403, "forbidden", "the API token is not configured on this server")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        return _error(
            401, "unauthorized", "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"}
        )
    return None


# A registration body is `{"user_id": "..."}`: a few dozen bytes.
MAX_API_BODY_BYTES = 4096


class _BodyRefused(Exception):
    def __init__(self, response: JSONResponse) -> None:
        self.response = response


async def _small_body(request: Request) -> bytes:
    """The body, read within the webhook's body timeout and at most `MAX_API_BODY_BYTES`
    (the API sits behind a token, but a token holder's mistake should not cost memory)."""
    services: AppServices = request.app.state.services
    timeout = services.settings.body_read_timeout_seconds
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_API_BODY_BYTES:
                    detail = f"body exceeds {MAX_API_BODY_BYTES} bytes"
                    raise _BodyRefused(_error(413, "body_too_large", detail))
    except TimeoutError:
        detail = f"body not received within {timeout:g} s"
        raise _BodyRefused(_error(408, "body_timeout", detail, connection="close")) from None
    return bytes(body)


def _unavailable() -> JSONResponse:
    return _error(503, "unavailable", "database unavailable, retry later", **{"Retry-After": "5"})


async def create_user(request: Request) -> JSONResponse:
    if (denied := _unauthorized(request)) is not None:
        return denied
    services: AppServices = request.app.state.services
    try:
        data = loads_strict(await _small_body(request))
    except _BodyRefused as refused:
        return refused.response
    except InvalidJson as exc:
        return _error(422, "invalid_body", f"body is not strict JSON: {exc}")
    user_id = data.get("user_id") if isinstance(data, dict) else None
    if not isinstance(user_id, str) or not USER_ID.fullmatch(user_id):
        return JSONResponse(
            {
                "ok": False,
                "error": "invalid_body",
                "field": "user_id",
                "detail": "must be 1-64 characters of A-Z a-z 0-9 _ . : @ -",
            },
            422,
        )
    try:
        async with services.pool.connection() as conn:
            registration = await register_user(conn, user_id)
    except (PoolTimeout, psycopg.Error):
        return _unavailable()
    released = registration.released_tx_ids

    async def enqueue_released() -> None:
        for tx_id in released:
            await services.enqueue(tx_id)

    return JSONResponse(
        {
            "ok": True,
            "user_id": user_id,
            "created": registration.created,
            "released_deposits": len(released),
        },
        201 if registration.created else 200,
        background=BackgroundTask(enqueue_released) if released else None,
    )


async def read_user(request: Request) -> JSONResponse:
    if (denied := _unauthorized(request)) is not None:
        return denied
    services: AppServices = request.app.state.services
    user_id = request.path_params["user_id"]
    if not USER_ID.fullmatch(user_id):
        return _error(404, "not_found", "no such user")
    try:
        async with services.pool.connection() as conn:
            user = await get_user(conn, user_id)
    except (PoolTimeout, psycopg.Error):
        return _unavailable()
    if user is None:
        return _error(404, "not_found", "no such user")
    return JSONResponse(user)


async def read_transaction(request: Request) -> JSONResponse:
    if (denied := _unauthorized(request)) is not None:
        return denied
    services: AppServices = request.app.state.services
    try:
        tx_id = str(uuid.UUID(request.path_params["tx_id"]))
    except ValueError:
        return _error(404, "not_found", "no such transaction")
    try:
        async with services.pool.connection() as conn:
            transaction = await get_transaction(conn, tx_id)
    except (PoolTimeout, psycopg.Error):
        return _unavailable()
    if transaction is None:
        return _error(404, "not_found", "no such transaction")
    return JSONResponse(transaction)
