"""One analysis tick's readings: every check's query, per track, from Prometheus.

Queries run concurrently; a failing query becomes a no-data reading with the error as its
reason (the engine never treats that as a pass), so one broken custom metric or a
Prometheus outage shows up in `status.lastAnalysis` instead of crashing the tick.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from cricalgo_operator.canary.model import (
    CANARY,
    RATIO_COUNTS,
    REQUESTS,
    STABLE,
    TASKS,
    CanaryConfig,
    MetricCheck,
    Reading,
    Readings,
    step_reading,
)
from cricalgo_operator.canary.prometheus import PrometheusClient, PrometheusError
from cricalgo_operator.canary.promql import (
    TEMPLATE_SETS,
    TemplateVars,
    promql_duration,
    render_query,
)

# The query window is the analysis interval, but never so short that a rate() over it
# may hold fewer than two samples at the usual 1-2 s scrape intervals of a test setup.
MIN_WINDOW_SECONDS = 5.0


@dataclass(frozen=True)
class AnalysisTarget:
    """Which series to read: the CR and the version each track runs."""

    namespace: str
    name: str
    canary_version: str
    stable_version: str
    # Seconds the current step has run: the window of the sequential test's counts.
    step_seconds: float = 0.0


def template_for(config: CanaryConfig, check: MetricCheck | str) -> str:
    """The query template of a check: its own, else the built-in of the configured set."""
    if isinstance(check, MetricCheck) and check.query:
        return check.query
    name = check if isinstance(check, str) else check.name
    return TEMPLATE_SETS[config.templates][name]


def planned_queries(config: CanaryConfig, target: AnalysisTarget) -> list[tuple[str, str, str]]:
    """(name, track, PromQL) for everything one tick needs."""
    interval = promql_duration(max(config.analysis_interval, MIN_WINDOW_SECONDS))

    def variables(track: str) -> TemplateVars:
        version = target.canary_version if track == CANARY else target.stable_version
        return TemplateVars(target.namespace, target.name, track, version, interval)

    plan: list[tuple[str, str, str]] = []
    volumes = {c.volume for c in config.checks if c.volume} | {REQUESTS, TASKS}
    for volume in sorted(volumes):
        plan.append((volume, CANARY, render_query(template_for(config, volume), variables(CANARY))))
    for check in config.checks:
        template = template_for(config, check)
        plan.append((check.name, CANARY, render_query(template, variables(CANARY))))
        if check.compare_to == STABLE:
            plan.append((check.name, STABLE, render_query(template, variables(STABLE))))
    plan.extend(_step_counts(config, target))
    return plan


def _step_counts(config: CanaryConfig, target: AnalysisTarget) -> list[tuple[str, str, str]]:
    """The failure and total counts of the sequential checks, over the whole current step."""
    window = promql_duration(max(target.step_seconds, MIN_WINDOW_SECONDS))
    plan: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    for check in config.checks:
        if not check.sequential:
            continue
        tracks = (CANARY, STABLE) if check.compare_to == STABLE else (CANARY,)
        for track in tracks:
            version = target.canary_version if track == CANARY else target.stable_version
            variables = TemplateVars(target.namespace, target.name, track, version, window)
            for count in RATIO_COUNTS[check.name]:
                if (count, track) not in seen:
                    seen.add((count, track))
                    query = render_query(template_for(config, count), variables)
                    plan.append((step_reading(count), track, query))
    return plan


async def collect_readings(
    client: PrometheusClient,
    config: CanaryConfig,
    target: AnalysisTarget,
    at: datetime | None = None,
) -> Readings:
    """Run every planned query concurrently and return the readings."""
    plan = planned_queries(config, target)

    async def one(name: str, track: str, promql: str) -> Reading:
        try:
            result = await client.query(promql, at)
        except PrometheusError as exc:
            return Reading(name, track, None, f"{type(exc).__name__}: {exc}")
        return Reading(name, track, result.value, result.reason)

    readings = await asyncio.gather(*(one(*item) for item in plan))
    return Readings(readings)
