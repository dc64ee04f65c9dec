"""`cricalgo-workload webhook|worker|migrate`: the workload's three roles."""

from __future__ import annotations

import argparse
import logging
import sys

from .logs import configure_logging
from .settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cricalgo-workload")
    parser.add_argument("role", choices=["webhook", "worker", "migrate"])
    args = parser.parse_args(argv)
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
    if args.role == "worker":
        from .worker import run_worker

        run_worker(settings)
        return 0

    import uvicorn

    from .app import create_app

    if not settings.webhook_secrets:
        print("cricalgo-workload: CRICALGO_WEBHOOK_SECRET is required", file=sys.stderr)
        return 2
    uvicorn.run(
        create_app(settings),
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
