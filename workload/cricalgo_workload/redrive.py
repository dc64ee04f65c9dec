"""`cricalgo-workload redrive`: send dead-lettered deposits to the workers again, once the
cause of their failure is fixed. The rows go back to `pending` and their credit messages
are sent; if the send is lost, the relay sends them (they are pending like any other)."""

from __future__ import annotations

import psycopg

from .broker import close_broker, create_broker, credit_queue
from .inbox import release_dead
from .settings import Settings


def redrive(settings: Settings, tx_ids: list[str] | None) -> list[str]:
    """Re-drive `tx_ids` (None: every dead-lettered deposit); returns those released."""
    with psycopg.connect(
        settings.database_url, autocommit=True, connect_timeout=settings.db_connect_timeout_seconds
    ) as conn:
        released = release_dead(conn, tx_ids)
    broker = create_broker(settings)
    try:
        credit_queue(broker, settings).send(released)
    finally:
        close_broker(broker)
    return released
