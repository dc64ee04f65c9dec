"""`cricalgo-operator`: the operator process (Kopf with our settings, metrics, JSON logs)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

import kopf
from prometheus_client import start_http_server

from . import handlers  # noqa: F401  (registers the handlers)
from .config import ConfigError, OperatorConfig, parse_config
from .logs import configure_logging

log = logging.getLogger("cricalgo_operator")


async def run(config: OperatorConfig, stop_flag: asyncio.Event | None = None) -> None:
    """Run until stopped (SIGINT/SIGTERM, or `stop_flag`)."""
    await kopf.operator(
        clusterwide=config.clusterwide,
        namespaces=list(config.namespaces),
        standalone=config.peering is None,
        peering_name=config.peering,
        liveness_endpoint=config.liveness,
        memo=kopf.Memo(config=config),
        stop_flag=stop_flag,
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse_config(argv)
    except ConfigError as error:
        print(f"cricalgo-operator: {error}", file=sys.stderr)
        return 2
    configure_logging(config.log_format, config.log_level)
    if config.analysis:
        # Registers the per-CR canary analysis daemon with Kopf before it runs.
        from .canary import daemon  # noqa: F401
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.bind_host)
    scope = "all namespaces" if config.clusterwide else ", ".join(config.namespaces)
    log.info(
        "starting cricalgo-operator for %s; metrics on %s:%s, liveness %s",
        scope,
        config.bind_host,
        config.metrics_port or "(off)",
        config.liveness or "(off)",
    )
    asyncio.run(run(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
