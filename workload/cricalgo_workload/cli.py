"""`cricalgo-workload webhook|worker|migrate`: the workload's three roles."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from types import FrameType

from .logs import configure_logging
from .settings import Settings, SettingsError


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


# The webhook allocates a few hundred short-lived container objects per request. Python's
# default young-generation threshold (700) ran a collection every few requests, and full
# collections traversed every module, class and function loaded at start-up: pauses of tens
# of milliseconds under load, straight into the p99. Objects that exist before serving are
# moved out of the collector's sight (gc.freeze) and young collections run 14x less often.
GC_YOUNG_THRESHOLD = 10_000


def _tune_gc_for_latency() -> None:
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cricalgo-workload")
    parser.add_argument("role", choices=["webhook", "worker", "migrate", "redrive"])
    parser.add_argument(
        "tx_ids", nargs="*", help="redrive: the dead-lettered deposits to send again"
    )
    parser.add_argument("--all", action="store_true", help="redrive: every dead-lettered deposit")
    args = parser.parse_args(argv)
    if args.role == "redrive" and not (args.tx_ids or args.all):
        parser.error("redrive needs tx ids or --all")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"cricalgo-workload: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    log = logging.getLogger("cricalgo.workload")

    if args.role == "migrate":
        from .migrations import migrate

        applied = migrate(settings.database_url)
        log.info("migrations_done", extra={"applied": applied})
        return 0
    if args.role == "redrive":
        from .redrive import redrive

        released = redrive(settings, None if args.all else args.tx_ids)
        log.info("deposits_redriven", extra={"count": len(released), "tx_ids": released})
        print(f"re-driven: {len(released)}")
        return 0
    if args.role == "worker":
        from .worker import run_worker

        run_worker(settings)
        return 0

    import uvicorn

    from .app import create_app

    if not settings.webhook_secrets:
        print("cricalgo-workload: CRICALGO_WEBHOOK_SECRET is required", file=sys.stderr)
        return 2
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal against the
    # handler that was installed before it: make that one a clean exit.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    app = create_app(settings)
    _tune_gc_for_latency()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=30,
        backlog=2048,
    )
    return 0
