"""The analysis window against the scrape interval of the targets it reads.

Each check reads `rate()`/`increase()` over a window of `analysisInterval`. Those need two
samples inside the window, so with a window shorter than two scrapes (Prometheus' default
scrape interval is 1m, as is the default `analysisInterval`) a check often sees one sample
and has no data, and the canary pauses instead of progressing. The operator reads the
scrape interval of the CR's targets from Prometheus (`/api/v1/targets`) once per spec
generation and reports the outcome in the condition `AnalysisWindowSufficient`, with a
Warning Event when the window is too short.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from cricalgo_operator.canary.durations import format_duration, parse_duration
from cricalgo_operator.canary.prometheus import PrometheusClient, PrometheusError
from cricalgo_operator.canary.prometheus_auth import PrometheusEndpoint
from cricalgo_operator.conditions import set_condition
from cricalgo_operator.events import Transition
from cricalgo_operator.kubeapi import KubeApi
from cricalgo_operator.model import Cad
from cricalgo_operator.status import write_status

log = logging.getLogger(__name__)

CONDITION = "AnalysisWindowSufficient"
MIN_SCRAPES = 2


def window_verdict(
    analysis_interval: float, scrape_intervals: Iterable[float]
) -> tuple[bool | None, str, str]:
    """(status, reason, message) of the condition; None while no target is known."""
    intervals = list(scrape_intervals)
    if not intervals:
        return None, "NoTargets", "Prometheus scrapes no target of this CR yet"
    longest = max(intervals)
    window, scrape = format_duration(analysis_interval), format_duration(longest)
    if analysis_interval < MIN_SCRAPES * longest:
        least = format_duration(MIN_SCRAPES * longest)
        return (
            False,
            "ShorterThanTwoScrapes",
            f"analysisInterval {window} is shorter than {MIN_SCRAPES} scrapes of {scrape}: "
            f"rates over the window often have one sample and checks get no data; "
            f"set spec.canary.analysisInterval to at least {least}",
        )
    return (
        True,
        "AtLeastTwoScrapes",
        f"analysisInterval {window} spans {MIN_SCRAPES}+ scrapes of {scrape}",
    )


def window_unchecked(cad: Cad) -> bool:
    """Whether the condition is missing, undecided, or about an older spec generation."""
    found = next(
        (c for c in cad.status.get("conditions") or [] if c.get("type") == CONDITION), None
    )
    return (
        found is None
        or found.get("status") == "Unknown"
        or found.get("observedGeneration") != cad.generation
    )


def window_patch(
    cad: Cad, verdict: tuple[bool | None, str, str], now: datetime
) -> tuple[dict[str, Any], Transition | None]:
    """The status patch (conditions) and Event for a verdict (pure)."""
    status, reason, message = verdict
    conditions = set_condition(
        cad.status.get("conditions") or [], CONDITION, status, reason, message, now, cad.generation
    )
    warning = Transition("AnalysisWindowTooShort", message, "Warning") if status is False else None
    return {"conditions": conditions}, warning


def target_intervals(targets: dict[str, Any], namespace: str, app: str) -> list[float]:
    """Scrape intervals (seconds) of the active targets labelled with the CR's namespace and
    app (the labels the analysis queries select on), from a /api/v1/targets answer."""
    out: list[float] = []
    for target in targets.get("activeTargets") or []:
        labels = target.get("labels") or {}
        if labels.get("namespace") != namespace or labels.get("app") != app:
            continue
        try:
            out.append(parse_duration(str(target.get("scrapeInterval"))))
        except ValueError:
            continue
    return out


async def check_window(
    api: KubeApi,
    cad: Cad,
    endpoint: PrometheusEndpoint,
    analysis_interval: float,
    now: datetime,
    query_seconds: float,
) -> Cad:
    """Read the targets' scrape interval and write the condition (and Event) if decided.

    Prometheus being unreachable, or having no target of the CR yet, writes nothing: the
    next tick asks again (so one attempt, within `query_seconds`, is enough). Returns the CR as
    written (or unchanged)."""
    try:
        assert endpoint.url is not None
        async with PrometheusClient(
            endpoint.url, timeout=query_seconds, retries=0, credentials=endpoint.credentials
        ) as client:
            targets = await client.targets()
    except PrometheusError as error:
        log.info("scrape interval of %s/%s unknown: %s", cad.namespace, cad.name, error)
        return cad
    verdict = window_verdict(analysis_interval, target_intervals(targets, cad.namespace, cad.name))
    if verdict[0] is None:
        return cad
    patch, warning = window_patch(cad, verdict, now)
    return await write_status(api, cad, patch, warning, now)
