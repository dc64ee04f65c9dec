"""Crediting deposits and registering users: the ledger side of the inbox.

Every credit happens in one transaction that locks the inbox row, so a message delivered
twice (Dramatiq delivers at least once), or two workers racing on it, credit once.
A deposit and a registration for the same user serialise on a per-user advisory lock, so a
deposit parked as `unmatched` is always seen by the registration that follows it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection, Connection

_USER_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('cricalgo-user:' || %s, 0))"


class CreditOutcome(enum.Enum):
    CREDITED = "credited"
    ALREADY_DONE = "already_done"  # a redelivery: nothing to do
    PARKED = "parked"  # unknown user: waits for the registration
    UNKNOWN_TX = "unknown_tx"


def credit_deposit(conn: Connection, tx_id: str) -> CreditOutcome:
    """Credit inbox row `tx_id` exactly once: ledger entry, balance, row marked done."""
    with conn.transaction():
        row = conn.execute(
            "SELECT user_id, amount, currency, status FROM deposit_inbox"
            " WHERE tx_id = %s FOR UPDATE",
            (tx_id,),
        ).fetchone()
        if row is None:
            return CreditOutcome.UNKNOWN_TX
        user_id, amount, currency, status = row
        if status in ("done", "dead"):
            return CreditOutcome.ALREADY_DONE
        conn.execute(_USER_LOCK, (user_id,))
        if conn.execute("SELECT 1 FROM users WHERE user_id = %s", (user_id,)).fetchone() is None:
            conn.execute(
                "UPDATE deposit_inbox SET status = 'unmatched', attempts = attempts + 1"
                " WHERE tx_id = %s",
                (tx_id,),
            )
            return CreditOutcome.PARKED
        inserted = conn.execute(
            "INSERT INTO ledger_entries (tx_id, user_id, amount, currency)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (tx_id) DO NOTHING RETURNING entry_id",
            (tx_id, user_id, amount, currency),
        ).fetchone()
        if inserted is not None:
            conn.execute(
                "INSERT INTO balances (user_id, currency, amount) VALUES (%s, %s, %s)"
                " ON CONFLICT (user_id, currency) DO UPDATE"
                " SET amount = balances.amount + EXCLUDED.amount, updated_at = now()",
                (user_id, currency, amount),
            )
        conn.execute(
            "UPDATE deposit_inbox SET status = 'done', attempts = attempts + 1,"
            " processed_at = now(), last_error = NULL WHERE tx_id = %s",
            (tx_id,),
        )
        return CreditOutcome.CREDITED if inserted is not None else CreditOutcome.ALREADY_DONE


def mark_dead(conn: Connection, tx_id: str, error: str) -> None:
    """Record that the worker gave up on `tx_id` (the relay no longer re-enqueues it)."""
    conn.execute(
        "UPDATE deposit_inbox SET status = 'dead', last_error = %s"
        " WHERE tx_id = %s AND status = 'pending'",
        (error[:2000], tx_id),
    )


@dataclass(frozen=True)
class Registration:
    created: bool
    released_tx_ids: list[str]


async def register_user(conn: AsyncConnection, user_id: str) -> Registration:
    """Create the user and release its parked deposits back to `pending` (same transaction);
    the caller enqueues the released ids (the relay does if that enqueue is lost)."""
    async with conn.transaction():
        await conn.execute(_USER_LOCK, (user_id,))
        cur = await conn.execute(
            "INSERT INTO users (user_id) VALUES (%s) ON CONFLICT DO NOTHING RETURNING user_id",
            (user_id,),
        )
        created = await cur.fetchone() is not None
        cur = await conn.execute(
            "UPDATE deposit_inbox SET status = 'pending', relayed_at = now()"
            " WHERE user_id = %s AND status = 'unmatched' RETURNING tx_id",
            (user_id,),
        )
        released = [str(row[0]) for row in await cur.fetchall()]
    return Registration(created, released)


async def get_user(conn: AsyncConnection, user_id: str) -> dict[str, Any] | None:
    cur = await conn.execute("SELECT created_at FROM users WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    if row is None:
        return None
    cur = await conn.execute(
        "SELECT currency, amount FROM balances WHERE user_id = %s ORDER BY currency", (user_id,)
    )
    balances = {currency: _money(amount) for currency, amount in await cur.fetchall()}
    return {"user_id": user_id, "created_at": row[0].isoformat(), "balances": balances}


async def get_transaction(conn: AsyncConnection, tx_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT d.tx_id, d.provider, d.event_id, d.user_id, d.amount, d.currency,"
        " d.provider_reference, d.status, d.attempts, d.received_at, d.processed_at,"
        " l.entry_id FROM deposit_inbox d LEFT JOIN ledger_entries l USING (tx_id)"
        " WHERE d.tx_id = %s",
        (tx_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    names = [c.name for c in cur.description or []]
    data = dict(zip(names, row, strict=True))
    return {
        "tx_id": str(data["tx_id"]),
        "provider": data["provider"],
        "event_id": data["event_id"],
        "user_id": data["user_id"],
        "amount": _money(data["amount"]),
        "currency": data["currency"],
        "provider_reference": data["provider_reference"],
        "status": data["status"],
        "attempts": data["attempts"],
        "received_at": data["received_at"].isoformat(),
        "processed_at": data["processed_at"].isoformat() if data["processed_at"] else None,
        "ledger_entry_id": data["entry_id"],
    }


def _money(value: Decimal) -> str:
    return format(value.normalize(), "f")
