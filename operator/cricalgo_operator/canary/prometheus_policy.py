"""Which Prometheus a CR's analysis may query: the operator's URL, or the CR's own if allowed.

A CR author picks `spec.canary.prometheus.url`, and the operator sends requests there from
inside the cluster: without a policy that is a server-side request forgery channel. The
operator's flags decide (docs/security.md):

- `--no-cr-prometheus-url`: a CR's URL is ignored; every CR reads `--prometheus-url`.
- `--prometheus-allowed-url PREFIX` (repeatable): a CR's URL must start with one prefix;
  a prefix matches at a path boundary only, so `http://prom:9090` does not admit
  `http://prom:9090.evil.example` nor `http://prom:90901`.

Pure: no I/O, unit-tested.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PrometheusChoice:
    """The URL to query (None: no data this tick) and, if the CR's URL was refused, why."""

    url: str | None
    refused: str | None = None


def _matches(url: str, prefix: str) -> bool:
    got, want = urllib.parse.urlsplit(url), urllib.parse.urlsplit(prefix)
    if (got.scheme, got.netloc.lower()) != (want.scheme, want.netloc.lower()):
        return False
    if got.query or got.fragment or "@" in got.netloc:
        return False
    base = want.path.rstrip("/")
    return got.path.rstrip("/") == base or got.path.startswith(base + "/")


def choose_prometheus_url(
    cr_url: str | None,
    operator_url: str | None,
    *,
    allow_cr_url: bool = True,
    allowed_prefixes: Sequence[str] = (),
) -> PrometheusChoice:
    """The Prometheus one analysis queries under the operator's policy."""
    if not cr_url:
        return PrometheusChoice(operator_url)
    if not allow_cr_url:
        return PrometheusChoice(
            operator_url,
            "spec.canary.prometheus.url is ignored: the operator forbids CRs to choose "
            "their Prometheus (--no-cr-prometheus-url)",
        )
    if allowed_prefixes and not any(_matches(cr_url, p) for p in allowed_prefixes):
        return PrometheusChoice(
            None,
            "spec.canary.prometheus.url is not on the operator's allowlist "
            "(--prometheus-allowed-url); no analysis reads it",
        )
    return PrometheusChoice(cr_url)


@dataclass(frozen=True)
class PrometheusFiles:
    """Where the operator's own Prometheus credentials are (files, re-read at every
    analysis, so a rotated token or certificate applies at the next one)."""

    ca_file: str | None = None
    bearer_token_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    @property
    def empty(self) -> bool:
        return self == PrometheusFiles()


@dataclass(frozen=True)
class PrometheusPolicy:
    """The operator's Prometheus settings, as the canary analysis applies them."""

    url: str | None = None
    allow_cr_url: bool = True
    allowed_prefixes: tuple[str, ...] = ()
    files: PrometheusFiles = field(default_factory=PrometheusFiles)

    @classmethod
    def of_config(cls, config: Any) -> PrometheusPolicy:
        """From an OperatorConfig (or anything with the same attributes; None: defaults)."""
        return cls(
            getattr(config, "prometheus_url", None),
            bool(getattr(config, "cr_prometheus_url", True)),
            tuple(getattr(config, "prometheus_allowed_urls", ()) or ()),
            getattr(config, "prometheus_files", None) or PrometheusFiles(),
        )

    @classmethod
    def of(cls, given: PrometheusPolicy | str | None) -> PrometheusPolicy:
        """A policy as given, or the default one around a bare operator URL."""
        return given if isinstance(given, PrometheusPolicy) else cls(given)

    def choose(self, cr_url: str | None) -> PrometheusChoice:
        return choose_prometheus_url(
            cr_url,
            self.url,
            allow_cr_url=self.allow_cr_url,
            allowed_prefixes=self.allowed_prefixes,
        )
