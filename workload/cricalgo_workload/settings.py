"""Workload configuration, read from the environment in one place.

Defaults suit the local stack; a bad value fails at start-up with a message naming the
variable, never later in a request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .signatures import SECRET_PREFIX, decode_secret


class SettingsError(ValueError):
    """An environment variable holds a value the workload cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(
    env: Mapping[str, str], name: str, default: float, minimum: float, maximum: float
) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the webhook, the worker and `migrate` read from the environment."""

    database_url: str = "postgresql://postgres@127.0.0.1:5432/cricalgo"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Space-separated `whsec_...` secrets: more than one while a secret is being rotated.
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    webhook_provider: str = "default"
    webhook_tolerance_seconds: int = 300
    max_body_bytes: int = 256 * 1024
    # A client that has not sent its whole body by then gets 408 (a slow sender ties up a
    # request slot and, behind it, nothing else).
    body_read_timeout_seconds: float = 10.0
    # Request headers beyond these get 431 (every route).
    max_header_count: int = 64
    max_header_bytes: int = 16 * 1024
    # Deliveries waiting for the inbox writers; beyond this the webhook answers 503 at once.
    inbox_queue_limit: int = 1000
    api_token: str | None = field(default=None, repr=False)
    # psycopg_pool: min_size = pool_size, max_size = pool_size + max_overflow. Small: every
    # pod of both tracks holds its own pool (docs/workload.md, "Connection budget").
    db_pool_size: int = 1
    db_max_overflow: int = 1
    db_pool_timeout_seconds: float = 2.0
    db_pool_recycle_seconds: float = 1800.0
    db_connect_timeout_seconds: int = 3
    # The queue the webhook and the relay send to, and the queues the worker consumes
    # (`CRICALGO_QUEUES`, space- or comma-separated; empty: `queue_name` alone).
    queue_name: str = "deposits"
    worker_queues: tuple[str, ...] = ()
    redis_namespace: str = "dramatiq"
    task_time_limit_ms: int = 30_000
    task_max_retries: int = 8
    task_min_backoff_ms: int = 500
    task_max_backoff_ms: int = 60_000
    worker_threads: int = 8
    worker_heartbeat_timeout_ms: int = 30_000
    # Pending inbox rows older than this are enqueued again (a lost enqueue, a lost Redis).
    relay_after_seconds: float = 15.0
    relay_interval_seconds: float = 5.0
    # A row whose message was sent less than this long ago and has not finished (queued,
    # running, waiting for a retry) is not sent again; past it, it is (a lost message).
    relay_queued_grace_seconds: float = 900.0
    track: str = "stable"
    version: str = "dev"
    host: str = "127.0.0.1"
    port: int = 8000
    metrics_port: int = 9191
    # The webhook serves /metrics on its own port unless this names another one.
    webhook_metrics_port: int | None = None
    stats_interval_seconds: float = 5.0
    fault_error_rate: float = 0.0
    fault_latency_ms: int = 0
    log_level: str = "INFO"

    @property
    def pool_max_size(self) -> int:
        return self.db_pool_size + self.db_max_overflow

    @property
    def queues(self) -> tuple[str, ...]:
        """Every queue the worker consumes, `queue_name` first."""
        return tuple(dict.fromkeys((self.queue_name, *self.worker_queues)))

    @property
    def statement_timeout_ms(self) -> int:
        """PostgreSQL's per-statement limit for the worker: half the actor's time limit, so a
        stuck statement is cancelled by the server before Dramatiq's TimeLimit fires (that
        one cannot interrupt a thread blocked in libpq)."""
        return max(100, self.task_time_limit_ms // 2)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        secrets = tuple(env.get("CRICALGO_WEBHOOK_SECRET", "").split())
        for number, secret in enumerate(secrets, start=1):
            if not secret.startswith(SECRET_PREFIX):
                raise SettingsError("CRICALGO_WEBHOOK_SECRET entries must start with whsec_")
            try:
                decode_secret(secret)
            except ValueError as exc:
                raise SettingsError(f"CRICALGO_WEBHOOK_SECRET entry {number}: {exc}") from None
        d = cls()
        queue_name = env.get("CRICALGO_QUEUE", d.queue_name)
        worker_queues = tuple(env.get("CRICALGO_QUEUES", "").replace(",", " ").split())
        return cls(
            database_url=env.get("DATABASE_URL", d.database_url),
            redis_url=env.get("REDIS_URL", d.redis_url),
            webhook_secrets=secrets,
            webhook_provider=env.get("CRICALGO_WEBHOOK_PROVIDER", d.webhook_provider),
            webhook_tolerance_seconds=_int(
                env, "CRICALGO_WEBHOOK_TOLERANCE_SECONDS", d.webhook_tolerance_seconds, 1
            ),
            max_body_bytes=_int(env, "CRICALGO_MAX_BODY_BYTES", d.max_body_bytes, 1),
            body_read_timeout_seconds=_float(
                env, "CRICALGO_BODY_READ_TIMEOUT_SECONDS", d.body_read_timeout_seconds, 0.05, 600
            ),
            max_header_count=_int(env, "CRICALGO_MAX_HEADER_COUNT", d.max_header_count, 8),
            max_header_bytes=_int(env, "CRICALGO_MAX_HEADER_BYTES", d.max_header_bytes, 1024),
            inbox_queue_limit=_int(env, "CRICALGO_INBOX_QUEUE_LIMIT", d.inbox_queue_limit, 1),
            api_token=env.get("CRICALGO_API_TOKEN") or None,
            db_pool_size=_int(env, "DB_POOL_SIZE", d.db_pool_size, 1),
            db_max_overflow=_int(env, "DB_MAX_OVERFLOW", d.db_max_overflow, 0),
            db_pool_timeout_seconds=_float(
                env, "DB_POOL_TIMEOUT", d.db_pool_timeout_seconds, 0.01, 300
            ),
            db_pool_recycle_seconds=_float(
                env, "DB_POOL_RECYCLE", d.db_pool_recycle_seconds, 1, 86400
            ),
            db_connect_timeout_seconds=_int(
                env, "DB_CONNECT_TIMEOUT", d.db_connect_timeout_seconds, 1
            ),
            queue_name=queue_name,
            worker_queues=worker_queues,
            redis_namespace=env.get("CRICALGO_REDIS_NAMESPACE", d.redis_namespace),
            task_time_limit_ms=_int(env, "CRICALGO_TASK_TIME_LIMIT_MS", d.task_time_limit_ms, 200),
            task_max_retries=_int(env, "CRICALGO_TASK_MAX_RETRIES", d.task_max_retries, 0),
            task_min_backoff_ms=_int(env, "CRICALGO_TASK_MIN_BACKOFF_MS", d.task_min_backoff_ms, 1),
            task_max_backoff_ms=_int(env, "CRICALGO_TASK_MAX_BACKOFF_MS", d.task_max_backoff_ms, 1),
            worker_threads=_int(env, "CRICALGO_WORKER_THREADS", d.worker_threads, 1),
            worker_heartbeat_timeout_ms=_int(
                env, "CRICALGO_WORKER_HEARTBEAT_TIMEOUT_MS", d.worker_heartbeat_timeout_ms, 1000
            ),
            relay_after_seconds=_float(
                env, "CRICALGO_RELAY_AFTER_SECONDS", d.relay_after_seconds, 0.1, 86400
            ),
            relay_interval_seconds=_float(
                env, "CRICALGO_RELAY_INTERVAL_SECONDS", d.relay_interval_seconds, 0.05, 3600
            ),
            relay_queued_grace_seconds=_float(
                env,
                "CRICALGO_RELAY_QUEUED_GRACE_SECONDS",
                d.relay_queued_grace_seconds,
                0.1,
                7 * 86400,
            ),
            track=env.get("CRICALGO_TRACK", d.track),
            version=env.get("CRICALGO_VERSION", d.version),
            host=env.get("CRICALGO_HOST", d.host),
            port=_int(env, "CRICALGO_PORT", d.port, 0),
            metrics_port=_int(env, "CRICALGO_METRICS_PORT", d.metrics_port, 0),
            webhook_metrics_port=(
                _int(env, "CRICALGO_WEBHOOK_METRICS_PORT", 0, 0)
                if env.get("CRICALGO_WEBHOOK_METRICS_PORT")
                else None
            ),
            stats_interval_seconds=_float(
                env, "CRICALGO_STATS_INTERVAL_SECONDS", d.stats_interval_seconds, 0.05, 3600
            ),
            fault_error_rate=_float(env, "CRICALGO_FAULT_ERROR_RATE", 0.0, 0.0, 1.0),
            fault_latency_ms=_int(env, "CRICALGO_FAULT_LATENCY_MS", 0, 0),
            log_level=env.get("CRICALGO_LOG_LEVEL", d.log_level).upper(),
        )
