"""Crediting deposits and registering users: the ledger side of the inbox.

Deposits are credited in batches, one transaction per batch, and a batch of one is the same
code: a message delivered twice (Dramatiq delivers at least once), or two workers racing on
it, credit once, because the inbox rows are locked and the ledger's UNIQUE (tx_id) holds.
One user's balance is updated by one transaction at a time (its row lock), and a batch adds
its entries in the order the deposits were received.

A deposit for a user that does not exist yet is parked as `unmatched`. Parking and
registration serialise on a per-user advisory lock, so a parked deposit is always seen by
the registration that follows it. Lock order, everywhere: that advisory lock first (several
in ascending key order, so two batches never wait on each other in a cycle), then the inbox
rows. Users are never deleted, so a deposit whose user exists needs no advisory lock: batches
of known users' deposits never wait for each other's locks, only for the balance rows.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection, Connection

_USER_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('cricalgo-user:' || %s, 0))"

# The advisory locks of the batch's users that do not exist (yet), in ascending key order.
# OFFSET 0 keeps the sorted subquery from being flattened into the outer query, so the
# locks are taken in the sorted order.
_UNKNOWN_USER_LOCKS = """
SELECT pg_advisory_xact_lock(k) FROM (
    SELECT DISTINCT hashtextextended('cricalgo-user:' || i.user_id, 0) AS k
    FROM deposit_inbox i
    WHERE i.tx_id = ANY(%s::uuid[])
      AND NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = i.user_id)
    ORDER BY 1 OFFSET 0) AS keys
"""

# Ledger entries in the order the deposits were received, so one user's entries (and the
# balance they add up to) follow the order of the deliveries within a batch too.
_INSERT_ENTRIES = """
INSERT INTO ledger_entries (tx_id, user_id, amount, currency)
SELECT tx_id, user_id, amount, currency FROM deposit_inbox
WHERE tx_id = ANY(%s::uuid[])
ORDER BY received_at, tx_id
ON CONFLICT (tx_id) DO NOTHING
RETURNING tx_id, user_id, amount, currency
"""

# One upsert per (user, currency): ON CONFLICT DO UPDATE may touch a row once per statement.
_ADD_TO_BALANCES = """
INSERT INTO balances (user_id, currency, amount)
SELECT b.user_id, b.currency, sum(b.amount)
FROM unnest(%s::text[], %s::text[], %s::numeric[]) AS b(user_id, currency, amount)
GROUP BY b.user_id, b.currency
ORDER BY b.user_id, b.currency
ON CONFLICT (user_id, currency) DO UPDATE
SET amount = balances.amount + EXCLUDED.amount, updated_at = now()
"""


class CreditOutcome(enum.Enum):
    CREDITED = "credited"
    ALREADY_DONE = "already_done"  # a redelivery: nothing to do
    DEAD = "dead"  # dead-lettered: left alone until it is re-driven
    PARKED = "parked"  # unknown user: waits for the registration
    UNKNOWN_TX = "unknown_tx"


def credit_deposit(conn: Connection, tx_id: str) -> CreditOutcome:
    """Credit inbox row `tx_id` exactly once (a batch of one)."""
    return credit_deposits(conn, [tx_id])[tx_id]


def credit_deposits(conn: Connection, tx_ids: Sequence[str]) -> dict[str, CreditOutcome]:
    """Credit the inbox rows `tx_ids` exactly once, in one transaction: a ledger entry each,
    the balances, the rows marked done; rows of unknown users are parked as `unmatched`.
    Returns each id's outcome (an id given twice is handled once)."""
    ids = list(dict.fromkeys(tx_ids))
    with conn.transaction():
        # A user unknown here and known below registered meanwhile: credited. One unknown
        # here and below is locked: no registration of it is under way, parking is safe.
        conn.execute(_UNKNOWN_USER_LOCKS, (ids,))
        rows = conn.execute(
            "SELECT i.tx_id::text, i.status, u.user_id IS NOT NULL FROM deposit_inbox i"
            " LEFT JOIN users u USING (user_id)"
            " WHERE i.tx_id = ANY(%s::uuid[]) ORDER BY i.tx_id FOR UPDATE OF i",
            (ids,),
        ).fetchall()
        outcomes = dict.fromkeys(ids, CreditOutcome.UNKNOWN_TX)
        to_credit: list[str] = []
        to_park: list[str] = []
        for tx_id, status, user_known in rows:
            if status == "done":
                outcomes[tx_id] = CreditOutcome.ALREADY_DONE
            elif status == "dead":
                outcomes[tx_id] = CreditOutcome.DEAD
            elif not user_known:
                outcomes[tx_id] = CreditOutcome.PARKED
                to_park.append(tx_id)
            else:
                to_credit.append(tx_id)
        if to_park:
            conn.execute(
                "UPDATE deposit_inbox SET status = 'unmatched', attempts = attempts + 1"
                " WHERE tx_id = ANY(%s::uuid[])",
                (to_park,),
            )
        if not to_credit:
            return outcomes
        inserted = conn.execute(_INSERT_ENTRIES, (to_credit,)).fetchall()
        conn.execute(
            "UPDATE deposit_inbox SET status = 'done', attempts = attempts + 1,"
            " processed_at = now(), last_error = NULL WHERE tx_id = ANY(%s::uuid[])",
            (to_credit,),
        )
        if inserted:
            # Last before the commit: other batches wait for these balance rows' locks,
            # so they are held for one statement and the commit only.
            _, users, amounts, currencies = (list(c) for c in zip(*inserted, strict=True))
            conn.execute(_ADD_TO_BALANCES, (users, currencies, amounts))
        credited = {str(row[0]) for row in inserted}
        for tx_id in to_credit:
            # A row still pending with a ledger entry: a crash between the two (cannot
            # happen in one transaction, kept as the UNIQUE's answer) is already done.
            outcomes[tx_id] = (
                CreditOutcome.CREDITED if tx_id in credited else CreditOutcome.ALREADY_DONE
            )
        return outcomes


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
