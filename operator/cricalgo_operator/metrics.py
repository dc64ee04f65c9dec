"""The operator's own Prometheus metrics (names are a contract: docs/metrics.md)."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

PHASES = (
    "Initializing",
    "Ready",
    "Progressing",
    "Paused",
    "Promoting",
    "RollingBack",
    "RolledBack",
)

reconcile_duration = Histogram(
    "cricalgo_operator_reconcile_duration_seconds",
    "Time to reconcile one object into its children.",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
reconcile_errors = Counter(
    "cricalgo_operator_reconcile_errors_total", "Reconciliations that failed.", ["kind"]
)
canary_weight = Gauge(
    "cricalgo_operator_canary_weight", "Current canary traffic weight (%).", ["namespace", "name"]
)
canary_phase = Gauge(
    "cricalgo_operator_canary_phase",
    "1 for the CR's current phase, 0 for the others.",
    ["namespace", "name", "phase"],
)
analysis_verdicts = Counter(
    "cricalgo_operator_analysis_verdicts_total",
    "Canary metric checks by verdict.",
    ["namespace", "name", "metric", "verdict"],
)
rollbacks = Counter(
    "cricalgo_operator_rollbacks_total", "Canary rollbacks.", ["namespace", "name", "reason"]
)
rollouts = Counter(
    "cricalgo_operator_rollouts_total",
    "Canaries ended, by outcome (promoted, rolledBack, aborted, superseded).",
    ["namespace", "name", "outcome"],
)
notifications = Counter(
    "cricalgo_operator_notifications_total",
    "Notifications by receiver type, event and outcome (sent, failed, dropped).",
    ["type", "event", "outcome"],
)
notification_delivery = Histogram(
    "cricalgo_operator_notification_delivery_seconds",
    "From the status write that made an event to the receiver's answer.",
    ["type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
analysis_errors = Counter(
    "cricalgo_operator_analysis_errors_total",
    "Canary analyses that could not query Prometheus.",
    ["namespace", "name"],
)


api_writes = Counter(
    "cricalgo_operator_api_writes_total",
    "Write requests (POST, PATCH, DELETE) the operator's client sent to the API server.",
    ["verb"],
)
api_reads = Counter(
    "cricalgo_operator_api_reads_total",
    "Read requests (GET of one object, LIST) the operator's client sent to the API server.",
    ["verb"],
)


def record_state(namespace: str, name: str, phase: str | None, weight: int) -> None:
    """Export a CR's phase and weight."""
    canary_weight.labels(namespace, name).set(weight)
    for candidate in PHASES:
        canary_phase.labels(namespace, name, candidate).set(1 if candidate == phase else 0)


def record_outcome(namespace: str, name: str, outcome: str) -> None:
    """Count a canary that ended (the outcome its history entry records)."""
    rollouts.labels(namespace, name, outcome).inc()


# Every metric labelled by CR: a deleted CR's series go with it.
PER_CR = (canary_weight, canary_phase, analysis_verdicts, rollbacks, rollouts, analysis_errors)


def _series_of(metric: Any, namespace: str, name: str) -> set[tuple[str, ...]]:
    """Label values of `metric`'s children for this CR (from its samples)."""
    names = metric._labelnames  # the label order `remove` takes
    found = set()
    for family in metric.collect():
        for sample in family.samples:
            labels = sample.labels
            if labels.get("namespace") == namespace and labels.get("name") == name:
                found.add(tuple(labels[label] for label in names))
    return found


def forget(namespace: str, name: str) -> None:
    """Drop every series of a deleted CR, so dashboards and alerts do not see it linger."""
    for metric in PER_CR:
        for values in _series_of(metric, namespace, name):
            with contextlib.suppress(KeyError):
                metric.remove(*values)
