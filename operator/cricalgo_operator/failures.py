"""Failures of the operator's own work on a CR, shown on the CR: a Degraded condition and a
Warning Event, not only a log line.

A reconcile that cannot finish (an object with a child's name that the CR does not own, a
child the API server rejects, a spec the analysis cannot use) sets `Degraded=True` with
one of FAILURE_REASONS and a message saying what to fix, and posts a Warning Event when
that condition appears or its message changes. The next reconcile that succeeds clears it
(`conditions.conditions_for`); the readiness watcher and the canary decisions keep it.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from .conditions import (
    ANALYSIS_FAILED,
    FAILURE_REASONS,
    OWNERSHIP_CONFLICT,
    RECONCILE_FAILED,
    reported_failure,
    set_condition,
)
from .events import Transition
from .kubeapi import ApiError, KubeApi, TransportError
from .model import Cad
from .naming import API_VERSION, KIND
from .status import write_status

log = logging.getLogger(__name__)

__all__ = [
    "ANALYSIS_FAILED",
    "FAILURE_REASONS",
    "OWNERSHIP_CONFLICT",
    "RECONCILE_FAILED",
    "failure_conditions",
    "report_failure",
    "reported_failure",
]
MESSAGE_LIMIT = 1024


def failure_conditions(
    conditions: list[dict[str, Any]],
    reason: str,
    message: str,
    now: datetime.datetime,
    generation: int,
) -> list[dict[str, Any]]:
    """`conditions` with Degraded=True for this failure (pure)."""
    return set_condition(
        conditions, "Degraded", True, reason, message[:MESSAGE_LIMIT], now, generation
    )


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    def key(conditions: list[dict[str, Any]]) -> Any:
        fields = ("type", "status", "reason", "message")
        return [tuple(c.get(f) for f in fields) for c in conditions]

    return key(a) == key(b)


async def report_failure(
    api: KubeApi, namespace: str, name: str, reason: str, message: str, now: datetime.datetime
) -> bool:
    """Put the failure on the CR (condition, and an Event if it is news). Never raises for
    API errors: the caller is already handling a failure. Returns whether it wrote."""
    try:
        body = await api.get(API_VERSION, KIND, namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return False
        cad = Cad.from_body(body)
        before = list(cad.status.get("conditions") or [])
        after = failure_conditions(before, reason, message, now, cad.generation)
        if _same(before, after):
            return False
        transition = Transition(reason, message[:MESSAGE_LIMIT], "Warning")
        await write_status(api, cad, {"conditions": after}, transition, now)
    except (ApiError, TransportError, OSError) as error:
        log.warning("could not report %s on %s/%s: %r", reason, namespace, name, error)
        return False
    return True
