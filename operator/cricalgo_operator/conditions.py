"""The CR's conditions (Ready, Progressing, Degraded, Promoted), computed from its status
and its Deployments' readiness. Pure: the writers (reconciler, canary runner) persist them;
conditions of other types in the list are kept as they are."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from .events import Transition, rfc3339
from .readiness import DeploymentReadiness, Readiness, stable_readiness

CANARY_PHASES = ("Progressing", "Paused", "Promoting", "RollingBack")
DEGRADED_PHASES = ("RolledBack",)
# Phases in which the spec's image has no outcome yet.
UNDECIDED_PHASES = ("Initializing", "Progressing", "Paused", "Promoting")
# Degraded reasons for the operator's own failures on a CR (failures.py reports them): a
# canary decision or the readiness watcher keeps them, a reconcile that succeeds clears them.
OWNERSHIP_CONFLICT = "OwnershipConflict"
RECONCILE_FAILED = "ReconcileFailed"
ANALYSIS_FAILED = "AnalysisCannotRun"
FAILURE_REASONS = (OWNERSHIP_CONFLICT, RECONCILE_FAILED, ANALYSIS_FAILED)


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    now: datetime.datetime,
    generation: int,
) -> list[dict[str, Any]]:
    """Conditions with `type_` set (None: Unknown); lastTransitionTime moves only when
    status flips."""
    value = "Unknown" if status is None else "True" if status else "False"
    out: list[dict[str, Any]] = []
    found = False
    for condition in conditions:
        if condition.get("type") != type_:
            out.append(dict(condition))
            continue
        found = True
        changed = condition.get("status") != value
        out.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": rfc3339(now)
                if changed
                else condition.get("lastTransitionTime", rfc3339(now)),
                "observedGeneration": generation,
            }
        )
    if not found:
        out.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": rfc3339(now),
                "observedGeneration": generation,
            }
        )
    return out


def promoted_condition(spec_image: str, status: Mapping[str, Any]) -> tuple[bool | None, str, str]:
    """The `Promoted` condition for the spec's image: (status, reason, message).

    True once the spec's image is the stable one with no canary in flight (promoted, or
    the first revision), False from the rollback decision on (or an abort), Unknown while
    its canary runs. A pipeline ends on `kubectl wait --for=condition=Promoted` (success)
    or `--for=condition=Promoted=False` (failure); the condition's observedGeneration
    keeps either from matching an older spec.
    """
    phase = status.get("phase") or "Initializing"
    if phase in ("RollingBack", "RolledBack"):
        failed = status.get("failedImage") or status.get("canaryImage")
        return False, "RolledBack", f"{failed} was rolled back; {status.get('stableImage')} serves"
    if phase == "Initializing":
        return None, phase, f"first revision {spec_image} is starting"
    if phase in UNDECIDED_PHASES:
        weight = int(status.get("canaryWeight") or 0)
        return None, phase, f"canary {status.get('canaryImage') or spec_image} at {weight}%"
    if status.get("stableImage") == spec_image:
        return True, "Promoted", f"{spec_image} is stable"
    return None, "Pending", f"{spec_image} is not the stable image yet"


def migration_holds(status: Mapping[str, Any]) -> bool:
    """Whether a canary before its first step waits for its migration Job."""
    step = status.get("currentStep")
    waiting = (status.get("migration") or {}).get("state") in ("Pending", "Running")
    return waiting and (step is None or int(step) < 0)


def reported_failure(conditions: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The Degraded condition if it reports one of the operator's failures."""
    degraded = next((c for c in conditions if c.get("type") == "Degraded"), None)
    if degraded and degraded.get("status") == "True" and degraded.get("reason") in FAILURE_REASONS:
        return degraded
    return None


