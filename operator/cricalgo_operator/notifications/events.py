"""Which rollout events a status write is: a pure function of the status before and after.

Computed from the status alone, whoever wrote it (the canary analysis, the reconciler, a
failure report), so each event is seen exactly once: at the write that made it true.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class RolloutEvent(StrEnum):
    STARTED = "Started"
    STEP_ADVANCED = "StepAdvanced"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


ALL_EVENTS = tuple(RolloutEvent)

# Degraded=True with a phase as its reason reports a canary's outcome (a rollback); any
# other reason is the operator failing at its work on the CR (an object it does not own,
# a child the API server refuses, a spec the analysis cannot use, a deadline).
_PHASE_REASONS = frozenset({"RollingBack", "RolledBack"})


@dataclass(frozen=True)
class Happened:
    """One event, with what a receiver needs to say what it was about."""

    event: RolloutEvent
    canary_image: str | None
    stable_image: str | None
    weight: int
    step: int  # index into canary.steps, -1 before the first
    reason: str = ""


def _degraded(status: Mapping[str, Any]) -> tuple[str, str] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Degraded" and condition.get("status") == "True":
            return str(condition.get("reason") or ""), str(condition.get("message") or "")
    return None


def _new_history_entry(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    old, new = before.get("history") or [], after.get("history") or []
    if not new or (old and old[-1] == new[-1]):
        return {}
    return dict(new[-1])


def what_happened(
    before: Mapping[str, Any], after: Mapping[str, Any], steps: Sequence[int] = ()
) -> list[Happened]:
    """The events from status `before` to status `after`, in the order they happened.

    With the spec's `steps`, a step's weight is the one it sets, whether or not the same
    write already moved `canaryWeight` (a writer may move it in a second write)."""
    canary = after.get("canaryImage") or before.get("canaryImage")
    stable = after.get("stableImage") or before.get("stableImage")
    weight = int(after.get("canaryWeight") or 0)
    step = int(after.get("currentStep", -1))
    if 0 <= step < len(steps):
        weight = int(steps[step])

    def happened(event: RolloutEvent, reason: str = "", image: str | None = None) -> Happened:
        return Happened(event, image or canary, stable, weight, step, reason)

    out: list[Happened] = []
    started = after.get("canaryStartedAt")
    if started and started != before.get("canaryStartedAt"):
        out.append(happened(RolloutEvent.STARTED))
    if step >= 0 and after.get("canaryImage") and step > int(before.get("currentStep", -1)):
        out.append(happened(RolloutEvent.STEP_ADVANCED))
    if after.get("phase") == "Paused" and before.get("phase") != "Paused":
        out.append(happened(RolloutEvent.PAUSED))
    # Promoted when the promotion begins (the stable takes the canary's version and the
    # traffic); one that ends without that phase is announced by its history entry.
    promoting = after.get("phase") == "Promoting"
    if promoting and before.get("phase") != "Promoting":
        out.append(happened(RolloutEvent.PROMOTED, str(after.get("promotionReason") or "")))
    ended = _new_history_entry(before, after)
    outcome, why = ended.get("outcome"), str(ended.get("reason") or "")
    if outcome == "promoted":
        if not promoting and before.get("phase") != "Promoting":
            out.append(happened(RolloutEvent.PROMOTED, why, ended.get("image")))
    elif outcome in ("rolledBack", "aborted"):
        reason = why if outcome == "rolledBack" else f"aborted: {why}".rstrip(": ")
        out.append(happened(RolloutEvent.ROLLED_BACK, reason, ended.get("image")))
    failure = _degraded(after)
    if failure and failure[0] not in _PHASE_REASONS:
        previous = _degraded(before)
        if previous is None or previous[0] != failure[0]:
            out.append(happened(RolloutEvent.FAILED, f"{failure[0]}: {failure[1]}"))
    return out
