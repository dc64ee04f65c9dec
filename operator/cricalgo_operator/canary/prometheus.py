"""A thin async client for Prometheus' instant-query and targets HTTP API.

Timeouts on every request, bounded retries with backoff for transport errors and 5xx,
and typed errors so the caller can tell "Prometheus is down" from "the query is wrong".
An instant query gives one number or None: empty results and NaN are no data, +Inf is a
real (terrible) value.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from cricalgo_operator.canary.prometheus_auth import PrometheusCredentials


class PrometheusError(Exception):
    """Any failure to get a number out of Prometheus."""


class PrometheusUnavailable(PrometheusError):
    """Transport failure, timeout or 5xx after all retries."""


class PrometheusQueryError(PrometheusError):
    """Prometheus rejected the query (bad PromQL, 4xx): retrying will not help."""


class PrometheusAuthError(PrometheusQueryError):
    """Prometheus refused the credentials (HTTP 401 or 403)."""


class PrometheusResponseError(PrometheusError):
    """The answer is not one number: malformed, or several series where one was expected."""


@dataclass(frozen=True)
class QueryResult:
    value: float | None  # None: no data
    reason: str = ""  # why there is no data ("empty", "NaN")


class PrometheusClient:
    """Instant queries against `url` (the Prometheus base URL), with `credentials` if given
    (raises CredentialsError if their certificates do not load)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.2,
        credentials: PrometheusCredentials | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        extra: dict[str, Any] = {}
        self._extensions: dict[str, Any] = {}
        if credentials is not None:
            extra["headers"] = credentials.headers()
            if credentials.customises_tls:
                extra["verify"] = credentials.ssl_context()
            if credentials.server_name:
                # httpcore checks the certificate against the SNI name it sends.
                self._extensions["sni_hostname"] = credentials.server_name
        self._client = httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(timeout), **extra)

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get(self, params: dict[str, str], path: str = "/api/v1/query") -> dict[str, Any]:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = await self._client.get(path, params=params, extensions=self._extensions)
            except (httpx.TransportError, ssl.SSLError) as exc:  # connect, read, timeouts
                # A TLS 1.3 server refuses a client certificate after the handshake: the
                # alert surfaces as a bare SSLError on the first read.
                last = exc
                continue
            if response.status_code >= 500:
                last = PrometheusUnavailable(f"HTTP {response.status_code}")
                continue
            if response.status_code in (401, 403):
                raise PrometheusAuthError(
                    f"Prometheus refused the credentials (HTTP {response.status_code})"
                )
            try:
                body: dict[str, Any] = response.json()
            except ValueError as exc:
                raise PrometheusResponseError(f"not JSON (HTTP {response.status_code})") from exc
            if not isinstance(body, dict):
                raise PrometheusResponseError(
                    f"not a Prometheus answer (HTTP {response.status_code})"
                )
            if response.status_code >= 400 or body.get("status") != "success":
                raise PrometheusQueryError(
                    f"query refused (HTTP {response.status_code}, {_error_type(body)})"
                )
            return body
        raise PrometheusUnavailable(
            f"unreachable after {self.retries + 1} attempts ({_failure(last)})"
        ) from last

    async def query(self, promql: str, at: datetime | None = None) -> QueryResult:
        """Evaluate `promql` (at `at`, else now) to one number, or no data."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        data = (await self._get(params)).get("data") or {}
        try:
            return parse_result(data)
        except (AttributeError, TypeError, IndexError) as exc:  # a shape no Prometheus sends
            raise PrometheusResponseError("malformed answer") from exc

    async def targets(self) -> dict[str, Any]:
        """The `data` of /api/v1/targets for active targets (labels, scrapeInterval, ...)."""
        data = (await self._get({"state": "active"}, "/api/v1/targets")).get("data")
        if not isinstance(data, dict):
            raise PrometheusResponseError("targets: no data object")
        return data


# What an error says goes into the CR's status and Events, which the CR's author reads, and
# the URL may be the author's choice: only the HTTP status, Prometheus' own error types and
# local exception class names are reported, never text the server sent (a response body
# would make the operator a proxy into whatever the URL reaches).
_ERROR_TYPES = frozenset(
    {"bad_data", "timeout", "canceled", "execution", "internal", "unavailable", "not_found"}
)


def _error_type(body: dict[str, Any]) -> str:
    kind = body.get("errorType")
    return kind if kind in _ERROR_TYPES else "not a Prometheus error"


def _failure(error: Exception | None) -> str:
    if isinstance(error, PrometheusUnavailable):
        return str(error)
    return type(error).__name__ if error is not None else "no answer"


def _number(raw: Any) -> float:
    try:
        return float(raw)  # Prometheus sends "NaN", "+Inf", "-Inf" as strings; float() knows them
    except (TypeError, ValueError) as exc:
        raise PrometheusResponseError("a sample value is not a number") from exc


def parse_result(data: dict[str, Any]) -> QueryResult:
    """One number from a `data` object of /api/v1/query."""
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar":
        sample = result
    elif kind == "vector":
        if not result:
            return QueryResult(None, "empty")
        if len(result) > 1:
            raise PrometheusResponseError(
                f"expected one series, got {len(result)}; aggregate the query"
            )
        sample = result[0].get("value")
    else:
        raise PrometheusResponseError("unsupported result type; use an instant vector")
    if not isinstance(sample, list) or len(sample) != 2:
        raise PrometheusResponseError("malformed sample")
    value = _number(sample[1])
    if math.isnan(value):
        return QueryResult(None, "NaN")
    return QueryResult(value)
