"""The webhook pod's readiness: about the pod itself, never about a dependency's outage.

A pod is ready once it has started, its pool is open, and it has seen the database schema
at (or past) the version its code expects. Once seen, the schema is not read again: a
PostgreSQL or Redis outage afterwards is handled by the requests themselves (503 +
Retry-After while PostgreSQL is away, the inbox while Redis is), so the pod stays in its
Service and the sender gets the pod's own answer, not the mesh's "no healthy upstream".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from .migrations import load_migrations


def expected_schema_version() -> int:
    """The newest migration shipped with this code."""
    return max(m.version for m in load_migrations())


async def read_schema_version(conn: AsyncConnection) -> int:
    """The newest migration applied to the database (0 if none)."""
    cur = await conn.execute(
        "SELECT coalesce(max(version), 0) FROM schema_migrations"
        if await _has_migrations_table(conn)
        else "SELECT 0"
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _has_migrations_table(conn: AsyncConnection) -> bool:
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await cur.fetchone()
    return bool(row and row[0])


@dataclass
class PodReadiness:
    """What `/readyz` reports. `schema_version` is None until the schema has been read."""

    expected_schema: int
    started: bool = False
    schema_version: int | None = None

    @property
    def schema_current(self) -> bool:
        # A newer schema is fine: during a canary the new version migrates first, and
        # migrations keep the previous version working.
        return self.schema_version is not None and self.schema_version >= self.expected_schema

    def report(self, pool_open: bool) -> tuple[bool, dict[str, Any]]:
        """(ready, checks) for the response body."""
        if self.schema_version is None:
            schema = "not read yet (is the database reachable?)"
        elif self.schema_current:
            schema = "ok"
        else:
            schema = (
                f"version {self.schema_version}, this code needs {self.expected_schema}:"
                " run `cricalgo-workload migrate`"
            )
        checks = {
            "started": "ok" if self.started else "starting",
            "pool": "ok" if pool_open else "closed",
            "schema": schema,
        }
        return all(value == "ok" for value in checks.values()), checks
