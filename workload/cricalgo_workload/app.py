"""The webhook application: routes, middleware and lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .api import create_user, read_transaction, read_user
from .faults import FaultInjectionMiddleware
from .http_metrics import RequestMetricsMiddleware
from .request_limits import HeaderLimitsMiddleware
from .services import AppServices
from .settings import Settings
from .webhook import DepositWebhook

WEBHOOK_PATH = "/api/v1/webhooks/deposit"


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def readyz(request: Request) -> JSONResponse:
    """The pod itself: started, pool open, schema seen at the version this code needs.
    Never PostgreSQL's or Redis's outage (see `readiness`)."""
    services: AppServices = request.app.state.services
    ready, checks = services.readiness.report(pool_open=not services.pool.closed)
    return JSONResponse({"ok": ready, "checks": checks}, 200 if ready else 503)


async def metrics(request: Request) -> Response:
    services: AppServices = request.app.state.services
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"ok": False, "error": "http_error", "detail": exc.detail},
        exc.status_code,
        headers=exc.headers,
    )


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the app; `settings` default to the environment."""
    settings = settings or Settings.from_env()
    services = AppServices.create(settings)
    webhook_middleware = []
    if settings.fault_error_rate or settings.fault_latency_ms:
        webhook_middleware.append(
            Middleware(
                FaultInjectionMiddleware,
                error_rate=settings.fault_error_rate,
                latency_ms=settings.fault_latency_ms,
            )
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with services.running():
            yield

    # /metrics is served on the metrics port instead when that is another one.
    metrics_routes = [] if services.serves_metrics_apart else [Route("/metrics", metrics)]
    app = Starlette(
        routes=[
            Route(
                WEBHOOK_PATH,
                DepositWebhook(services),
                methods=["POST"],
                middleware=webhook_middleware,
            ),
            Route("/api/v1/users", create_user, methods=["POST"]),
            Route("/api/v1/users/{user_id}", read_user, methods=["GET"]),
            Route("/api/v1/transactions/{tx_id}", read_transaction, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            *metrics_routes,
        ],
        middleware=[
            Middleware(
                RequestMetricsMiddleware,
                requests=services.metrics.requests,
                duration=services.metrics.request_duration,
                track=settings.track,
                version=settings.version,
            ),
            Middleware(
                HeaderLimitsMiddleware,
                max_count=settings.max_header_count,
                max_bytes=settings.max_header_bytes,
            ),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.services = services
    return app