def canary_conditions(
    conditions: Iterable[Mapping[str, Any]],
    status: Mapping[str, Any],
    now: datetime.datetime,
    generation: int,
    spec_image: str,
    *,
    keep_failure: bool = False,
    why: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Progressing, Degraded and Promoted for the phase in `status`; the others (Ready)
    are left as they are. With `keep_failure` a Degraded condition reporting one of the
    operator's failures stays. `why` (reason, message) says why a running canary holds or
    rolls back (AwaitingCanaryPods, CheckFailed, ProgressDeadlineExceeded, ...): it becomes
    the Progressing condition's reason and message."""
    phase = status.get("phase") or "Initializing"
    out = [dict(c) for c in conditions]
    migration = status.get("migration") or {}
    if phase in CANARY_PHASES and migration_holds(status):
        # The canary's pods wait for its schema migration (migrations.py).
        message = f"canary {status.get('canaryImage')} at 0%: {migration.get('message')}"
        out = set_condition(out, "Progressing", True, "AwaitingMigration", message, now, generation)
    elif phase in CANARY_PHASES:
        weight = int(status.get("canaryWeight") or 0) if status.get("canaryRevision") else 0
        reason, message = phase, f"canary {status.get('canaryImage')} at {weight}%"
        if why is not None:
            reason, message = why
        out = set_condition(out, "Progressing", True, reason, message, now, generation)
    else:
        message = f"stable {status.get('stableImage')} serves all traffic"
        out = set_condition(out, "Progressing", False, "NoCanary", message, now, generation)
    if keep_failure and reported_failure(out):
        pass
    elif (
        phase in DEGRADED_PHASES
        and migration.get("state") == "Failed"
        and migration.get("image") == status.get("failedImage")
    ):
        message = f"canary {status.get('failedImage')} was rolled back: {migration.get('message')}"
        out = set_condition(out, "Degraded", True, "MigrationFailed", message, now, generation)
    elif phase in DEGRADED_PHASES:
        message = f"canary {status.get('failedImage')} was rolled back"
        out = set_condition(out, "Degraded", True, phase, message, now, generation)
    else:
        message = "no rollback pending"
        out = set_condition(out, "Degraded", False, "AsExpected", message, now, generation)
    value, reason, message = promoted_condition(spec_image, status)
    return set_condition(out, "Promoted", value, reason, message, now, generation)


def ready_condition(
    conditions: Iterable[Mapping[str, Any]],
    readiness: Readiness,
    now: datetime.datetime,
    generation: int,
) -> list[dict[str, Any]]:
    """The Ready condition from the stable Deployments' readiness; the others as they are."""
    return set_condition(
        [dict(c) for c in conditions],
        "Ready",
        readiness.ready,
        readiness.reason,
        readiness.message,
        now,
        generation,
    )


def conditions_for(
    status: Mapping[str, Any],
    deployments: Iterable[DeploymentReadiness],
    now: datetime.datetime,
    generation: int,
    spec_image: str,
    *,
    keep_failure: bool = False,
) -> list[dict[str, Any]]:
    """Ready / Progressing / Degraded / Promoted for `status` and the CR's Deployments.

    With `keep_failure` a Degraded condition reporting one of the operator's failures
    (failures.py) stays: only a reconcile that succeeds clears it.
    """
    conditions = status.get("conditions") or []
    ready = ready_condition(conditions, stable_readiness(deployments), now, generation)
    # Why a running canary holds is the engine's to say: kept as its last decision left it.
    progressing = next((c for c in conditions if c.get("type") == "Progressing"), None)
    why = None
    if progressing and progressing.get("status") == "True":
        why = (str(progressing.get("reason")), str(progressing.get("message")))
    return canary_conditions(
        ready, status, now, generation, spec_image, keep_failure=keep_failure, why=why
    )


def ready_transition(
    before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]]
) -> Transition | None:
    """The Event for a flip of the Ready condition, if it flipped."""

    def ready(conditions: Iterable[Mapping[str, Any]]) -> Mapping[str, Any]:
        return next((c for c in conditions if c.get("type") == "Ready"), {})

    old, new = ready(before), ready(after)
    if old.get("status") == new.get("status") or (
        not old and new.get("status") == "False"
    ):  # a new CR is not ready yet: not news
        return None
    if new.get("status") == "True":
        return Transition("Available", str(new.get("message", "")))
    return Transition("Unavailable", str(new.get("message", "")), "Warning")


def readiness_changed(
    status: Mapping[str, Any], deployments: Iterable[DeploymentReadiness]
) -> bool:
    """Whether the Ready condition (status, reason, message) in `status` is out of date."""
    readiness = stable_readiness(deployments)
    current: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    wanted = ("True" if readiness.ready else "False", readiness.reason, readiness.message)
    return (current.get("status"), current.get("reason"), current.get("message")) != wanted
