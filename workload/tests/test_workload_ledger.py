"""Crediting in batches against the real PostgreSQL: exactly once, parking, the order of one
user's entries, and the lock order shared with registration."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg
from cricalgo_workload.inbox import inbox_stats
from cricalgo_workload.ledger import CreditOutcome, credit_deposit, credit_deposits, register_user


def add_deposit(
    dsn: str, user_id: str, amount: str = "10", status: str = "pending", seconds_ago: float = 0
) -> str:
    tx_id = str(uuid.uuid4())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO deposit_inbox (tx_id, provider, event_id, user_id, amount, currency,"
            " provider_reference, payload, status, received_at)"
            " VALUES (%s, 'test', %s, %s, %s, 'EUR', %s, '\\x'::bytea, %s,"
            " now() - make_interval(secs => %s))",
            # A provider reference names one deposit (unique per provider).
            (tx_id, tx_id, user_id, amount, f"ref-{tx_id}", status, seconds_ago),
        )
    return tx_id


def add_user(dsn: str, user_id: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO users (user_id) VALUES (%s)", (user_id,))


def ledger(dsn: str) -> list[tuple[str, str, Decimal]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT tx_id::text, user_id, amount FROM ledger_entries ORDER BY entry_id"
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def balances(dsn: str) -> dict[str, Decimal]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT user_id, amount FROM balances").fetchall())


def statuses(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT tx_id::text, status FROM deposit_inbox").fetchall())


def test_a_batch_credits_parks_and_skips_each_row_as_its_own_message_would(
    database_url: str,
) -> None:
    add_user(database_url, "alice")
    add_user(database_url, "bob")
    first = add_deposit(database_url, "alice", "1.5", seconds_ago=3)
    second = add_deposit(database_url, "bob", "2", seconds_ago=2)
    third = add_deposit(database_url, "alice", "4", seconds_ago=1)
    parked = add_deposit(database_url, "nobody", "8")
    done = add_deposit(database_url, "alice", "16")
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert credit_deposit(conn, done) is CreditOutcome.CREDITED
        unknown = str(uuid.uuid4())
        # Out of order, with a redelivery of `third` inside the batch itself.
        outcomes = credit_deposits(conn, [third, parked, second, unknown, first, third, done])

    assert outcomes == {
        first: CreditOutcome.CREDITED,
        second: CreditOutcome.CREDITED,
        third: CreditOutcome.CREDITED,
        parked: CreditOutcome.PARKED,
        done: CreditOutcome.ALREADY_DONE,
        unknown: CreditOutcome.UNKNOWN_TX,
    }
    # Entries follow the order the deposits were received, not the order of the batch.
    assert [tx for tx, _, _ in ledger(database_url)] == [done, first, second, third]
    assert balances(database_url) == {"alice": Decimal("21.5"), "bob": Decimal("2")}
    assert statuses(database_url)[parked] == "unmatched"
    assert {statuses(database_url)[tx] for tx in (first, second, third, done)} == {"done"}


def test_concurrent_batches_sharing_deposits_credit_each_once(database_url: str) -> None:
    users = [f"u{i}" for i in range(5)]
    for user in users:
        add_user(database_url, user)
    tx_ids = [add_deposit(database_url, users[i % 5], "1") for i in range(60)]
    start = threading.Barrier(6)

    def credit(offset: int) -> dict[str, CreditOutcome]:
        # Every batch overlaps the others, each in its own order.
        batch = tx_ids[offset * 10 :] + tx_ids[: offset * 10]
        with psycopg.connect(database_url, autocommit=True) as conn:
            start.wait()
            return credit_deposits(conn, batch[:30])

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(credit, range(6)))

    credited = [tx for result in results for tx, o in result.items() if o is CreditOutcome.CREDITED]
    assert sorted(credited) == sorted(tx_ids)
    assert len(ledger(database_url)) == 60
    assert balances(database_url) == dict.fromkeys(users, Decimal(12))


def _wait_until_blocked(dsn: str, application_name: str) -> None:
    deadline = time.monotonic() + 10
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE application_name = %s",
                (application_name,),
            ).fetchone()
            if row is not None and row[0] == "Lock":
                return
            time.sleep(0.02)
    raise AssertionError(f"{application_name} never waited for a lock")


async def test_registration_and_a_redelivered_parked_deposit_never_deadlock(
    database_url: str,
) -> None:
    # The worker takes the user's advisory lock before the inbox row, as registration does.
    # The other order deadlocked: the worker held the parked row and waited for the user's
    # lock, while registration held that lock and waited to release the row.
    tx_id = add_deposit(database_url, "erin", "3", status="unmatched")

    def redeliver() -> CreditOutcome:
        with psycopg.connect(database_url, autocommit=True, application_name="redelivery") as conn:
            return credit_deposit(conn, tx_id)

    with ThreadPoolExecutor(1) as pool:
        connect = psycopg.AsyncConnection.connect(database_url, autocommit=True)
        async with await connect as conn, conn.transaction():
            # Registration has taken the user's lock when the redelivery arrives.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('cricalgo-user:' || %s, 0))",
                ("erin",),
            )
            worker = asyncio.wrap_future(pool.submit(redeliver))
            await asyncio.to_thread(_wait_until_blocked, database_url, "redelivery")
            # The rest of the registration, in the same transaction (a savepoint).
            registration = await register_user(conn, "erin")
        outcome = await worker

    assert registration.created
    assert registration.released_tx_ids == [tx_id]
    assert outcome is CreditOutcome.CREDITED
    assert ledger(database_url) == [(tx_id, "erin", Decimal("3"))]


async def test_inbox_gauges_count_parked_rows_and_stop_counting_at_the_cap(
    database_url: str,
) -> None:
    for seconds_ago in (30, 20, 10, 5, 1):
        add_deposit(database_url, "dora", seconds_ago=seconds_ago)
    add_deposit(database_url, "nobody", status="unmatched")
    add_deposit(database_url, "nobody", status="unmatched")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        full = await inbox_stats(conn)
        capped = await inbox_stats(conn, cap=3)
    assert (full.pending, full.unmatched) == (5, 2)
    assert (capped.pending, capped.unmatched) == (3, 2)
    assert 30 <= capped.oldest_pending_age_seconds < 60
