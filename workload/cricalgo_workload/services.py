"""What the webhook app holds for its lifetime: pool, Redis client, metrics, and
the loop that refreshes the inbox and queue gauges."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from .broker import AsyncCreditSender, queue_key
from .database import create_async_pool
from .inbox import InboxItem, RecordedDeposit, inbox_stats, record_deposits, server_connections
from .metrics import PoolCollector, WebhookMetrics
from .metrics_server import MetricsServer
from .readiness import PodReadiness, expected_schema_version, read_schema_version
from .settings import Settings
from .signatures import decode_secret

log = logging.getLogger("cricalgo.workload.webhook")

# A round trip to Redis costs the webhook ~100 us of CPU whatever the batch holds. Below
# saturation most batches held one message; waiting this long after the first (after its
# 202 was sent: only the worker sees the delay) lets a few more join it.
ENQUEUE_LINGER_SECONDS = 0.005


class DepositEnqueuer:
    """Sends credit messages after the response, on the event loop, in batches: whatever
    was submitted while the previous batch was on its way, or within `linger_seconds` of
    the first, goes in one round trip to Redis. Losing what is queued here (a crash) loses
    no deposit: the rows are durable and the relay enqueues them again."""

    def __init__(self, sender: AsyncCreditSender, linger_seconds: float = 0.0) -> None:
        self.sender = sender
        self.linger_seconds = linger_seconds
        self.queue: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, tx_id: str, received: float) -> None:
        self._idle.clear()
        self.queue.put_nowait((tx_id, received))

    async def run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            if self.linger_seconds and self.queue.empty():
                await asyncio.sleep(self.linger_seconds)
            while not self.queue.empty() and len(batch) < 500:
                batch.append(self.queue.get_nowait())
            try:
                await self._send(batch)
            finally:
                if self.queue.empty():
                    self._idle.set()

    async def _send(self, batch: list[tuple[str, float]]) -> None:
        started = time.perf_counter()
        try:
            await self.sender.send([tx_id for tx_id, _ in batch])
        except Exception as exc:
            for tx_id, _ in batch:
                log.warning("deposit_enqueue_failed", extra={"tx_id": tx_id, "error": repr(exc)})
            return
        now = time.perf_counter()
        enqueue_ms = round((now - started) * 1000, 2)
        if not log.isEnabledFor(logging.INFO):
            return
        # One line per deposit, built without `log.info`'s walk up the stack for the
        # caller's file and line: the JSON lines never show them, and this runs per deposit.
        for tx_id, received in batch:
            log.handle(
                log.makeRecord(
                    log.name,
                    logging.INFO,
                    __file__,
                    0,
                    "deposit_enqueued",
                    (),
                    None,
                    extra={
                        "tx_id": tx_id,
                        "enqueue_ms": enqueue_ms,
                        "since_received_ms": round((now - received) * 1000, 2),
                    },
                )
            )

    async def drain(self) -> None:
        """Wait until everything submitted has been sent or given up on."""
        await self._idle.wait()


# Concurrent inbox writes. Group commit only groups deliveries that arrive while every
# writer is busy: with one writer per pool connection (20), a statement carried one or two
# deliveries under load and the per-statement cost dominated; four keep PostgreSQL busy
# and carry a dozen or more each at saturation.
INBOX_WRITERS = 4


class InboxFull(Exception):
    """More deliveries are waiting for the inbox writers than `CRICALGO_INBOX_QUEUE_LIMIT`."""


class InboxWriter:
    """Group commit for the webhook: deliveries that arrive while a write is in flight are
    inserted together, in one statement and one commit, by the next free writer. Each
    request still gets its answer only after its row is committed. At most `limit`
    deliveries wait; beyond that `record` raises `InboxFull` at once."""

    def __init__(
        self, pool: AsyncConnectionPool, writers: int, limit: int, max_batch: int = 200
    ) -> None:
        self.pool = pool
        self.writers = writers
        self.max_batch = max_batch
        self.queue: asyncio.Queue[tuple[InboxItem, asyncio.Future[RecordedDeposit]]] = (
            asyncio.Queue(maxsize=limit)
        )

    async def record(self, item: InboxItem) -> RecordedDeposit:
        future: asyncio.Future[RecordedDeposit] = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise InboxFull from None
        return await future

    async def run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty() and len(batch) < self.max_batch:
                batch.append(self.queue.get_nowait())
            try:
                async with self.pool.connection() as conn:
                    results = await record_deposits(conn, [item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


@dataclass
class AppServices:
    settings: Settings
    metrics: WebhookMetrics
    pool: AsyncConnectionPool
    redis: aioredis.Redis
    webhook_keys: tuple[bytes, ...]
    enqueuer: DepositEnqueuer
    inbox: InboxWriter
    readiness: PodReadiness
    metrics_server: MetricsServer | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _deposit_counters: dict[str, Counter] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: Settings) -> AppServices:
        metrics = WebhookMetrics.create(settings.track, settings.version)
        pool = create_async_pool(settings)
        metrics.registry.register(
            PoolCollector(
                "webhook",
                {"track": settings.track, "version": settings.version},
                lambda: dict(pool.get_stats()),
            )
        )
        redis = aioredis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=1, socket_timeout=2
        )
        return cls(
            settings=settings,
            metrics=metrics,
            pool=pool,
            enqueuer=DepositEnqueuer(
                AsyncCreditSender(redis, settings), linger_seconds=ENQUEUE_LINGER_SECONDS
            ),
            inbox=InboxWriter(
                pool,
                writers=min(INBOX_WRITERS, settings.pool_max_size),
                limit=settings.inbox_queue_limit,
            ),
            redis=redis,
            webhook_keys=tuple(decode_secret(s) for s in settings.webhook_secrets),
            readiness=PodReadiness(expected_schema_version()),
        )

    @property
    def serves_metrics_apart(self) -> bool:
        """Whether /metrics is on its own port (`CRICALGO_WEBHOOK_METRICS_PORT`) rather than
        on the app's."""
        port = self.settings.webhook_metrics_port
        return port is not None and port != self.settings.port

    def count_deposit(self, outcome: str) -> None:
        """`cricalgo_deposits_total{outcome}` + 1 (the labelled child is looked up once)."""
        counter = self._deposit_counters.get(outcome)
        if counter is None:
            counter = self.metrics.deposits.labels(
                outcome=outcome, track=self.settings.track, version=self.settings.version
            )
            self._deposit_counters[outcome] = counter
        counter.inc()

    async def enqueue(self, tx_id: str, received: float | None = None) -> None:
        """Queue the credit message for `tx_id` (sent in the background)."""
        self.enqueuer.submit(tx_id, time.perf_counter() if received is None else received)

    async def refresh_gauges(self) -> None:
        labels = {"track": self.settings.track, "version": self.settings.version}
        async with self.pool.connection(timeout=1) as conn:
            stats = await inbox_stats(conn)
            used, limit = await server_connections(conn)
        self.metrics.inbox_pending.labels(**labels).set(stats.pending)
        self.metrics.inbox_oldest_age.labels(**labels).set(stats.oldest_pending_age_seconds)
        self.metrics.inbox_unmatched.labels(**labels).set(stats.unmatched)
        self.metrics.server_connections.labels(state="used", **labels).set(used)
        self.metrics.server_connections.labels(state="max", **labels).set(limit)
        depth = await self.redis.llen(queue_key(self.settings))
        self.metrics.queue_depth.labels(queue=self.settings.queue_name, **labels).set(depth)

    async def _gauge_loop(self) -> None:
        while True:
            try:
                await self.refresh_gauges()
            except Exception as exc:
                log.debug("gauge_refresh_failed", extra={"error": repr(exc)})
            await asyncio.sleep(self.settings.stats_interval_seconds)

    async def _schema_loop(self) -> None:
        """Read the schema version until it is the one this code needs (then never again)."""
        readiness = self.readiness
        while not readiness.schema_current:
            try:
                async with self.pool.connection(timeout=1) as conn:
                    readiness.schema_version = await read_schema_version(conn)
            except Exception as exc:
                log.debug("schema_check_failed", extra={"error": repr(exc)})
            if not readiness.schema_current:
                if readiness.schema_version is not None:
                    log.warning(
                        "schema_behind",
                        extra={
                            "schema_version": readiness.schema_version,
                            "expected": readiness.expected_schema,
                        },
                    )
                await asyncio.sleep(self.settings.stats_interval_seconds)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[AppServices]:
        """Open the pool without waiting for PostgreSQL (readiness reports it), run the
        gauge and schema loops (and the metrics port's server), and close everything on
        the way out."""
        await self.pool.open(wait=False)
        if self.serves_metrics_apart:
            assert self.settings.webhook_metrics_port is not None
            self.metrics_server = MetricsServer(
                self.metrics.registry, self.settings.host, self.settings.webhook_metrics_port
            ).start()
        self._tasks.append(asyncio.create_task(self._schema_loop()))
        self._tasks.append(asyncio.create_task(self._gauge_loop()))
        self._tasks.append(asyncio.create_task(self.enqueuer.run()))
        for _ in range(self.inbox.writers):
            self._tasks.append(asyncio.create_task(self.inbox.run()))
        self.readiness.started = True
        try:
            yield self
        finally:
            self.readiness.started = False
            # In-flight requests are done (uvicorn waits for them): send what they queued.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self.enqueuer.drain()
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._tasks.clear()
            if self.metrics_server is not None:
                self.metrics_server.stop()
                self.metrics_server = None
            await self.pool.close()
            await self.redis.aclose()
