"""The operator's configuration: command-line flags over environment variables, in one place.

| flag | env | default |
|---|---|---|
| --kubeconfig | CRICALGO_KUBECONFIG, KUBECONFIG | in-cluster service account |
| --namespace (repeatable) | CRICALGO_NAMESPACES (comma-separated) | all namespaces |
| --bind-host | CRICALGO_BIND_HOST | 0.0.0.0 (the address metrics and liveness listen on) |
| --metrics-port | CRICALGO_METRICS_PORT | 8080 (0 disables) |
| --liveness | CRICALGO_LIVENESS | http://<bind host>:8081/healthz ("" off; no host: bind host) |
| --prometheus-url | CRICALGO_PROMETHEUS_URL | none (a CR's spec.canary.prometheus.url wins) |
| --prometheus-allowed-url (repeatable) | CRICALGO_PROMETHEUS_ALLOWED_URLS (comma-separated) | any |
| --no-cr-prometheus-url | CRICALGO_CR_PROMETHEUS_URL=false | a CR may name its own Prometheus |
| --prometheus-ca-file | CRICALGO_PROMETHEUS_CA_FILE | public roots |
| --prometheus-bearer-token-file | CRICALGO_PROMETHEUS_BEARER_TOKEN_FILE | none |
| --prometheus-username | CRICALGO_PROMETHEUS_USERNAME | no basic auth |
| --prometheus-password-file | CRICALGO_PROMETHEUS_PASSWORD_FILE | none |
| --prometheus-cert-file, --prometheus-key-file | CRICALGO_PROMETHEUS_CERT_FILE, _KEY_FILE | none |
| --prometheus-server-name | CRICALGO_PROMETHEUS_SERVER_NAME | the URL's host |
| --min-analysis-interval | CRICALGO_MIN_ANALYSIS_INTERVAL | 1s (the CRD's own minimum) |
| --peering | CRICALGO_PEERING | standalone (no peering objects) |
| --peering-priority | CRICALGO_PEERING_PRIORITY | random (one replica wins, the others stand by) |
| --peering-lifetime | CRICALGO_PEERING_LIFETIME (seconds) | 60 |
| --log-format | CRICALGO_LOG_FORMAT | json (or text) |
| --log-level | CRICALGO_LOG_LEVEL | INFO |
| --watch-timeout | CRICALGO_WATCH_TIMEOUT (seconds) | 300 |
| --no-analysis | CRICALGO_ANALYSIS=false | analysis on (the canary daemon moves weights) |

On the local node every pod has its own loopback address; the chart sets CRICALGO_BIND_HOST
from the pod IP (downward API `status.podIP`), so two operator pods on one machine never
contend for a port, and a real cluster's pod IP works just as well.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .canary.durations import parse_duration
from .canary.prometheus_policy import PrometheusFiles


class ConfigError(ValueError):
    """A flag or environment variable has a value the operator cannot use."""


@dataclass(frozen=True)
class OperatorConfig:
    kubeconfig: str | None = None
    namespaces: tuple[str, ...] = ()
    bind_host: str = "0.0.0.0"
    metrics_port: int = 8080
    liveness: str | None = "http://0.0.0.0:8081/healthz"
    # The canary analysis reads this Prometheus when a CR names none of its own.
    prometheus_url: str | None = None
    # Prefixes a CR's own Prometheus URL must start with (empty: any).
    prometheus_allowed_urls: tuple[str, ...] = ()
    # False: every CR is analysed against `prometheus_url`, whatever its spec names.
    cr_prometheus_url: bool = True
    # The credentials for `prometheus_url` (never sent to a CR's own Prometheus).
    prometheus_files: PrometheusFiles = field(default_factory=PrometheusFiles)
    # Seconds: the shortest analysis interval honoured, whatever a CR asks for.
    min_analysis_interval: float = 1.0
    peering: str | None = None
    # Kopf runs the live peer of highest priority; equal priorities pause every peer, so
    # each replica draws its own unless told.
    peering_priority: int | None = None
    peering_lifetime: int = 60
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


LIVENESS_PORT = 8081
_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def _bind_host(value: str) -> str:
    """An IP address or a host name, nothing else (no scheme, no port)."""
    host = value.strip()
    if not host:
        raise ConfigError("bind host is empty (leave CRICALGO_BIND_HOST unset for 0.0.0.0)")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in host.split(".")):
        raise ConfigError(f"bind host must be an IP address or a host name, got {value!r}")
    return host


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _liveness(value: str | None, bind_host: str) -> str | None:
    """Unset: on the bind host. A URL without a host (`http://:8081/healthz`, what the chart
    passes) also listens on the bind host, so an IPv6 pod IP needs no brackets in a manifest."""
    if value is None:
        return f"http://{_url_host(bind_host)}:{LIVENESS_PORT}/healthz"
    if not value:
        return None
    parts = urllib.parse.urlsplit(value)
    if parts.scheme != "http":
        raise ConfigError(f"liveness URL must be http://[host]:port/path, got {value!r}")
    try:
        port = parts.port or 80
    except ValueError:
        raise ConfigError(f"liveness URL has an invalid port: {value!r}") from None
    if parts.hostname:
        return value
    return urllib.parse.urlunsplit(("http", f"{_url_host(bind_host)}:{port}", parts.path, "", ""))


def _prometheus_url(value: str) -> str | None:
    url = value.strip()
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"Prometheus URL must be http(s)://host[:port][/path], got {value!r}")
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise ConfigError(f"Prometheus URL has an invalid port: {value!r}") from None
    return url.rstrip("/")


def _allowed_url(value: str) -> str:
    url = _prometheus_url(value)
    if url is None:
        raise ConfigError("an allowed Prometheus URL is empty")
    return url


def _min_interval(value: str) -> float:
    try:
        seconds = parse_duration(value.strip())
    except ValueError as error:
        raise ConfigError(f"minimum analysis interval: {error}") from None
    if seconds < 1:
        raise ConfigError(f"minimum analysis interval must be at least 1s, got {value!r}")
    return seconds


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
    parser.add_argument(
        "--bind-host",
        default=env.get("CRICALGO_BIND_HOST", defaults.bind_host),
        help="address the metrics and liveness endpoints listen on (a pod sets its pod IP)",
    )
    parser.add_argument("--metrics-port", default=env.get("CRICALGO_METRICS_PORT"))
    parser.add_argument(
        "--liveness",
        default=env.get("CRICALGO_LIVENESS"),
        help=f'liveness URL (default http://<bind host>:{LIVENESS_PORT}/healthz; "" disables)',
    )
    parser.add_argument(
        "--prometheus-url",
        default=env.get("CRICALGO_PROMETHEUS_URL", ""),
        help="Prometheus for canary analysis when a CR names none (spec.canary.prometheus.url)",
    )
    parser.add_argument(
        "--prometheus-allowed-url",
        action="append",
        dest="prometheus_allowed_urls",
        help="a prefix a CR's spec.canary.prometheus.url must start with (repeatable)",
    )
    parser.add_argument(
        "--no-cr-prometheus-url",
        dest="cr_prometheus_url",
        action="store_false",
        default=_bool(env.get("CRICALGO_CR_PROMETHEUS_URL", "true"), "CRICALGO_CR_PROMETHEUS_URL"),
        help="ignore spec.canary.prometheus.url: every CR is analysed against --prometheus-url",
    )
    for flag, what in (
        ("ca-file", "PEM CA bundle the server's certificate must chain to"),
        ("bearer-token-file", "file holding a bearer token (re-read at each analysis)"),
        ("username", "basic-auth user name (with --prometheus-password-file)"),
        ("password-file", "file holding the basic-auth password"),
        ("cert-file", "PEM client certificate (with --prometheus-key-file)"),
        ("key-file", "PEM private key of the client certificate"),
        ("server-name", "name the server's certificate must carry, if not the URL's host"),
    ):
        variable = "CRICALGO_PROMETHEUS_" + flag.upper().replace("-", "_")
        parser.add_argument(
            f"--prometheus-{flag}", default=env.get(variable) or None, help=f"{what} ({variable})"
        )
    parser.add_argument(
        "--min-analysis-interval",
        default=env.get("CRICALGO_MIN_ANALYSIS_INTERVAL", "1s"),
        help="shortest canary.analysisInterval honoured (a duration, at least 1s)",
    )
    parser.add_argument("--peering", default=env.get("CRICALGO_PEERING"))
    parser.add_argument("--peering-priority", default=env.get("CRICALGO_PEERING_PRIORITY"))
    parser.add_argument("--peering-lifetime", default=env.get("CRICALGO_PEERING_LIFETIME"))
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
    bind_host = _bind_host(args.bind_host)
    allowed = args.prometheus_allowed_urls or [
        u.strip() for u in env.get("CRICALGO_PROMETHEUS_ALLOWED_URLS", "").split(",") if u.strip()
    ]
    files = PrometheusFiles(
        ca_file=args.prometheus_ca_file,
        bearer_token_file=args.prometheus_bearer_token_file,
        username=args.prometheus_username,
        password_file=args.prometheus_password_file,
        cert_file=args.prometheus_cert_file,
        key_file=args.prometheus_key_file,
        server_name=args.prometheus_server_name,
    )
    if files.bearer_token_file and files.username:
        raise ConfigError("Prometheus: a bearer token file or basic auth, not both")
    if bool(files.username) != bool(files.password_file):
        raise ConfigError(
            "Prometheus basic auth needs both --prometheus-username and a password file"
        )
    if bool(files.cert_file) != bool(files.key_file):
        raise ConfigError("a Prometheus client certificate needs both its cert and key files")
    return OperatorConfig(
        kubeconfig=args.kubeconfig or None,
        namespaces=tuple(namespaces),
        bind_host=bind_host,
        metrics_port=_int(args.metrics_port, "metrics port", 0)
        if args.metrics_port
        else defaults.metrics_port,
        liveness=_liveness(args.liveness, bind_host),
        prometheus_url=_prometheus_url(args.prometheus_url),
        prometheus_allowed_urls=tuple(_allowed_url(u) for u in allowed),
        cr_prometheus_url=args.cr_prometheus_url,
        prometheus_files=files,
        min_analysis_interval=_min_interval(args.min_analysis_interval),
        peering=args.peering or None,
        peering_priority=_int(args.peering_priority, "peering priority", 0)
        if args.peering_priority
        else None,
        peering_lifetime=_int(args.peering_lifetime, "peering lifetime", 5)
        if args.peering_lifetime
        else defaults.peering_lifetime,
        log_format=args.log_format,
        log_level=args.log_level.upper(),
        watch_timeout=_int(args.watch_timeout, "watch timeout", 10)
        if args.watch_timeout
        else defaults.watch_timeout,
        analysis=args.analysis,
    )
