"""Status writes: one merge patch of the status subresource plus a Kubernetes Event.

The canary engine reuses `write_status` for its own transitions:

    await write_status(api, cad, {"canaryWeight": 25, "currentStep": 1},
                       Transition("StepAdvanced", "canary weight 25%"))

Conditions are computed with the pure `set_condition`; `kubectl wait
--for=condition=Ready cad/NAME` reads the Ready one, `--for=condition=Promoted` waits
for the outcome of the spec's image (`promoted_condition`).
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Any, Literal

from . import metrics
from .kubeapi import ApiError, KubeApi
from .model import Cad
from .naming import API_VERSION, FIELD_MANAGER, KIND
from .notifications.sender import notify
from .stable_env import prepare_status_patch

log = logging.getLogger(__name__)

HISTORY_LIMIT = 10


@dataclass(frozen=True)
class Transition:
    """What happened, as an Event: `reason` is CamelCase, `message` a sentence."""

    reason: str
    message: str
    type: Literal["Normal", "Warning"] = "Normal"


def rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


# Phases in which the spec's image has no outcome yet.
UNDECIDED_PHASES = ("Initializing", "Progressing", "Paused", "Promoting", "RollingBack")


def promoted_condition(spec_image: str, status: dict[str, Any]) -> tuple[bool | None, str, str]:
    """The `Promoted` condition for the spec's image: (status, reason, message).

    True once the spec's image is the stable one with no canary in flight (promoted, or
    the first revision), False once it was rolled back (or aborted), Unknown while its
    canary runs. A pipeline ends on `kubectl wait --for=condition=Promoted` (success) or
    `--for=condition=Promoted=False` (failure); the condition's observedGeneration keeps
    either from matching an older spec.
    """
    phase = status.get("phase") or "Initializing"
    if phase in ("RolledBack", "Failed"):
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


def set_promoted(
    conditions: list[dict[str, Any]],
    spec_image: str,
    status: dict[str, Any],
    now: datetime.datetime,
    generation: int,
) -> list[dict[str, Any]]:
    """Conditions with `Promoted` set for the spec's image and `status` (pure)."""
    value, reason, message = promoted_condition(spec_image, status)
    return set_condition(conditions, "Promoted", value, reason, message, now, generation)


def with_history(history: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """History with `entry` appended, the oldest dropped beyond HISTORY_LIMIT."""
    return [*history, entry][-HISTORY_LIMIT:]


def render_event(cad: Cad, transition: Transition, now: datetime.datetime) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{cad.name}.", "namespace": cad.namespace},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": cad.name,
            "namespace": cad.namespace,
            "uid": cad.uid,
        },
        "reason": transition.reason,
        "message": transition.message[:1024],
        "type": transition.type,
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "reportingInstance": FIELD_MANAGER,
        "firstTimestamp": rfc3339(now),
        "lastTimestamp": rfc3339(now),
        "count": 1,
    }


async def emit_event(
    api: KubeApi, cad: Cad, transition: Transition, now: datetime.datetime
) -> None:
    """Post an Event; losing one is logged, never fatal (the status is the record)."""
    try:
        await api.create(render_event(cad, transition, now))
    except ApiError as error:
        log.warning(
            "event %s for %s/%s not posted: %s", transition.reason, cad.namespace, cad.name, error
        )


async def write_status(
    api: KubeApi,
    cad: Cad,
    patch: dict[str, Any],
    transition: Transition | None = None,
    now: datetime.datetime | None = None,
) -> Cad:
    """Merge-patch `patch` into the CR's status; emit `transition` as an Event.

    Keys set to None are removed. The patch is conditional on `cad.resource_version`:
    if someone wrote the CR since `cad` was read, ApiError 409 is raised and the
    caller retries from a fresh read. Returns the CR as the API server now has it.
    A `stableSpec` keeps no literal env value: they go to a Secret first (stable_env.py).
    """
    moment = now or datetime.datetime.now(datetime.UTC)
    patch = await prepare_status_patch(api, cad, patch)
    body = await api.patch_status(
        API_VERSION, KIND, cad.namespace, cad.name, patch, cad.resource_version
    )
    outcome = ended_outcome(cad.status.get("history") or [], patch.get("history"))
    if outcome is not None:
        metrics.record_outcome(cad.namespace, cad.name, outcome)
    if transition is not None:
        await emit_event(api, cad, transition, moment)
    after = Cad.from_body(body)
    notify(cad, after, moment)  # queued, never awaited: receivers do not slow the rollout
    return after


def ended_outcome(before: list[dict[str, Any]], after: list[dict[str, Any]] | None) -> str | None:
    """The outcome of the rollout a history patch records, if it adds one.

    Every end of a canary (promotion, rollback, abort, supersession) is a new history
    entry, whichever writer records it, so counting here counts each exactly once.
    """
    if not after or (before and after[-1] == before[-1]):
        return None
    return str(after[-1].get("outcome"))
