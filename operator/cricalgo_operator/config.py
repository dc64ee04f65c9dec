"""The operator's configuration: command-line flags over environment variables, in one place.

| flag | env | default |
|---|---|---|
| --kubeconfig | CRICALGO_KUBECONFIG, KUBECONFIG | in-cluster service account |
| --namespace (repeatable) | CRICALGO_NAMESPACES (comma-separated) | all namespaces |
| --metrics-port | CRICALGO_METRICS_PORT | 8080 (0 disables) |
| --liveness | CRICALGO_LIVENESS | http://0.0.0.0:8081/healthz ("" disables) |
| --peering | CRICALGO_PEERING | standalone (no peering objects) |
| --log-format | CRICALGO_LOG_FORMAT | json (or text) |
| --log-level | CRICALGO_LOG_LEVEL | INFO |
| --watch-timeout | CRICALGO_WATCH_TIMEOUT (seconds) | 300 |
| --no-analysis | CRICALGO_ANALYSIS=false | analysis on (the canary daemon moves weights) |
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class ConfigError(ValueError):
    """A flag or environment variable has a value the operator cannot use."""


@dataclass(frozen=True)
class OperatorConfig:
    kubeconfig: str | None = None
    namespaces: tuple[str, ...] = ()
    metrics_port: int = 8080
    liveness: str | None = "http://0.0.0.0:8081/healthz"
    peering: str | None = None
    log_format: str = "json"
    log_level: str = "INFO"
    watch_timeout: int = 300
    # Off: reconcile children and revisions only; no daemon judges SLOs or moves weights.
    analysis: bool = True

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def _int(value: str, what: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{what} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{what} must be >= {minimum}, got {number}")
    return number


def _bool(value: str, what: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{what} must be true or false, got {value!r}")


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> OperatorConfig:
    """Flags win over environment variables, which win over defaults."""
    env = os.environ if environ is None else environ
    defaults = OperatorConfig()
    parser = argparse.ArgumentParser(
        prog="cricalgo-operator", description="Run the CricAlgo canary operator."
    )
    parser.add_argument(
        "--kubeconfig", default=env.get("CRICALGO_KUBECONFIG") or env.get("KUBECONFIG")
    )
    parser.add_argument("--namespace", action="append", dest="namespaces")
    parser.add_argument("--metrics-port", default=env.get("CRICALGO_METRICS_PORT"))
    parser.add_argument("--liveness", default=env.get("CRICALGO_LIVENESS", defaults.liveness))
    parser.add_argument("--peering", default=env.get("CRICALGO_PEERING"))
    parser.add_argument(
        "--log-format",
        choices=("json", "text"),
        default=env.get("CRICALGO_LOG_FORMAT", defaults.log_format),
    )
    parser.add_argument("--log-level", default=env.get("CRICALGO_LOG_LEVEL", defaults.log_level))
    parser.add_argument("--watch-timeout", default=env.get("CRICALGO_WATCH_TIMEOUT"))
    parser.add_argument(
        "--no-analysis",
        dest="analysis",
        action="store_false",
        default=_bool(env.get("CRICALGO_ANALYSIS", "true"), "CRICALGO_ANALYSIS"),
        help="reconcile only: do not run canary analysis (weights stay where they are set)",
    )
    args = parser.parse_args(argv)
    namespaces = args.namespaces or [
        n.strip() for n in env.get("CRICALGO_NAMESPACES", "").split(",") if n.strip()
    ]
    if args.log_format not in ("json", "text"):
        raise ConfigError(f"log format must be json or text, got {args.log_format!r}")
    return OperatorConfig(
        kubeconfig=args.kubeconfig or None,
        namespaces=tuple(namespaces),
        metrics_port=_int(args.metrics_port, "metrics port", 0)
        if args.metrics_port
        else defaults.metrics_port,
        liveness=args.liveness or None,
        peering=args.peering or None,
        log_format=args.log_format,
        log_level=args.log_level.upper(),
        watch_timeout=_int(args.watch_timeout, "watch timeout", 10)
        if args.watch_timeout
        else defaults.watch_timeout,
        analysis=args.analysis,
    )
