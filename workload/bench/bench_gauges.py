"""The inbox gauges' cost against the size of the backlog: the query the webhook runs every
`CRICALGO_STATS_INTERVAL_SECONDS`, next to a plain count(*) over the pending rows (the
baseline), with 1,000 and with 1,000,000 pending rows. Not a test: prints a table."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from cricalgo_localstack.services import PostgresServer
from cricalgo_workload.inbox import inbox_stats
from cricalgo_workload.migrations import migrate

COUNT_ALL = (
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(received_at)), 0)"
    " FROM deposit_inbox WHERE status = 'pending'"
)


def add_pending(dsn: str, count: int, start: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO deposit_inbox (tx_id, provider, event_id, user_id, amount, currency,"
            " provider_reference, payload)"
            " SELECT gen_random_uuid(), 'bench', 'e' || g, 'user' || (g %% 100), 5, 'EUR',"
            " 'r' || g, '\\x'::bytea FROM generate_series(%s::int, %s::int) g",
            (start, start + count - 1),
        )
        conn.execute("VACUUM ANALYZE deposit_inbox")


async def timings(dsn: str, runs: int) -> tuple[float, float]:
    """Median ms of the baseline count(*) and of the gauges' query."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        baseline, gauges = [], []
        for _ in range(runs):
            started = time.perf_counter()
            await (await conn.execute(COUNT_ALL)).fetchone()
            baseline.append(time.perf_counter() - started)
            started = time.perf_counter()
            await inbox_stats(conn)
            gauges.append(time.perf_counter() - started)
    return statistics.median(baseline) * 1000, statistics.median(gauges) * 1000


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    data = Path(tempfile.mkdtemp(prefix="cricalgo-bench-gauges-"))
    postgres = PostgresServer(data)
    postgres.start()
    rows = []
    try:
        dsn = postgres.create_database("gauges")
        migrate(dsn)
        total = 0
        for size in (1_000, 100_000, 1_000_000):
            add_pending(dsn, size - total, total + 1)
            total = size
            rows.append((size, *asyncio.run(timings(dsn, runs))))
    finally:
        postgres.remove_data()
        shutil.rmtree(data, ignore_errors=True)
    print(f"\nInbox gauges, median of {runs} refreshes (ms)\n")
    print("| pending rows | count(*) baseline | gauges query | gauges / baseline |")
    print("|---:|---:|---:|---:|")
    for size, baseline, gauges in rows:
        print(f"| {size:,} | {baseline:.2f} | {gauges:.2f} | {gauges / baseline:.2f} |")
    (small, _, small_g), (large, _, large_g) = rows[0], rows[-1]
    print(f"\ngauges query at {large:,} vs at {small:,} rows: {large_g / small_g:.2f}x")


if __name__ == "__main__":
    main()
