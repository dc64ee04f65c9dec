"""The deposit inbox: the durable record written before the webhook answers 202.

`record_deposit` is the webhook's one write; `pending_for_relay` is how a lost enqueue (or
a Redis that lost its data) is found again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from psycopg import AsyncConnection, Connection

from .deposit_event import DepositEvent

_INSERT = """
INSERT INTO deposit_inbox
    (tx_id, provider, event_id, user_id, amount, currency, provider_reference, payload)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (provider, event_id) DO NOTHING
RETURNING tx_id
"""
_EXISTING = "SELECT tx_id FROM deposit_inbox WHERE provider = %s AND event_id = %s"


@dataclass(frozen=True)
class RecordedDeposit:
    tx_id: str
    duplicate: bool


async def record_deposit(
    conn: AsyncConnection, provider: str, event_id: str, event: DepositEvent, payload: bytes
) -> RecordedDeposit:
    """Insert the event (committed on return: the connection is in autocommit) or find the
    row an earlier delivery of the same event inserted."""
    tx_id = uuid.uuid4()
    cur = await conn.execute(
        _INSERT,
        (
            tx_id,
            provider,
            event_id,
            event.user_id,
            event.amount,
            event.currency,
            event.provider_reference,
            payload,
        ),
    )
    row = await cur.fetchone()
    if row is not None:
        return RecordedDeposit(str(row[0]), duplicate=False)
    # ON CONFLICT waited for the other inserter to commit, so a new statement sees its row.
    cur = await conn.execute(_EXISTING, (provider, event_id))
    row = await cur.fetchone()
    if row is None:  # pragma: no cover - only if the row was deleted in between
        raise RuntimeError(f"inbox row for event {event_id!r} vanished")
    return RecordedDeposit(str(row[0]), duplicate=True)


@dataclass(frozen=True)
class InboxStats:
    pending: int
    oldest_pending_age_seconds: float


async def inbox_stats(conn: AsyncConnection) -> InboxStats:
    cur = await conn.execute(
        "SELECT count(*), coalesce(extract(epoch FROM now() - min(received_at)), 0)"
        " FROM deposit_inbox WHERE status = 'pending'"
    )
    row = await cur.fetchone()
    assert row is not None
    return InboxStats(int(row[0]), float(row[1]))


def pending_for_relay(conn: Connection, older_than_seconds: float, limit: int = 500) -> list[str]:
    """Claim pending rows nobody has enqueued (or re-enqueued) for `older_than_seconds`,
    stamping them so concurrent relays and the next round skip them for that long."""
    rows = conn.execute(
        """
        UPDATE deposit_inbox SET relayed_at = now()
        WHERE tx_id IN (
            SELECT tx_id FROM deposit_inbox
            WHERE status = 'pending'
              AND coalesce(relayed_at, received_at) < now() - make_interval(secs => %s)
            ORDER BY received_at
            LIMIT %s
            FOR UPDATE SKIP LOCKED)
        RETURNING tx_id
        """,
        (older_than_seconds, limit),
    ).fetchall()
    return [str(row[0]) for row in rows]


def rematch_unmatched(conn: Connection) -> list[str]:
    """Return parked deposits whose user now exists to `pending` (a safety net: registration
    already does this in its own transaction)."""
    rows = conn.execute(
        """
        UPDATE deposit_inbox d SET status = 'pending', relayed_at = now()
        FROM users u
        WHERE d.status = 'unmatched' AND u.user_id = d.user_id
        RETURNING d.tx_id
        """
    ).fetchall()
    return [str(row[0]) for row in rows]
