"""PostgreSQL connection pools (psycopg_pool) configured from the environment.

`DB_POOL_SIZE` connections are kept open, up to `DB_MAX_OVERFLOW` more are opened under
load; each connection is checked before it is handed out (pre-ping) so a PostgreSQL restart
costs failed checks, not failed requests; connections are recycled after `DB_POOL_RECYCLE`
seconds; waiting for one gives up after `DB_POOL_TIMEOUT` seconds.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, Connection
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from .settings import Settings


def _connection_kwargs(settings: Settings, statement_timeout_ms: int | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "connect_timeout": settings.db_connect_timeout_seconds,
        "application_name": f"cricalgo-workload-{settings.track}",
    }
    if statement_timeout_ms is not None:
        kwargs["options"] = f"-c statement_timeout={statement_timeout_ms}"
    return kwargs


def create_async_pool(settings: Settings, name: str = "webhook") -> AsyncConnectionPool:
    """The webhook's pool; not opened (call `await pool.open(wait=False)`)."""
    return AsyncConnectionPool(
        settings.database_url,
        min_size=settings.db_pool_size,
        max_size=settings.pool_max_size,
        timeout=settings.db_pool_timeout_seconds,
        max_lifetime=settings.db_pool_recycle_seconds,
        check=AsyncConnectionPool.check_connection,
        kwargs=_connection_kwargs(settings, statement_timeout_ms=10_000),
        connection_class=AsyncConnection,
        name=name,
        open=False,
    )


def create_pool(settings: Settings, name: str = "worker") -> ConnectionPool:
    """The worker's pool; its statement timeout follows the actor's time limit."""
    return ConnectionPool(
        settings.database_url,
        min_size=settings.db_pool_size,
        max_size=settings.pool_max_size,
        timeout=settings.db_pool_timeout_seconds,
        max_lifetime=settings.db_pool_recycle_seconds,
        check=ConnectionPool.check_connection,
        kwargs=_connection_kwargs(settings, settings.statement_timeout_ms),
        connection_class=Connection,
        name=name,
        open=False,
    )
