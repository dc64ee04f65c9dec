"""The deposit inbox: the durable record written before the webhook answers 202.

`record_deposits` is the webhook's one write (a group of deliveries per statement);
`pending_for_relay` is how a lost enqueue (or a Redis that lost its data) is found again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal

from psycopg import AsyncConnection, Connection

from .deposit_event import DepositEvent


class Outcome:
    """What accepting a delivery did (the `outcome` label of `cricalgo_deposits_total`)."""

    ACCEPTED = "accepted"  # a new deposit
    DUPLICATE = "duplicate"  # the same webhook id and body again
    DUPLICATE_REFERENCE = "duplicate_reference"  # the same deposit under a new webhook id
    ID_CONFLICT = "id_conflict"  # the same webhook id with another body
    REFERENCE_CONFLICT = "reference_conflict"  # another deposit reusing a provider reference


@dataclass(frozen=True)
class RecordedDeposit:
    """`tx_id` is the deposit's (for a duplicate or a conflict: the first delivery's)."""

    tx_id: str
    outcome: str = Outcome.ACCEPTED

    @property
    def duplicate(self) -> bool:
        return self.outcome != Outcome.ACCEPTED


# The group travels as one JSON parameter: encoding it is one C call (json.dumps), where
# eight array parameters cost psycopg a Python loop per element. The raw body goes as
# base64 (it need not be UTF-8); amounts go as decimal strings (exact). No conflict target:
# a row that repeats a webhook id (UNIQUE (provider, event_id)) or a provider reference
# (the unique index deposit_inbox_reference) is not inserted, and is looked up below.
_INSERT_MANY = """
INSERT INTO deposit_inbox
    (tx_id, provider, event_id, user_id, amount, currency, provider_reference, payload)
SELECT d.tx_id, d.provider, d.event_id, d.user_id, d.amount, d.currency,
       d.provider_reference, decode(d.payload, 'base64')
FROM json_to_recordset(%s::json) AS d(
    tx_id uuid, provider text, event_id text, user_id text, amount numeric, currency text,
    provider_reference text, payload text)
ON CONFLICT DO NOTHING
RETURNING tx_id
"""

_FIND_EARLIER = """
SELECT provider, event_id, provider_reference, tx_id, body_sha256,
       user_id, amount, currency, reference_duplicate_of IS NULL
