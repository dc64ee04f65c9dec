"""Versioned, idempotent migrations on a real PostgreSQL."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from cricalgo_workload.migrations import load_migrations, migrate


def test_migrations_apply_once_even_concurrently(postgres_server: Any) -> None:
    dsn = postgres_server.create_database(f"mig_{uuid.uuid4().hex[:10]}")
    versions = [m.version for m in load_migrations()]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(migrate, [dsn] * 3))
    assert sorted(results, key=len) == [[], [], versions]
    assert migrate(dsn) == []
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
    assert [r[0] for r in rows] == versions
    assert {"users", "balances", "deposit_inbox", "ledger_entries"} <= tables


def test_cli_migrate(postgres_server: Any, monkeypatch: Any) -> None:
    from cricalgo_workload.cli import main

    dsn = postgres_server.create_database(f"mig_{uuid.uuid4().hex[:10]}")
    monkeypatch.setenv("DATABASE_URL", dsn)
    assert main(["migrate"]) == 0
    assert main(["migrate"]) == 0
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (
            len(load_migrations()),
        )
