"""PostgreSQL connection pools (psycopg_pool) configured from the environment.

`DB_POOL_SIZE` connections are kept open, up to `DB_MAX_OVERFLOW` more are opened under
load; a connection idle for a second or more is checked before it is handed out (pre-ping)
so a PostgreSQL restart costs failed checks, not failed requests; connections are recycled
after `DB_POOL_RECYCLE` seconds; waiting for one gives up after `DB_POOL_TIMEOUT` seconds.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from psycopg import AsyncConnection, Connection
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from .settings import Settings

# A connection returned to the pool less than this long ago is handed out without a ping
# (HikariCP's "alive bypass window"): it was working a moment ago, and the ping would cost
# a round trip per request under load. Idle connections are always pinged.
PING_AFTER_IDLE_SECONDS = 1.0


class PrePing:
    """`check`/`reset` callbacks for psycopg_pool: ping a connection before handing it out
    unless it was returned within the last `PING_AFTER_IDLE_SECONDS`."""

    def __init__(self, idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self._returned: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()

    def _recently_used(self, conn: object) -> bool:
        returned = self._returned.get(conn)
        return returned is not None and time.monotonic() - returned < self.idle_seconds

    async def check_async(self, conn: AsyncConnection) -> None:
        if not self._recently_used(conn):
            await AsyncConnectionPool.check_connection(conn)

    async def returned_async(self, conn: AsyncConnection) -> None:
        self._returned[conn] = time.monotonic()

    def check(self, conn: Connection) -> None:
        if not self._recently_used(conn):
            ConnectionPool.check_connection(conn)

    def returned(self, conn: Connection) -> None:
        self._returned[conn] = time.monotonic()


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
    ping = PrePing()
    return AsyncConnectionPool(
        settings.database_url,
        min_size=settings.db_pool_size,
        max_size=settings.pool_max_size,
        timeout=settings.db_pool_timeout_seconds,
        max_lifetime=settings.db_pool_recycle_seconds,
        check=ping.check_async,
        reset=ping.returned_async,
        kwargs=_connection_kwargs(settings, statement_timeout_ms=10_000),
        connection_class=AsyncConnection,
        name=name,
        open=False,
    )


def create_pool(settings: Settings, name: str = "worker") -> ConnectionPool:
    """The worker's pool; its statement timeout follows the actor's time limit."""
    ping = PrePing()
    return ConnectionPool(
        settings.database_url,
        min_size=settings.db_pool_size,
        max_size=settings.pool_max_size,
        timeout=settings.db_pool_timeout_seconds,
        max_lifetime=settings.db_pool_recycle_seconds,
        check=ping.check,
        reset=ping.returned,
        kwargs=_connection_kwargs(settings, settings.statement_timeout_ms),
        connection_class=Connection,
        name=name,
        open=False,
    )
