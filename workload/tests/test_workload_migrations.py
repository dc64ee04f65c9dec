"""Versioned, idempotent migrations on a real PostgreSQL."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
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


def test_delivery_identity_migration_keeps_earlier_repeated_references(
    postgres_server: Any,
) -> None:
    """Rows accepted before the reference became unique may repeat one: the migration
    keeps them all, names the first in the later ones, and refuses new repeats."""
    dsn = postgres_server.create_database(f"mig_{uuid.uuid4().hex[:10]}")
    initial = load_migrations()[0]
    insert = (
        "INSERT INTO deposit_inbox (tx_id, provider, event_id, user_id, amount, currency,"
        " provider_reference, payload, received_at)"
        " VALUES (%s, 'p', %s, 'alice', 1, 'EUR', %s, %s, now() - make_interval(secs => %s))"
    )
    first, repeat, other = (str(uuid.uuid4()) for _ in range(3))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(initial.sql.encode())
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (1, 'initial')")
        conn.execute(insert, (first, "e1", "ref-1", b"one", 30))
        conn.execute(insert, (repeat, "e2", "ref-1", b"two", 20))
        conn.execute(insert, (other, "e3", "ref-2", b"three", 10))

    assert 2 in migrate(dsn)

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tx_id::text, reference_duplicate_of::text, body_sha256 = sha256(payload)"
            " FROM deposit_inbox ORDER BY received_at"
        ).fetchall()
        assert rows == [(first, None, True), (repeat, first, True), (other, None, True)]
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, (str(uuid.uuid4()), "e4", "ref-1", b"four", 0))