FROM deposit_inbox
WHERE (provider, event_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
   OR ((provider, provider_reference) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
       AND reference_duplicate_of IS NULL)
"""


@dataclass(frozen=True)
class InboxItem:
    provider: str
    event_id: str
    event: DepositEvent
    payload: bytes


def _same_deposit(item: InboxItem, user_id: str, amount: Decimal, currency: str) -> bool:
    event = item.event
    return (event.user_id, event.amount, event.currency) == (user_id, amount, currency.strip())


async def record_deposits(conn: AsyncConnection, items: list[InboxItem]) -> list[RecordedDeposit]:
    """Insert deliveries in one statement (one commit for the group: autocommit), or find
    the rows earlier deliveries inserted and say how this one relates to them:

    - the same webhook id: a `duplicate` if the body is byte for byte the first one's, an
      `id_conflict` otherwise (a sender must never reuse an id for another message);
    - a new webhook id with a provider reference already accepted: a
      `duplicate_reference` if user, amount and currency match (the provider sent the
      deposit again under a new id), a `reference_conflict` otherwise.

    Two deliveries in the same group behave as if the second came later.
    """
    tx_ids = [str(uuid.uuid4()) for _ in items]
    rows = [
        {
            "tx_id": tx_id,
            "provider": i.provider,
            "event_id": i.event_id,
            "user_id": i.event.user_id,
            "amount": format(i.event.amount, "f"),
            "currency": i.event.currency,
            "provider_reference": i.event.provider_reference,
            "payload": base64.b64encode(i.payload).decode(),
        }
        for i, tx_id in zip(items, tx_ids, strict=True)
    ]
    cur = await conn.execute(_INSERT_MANY, (json.dumps(rows, separators=(",", ":")),))
    inserted = {str(row[0]) for row in await cur.fetchall()}
    by_event: dict[tuple[str, str], tuple[str, bytes]] = {}
    by_reference: dict[tuple[str, str], tuple[str, str, Decimal, str]] = {}
    missing = [i for i, tx in zip(items, tx_ids, strict=True) if tx not in inserted]
    if missing:
        cur = await conn.execute(
            _FIND_EARLIER,
            (
                [i.provider for i in missing],
                [i.event_id for i in missing],
                [i.provider for i in missing],
                [i.event.provider_reference for i in missing],
            ),
        )
        for (
            provider,
            event_id,
            reference,
            tx,
            digest,
            user,
            amount,
            currency,
            first,
        ) in await cur.fetchall():
            by_event[(provider, event_id)] = (str(tx), bytes(digest))
            if first:
                by_reference[(provider, reference)] = (str(tx), user, amount, currency)
    results = []
    for item, tx_id in zip(items, tx_ids, strict=True):
        if tx_id in inserted:
            results.append(RecordedDeposit(tx_id))
        elif (earlier := by_event.get((item.provider, item.event_id))) is not None:
            same = hashlib.sha256(item.payload).digest() == earlier[1]
            outcome = Outcome.DUPLICATE if same else Outcome.ID_CONFLICT
            results.append(RecordedDeposit(earlier[0], outcome))
        else:
            first_tx, user, amount, currency = by_reference[
                (item.provider, item.event.provider_reference)
            ]
            same = _same_deposit(item, user, amount, currency)
            outcome = Outcome.DUPLICATE_REFERENCE if same else Outcome.REFERENCE_CONFLICT
            results.append(RecordedDeposit(first_tx, outcome))
    return results


@dataclass(frozen=True)
class InboxStats:
    pending: int  # counted up to STATS_COUNT_CAP
    oldest_pending_age_seconds: float
    unmatched: int  # parked for an unknown user, counted up to STATS_COUNT_CAP


# The gauges count rows up to this many: past it a count(*) costs in proportion to the
# backlog (a scan of the partial index every refresh), while "more than 1,000" is all an
# alert or a dashboard needs; the oldest row's age keeps growing with the backlog.
STATS_COUNT_CAP = 1_000

_INBOX_STATS = """
SELECT
    (SELECT count(*) FROM (SELECT 1 FROM deposit_inbox WHERE status = 'pending' LIMIT %(cap)s) p),
    coalesce((SELECT extract(epoch FROM now() - received_at) FROM deposit_inbox
              WHERE status = 'pending' ORDER BY received_at LIMIT 1), 0),
    (SELECT count(*) FROM (SELECT 1 FROM deposit_inbox WHERE status = 'unmatched' LIMIT %(cap)s) u)
"""


async def inbox_stats(conn: AsyncConnection, cap: int = STATS_COUNT_CAP) -> InboxStats:
    """The inbox gauges at a cost that does not grow with the backlog: the oldest pending row
    is the first entry of the partial index, and the counts stop at `cap`."""
    cur = await conn.execute(_INBOX_STATS, {"cap": cap})
    row = await cur.fetchone()
    assert row is not None
    return InboxStats(int(row[0]), float(row[1]), int(row[2]))


async def server_connections(conn: AsyncConnection) -> tuple[int, int]:
    """(client connections open on the PostgreSQL server, its `max_connections`): every
    client's, not only this pod's, since they all share the limit."""
    cur = await conn.execute(
        "SELECT count(*), current_setting('max_connections')::int"
        " FROM pg_stat_activity WHERE backend_type = 'client backend'"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


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
    already does this in its own transaction). Rows a worker holds are skipped, not waited
    for: this statement takes no advisory lock, so waiting here could close a cycle."""
    rows = conn.execute(
        """
        UPDATE deposit_inbox SET status = 'pending', relayed_at = now()
        WHERE tx_id IN (
            SELECT d.tx_id FROM deposit_inbox d JOIN users u USING (user_id)
            WHERE d.status = 'unmatched'
            FOR UPDATE OF d SKIP LOCKED)
        RETURNING tx_id
        """
    ).fetchall()
    return [str(row[0]) for row in rows]


def release_dead(conn: Connection, tx_ids: list[str] | None) -> list[str]:
    """Return dead-lettered rows (`tx_ids`, or all of them when None) to `pending` for a
    re-drive; returns the ids released. The caller sends their messages (the relay does
    if that send is lost). Crediting is idempotent, so a re-drive cannot credit twice."""
    rows = conn.execute(
        "UPDATE deposit_inbox SET status = 'pending', relayed_at = now()"
        " WHERE status = 'dead' AND (%(all)s OR tx_id = ANY(%(ids)s::uuid[]))"
        " RETURNING tx_id",
        {"all": tx_ids is None, "ids": tx_ids or []},
    ).fetchall()
    return [str(row[0]) for row in rows]
