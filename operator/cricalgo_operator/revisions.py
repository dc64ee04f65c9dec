"""Revision bookkeeping as pure status patches: new canary, abort, promote, roll back.

Each function takes the CR and `now` and returns the merge patch for its status (None
removes a key). The reconciler and the canary engine write them with
`status.write_status` and then re-apply the children (`children.apply_children`).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from .model import Cad, pod_inputs
from .naming import COMPONENTS
from .status import Transition, rfc3339, set_promoted, with_history

CANARY_RESET: dict[str, Any] = {
    "canaryRevision": None,
    "canaryImage": None,
    "canaryWeight": 0,
    "currentStep": -1,
    "stepStartedAt": None,
    "failedChecks": 0,
    "inconclusiveChecks": 0,
}


def _history_entry(cad: Cad, outcome: str, reason: str, now: datetime.datetime) -> dict[str, Any]:
    return {
        "image": cad.status.get("canaryImage") or cad.spec["image"],
        "outcome": outcome,
        "reason": reason,
        "startedAt": cad.status.get("canaryStartedAt") or rfc3339(now),
        "finishedAt": rfc3339(now),
    }


def plan_revision(cad: Cad, now: datetime.datetime) -> tuple[dict[str, Any], Transition | None]:
    """What the spec's pod template means for the canary state.

    - first sight: the spec is the stable revision (nothing to compare against);
    - a revision that is neither stable nor the current canary starts a canary at
      weight 0 (superseding a canary in flight);
    - going back to the stable revision aborts a canary in flight;
    - the current canary's revision (also after a rollback) changes nothing;
    - an image that failed its canary gets its track rolled back from the start (no pods,
      no traffic) until `retry`.
    """
    status = cad.status
    revision = cad.spec_revision
    image = cad.spec["image"]
    if not status.get("stableRevision"):
        return (
            {
                "phase": "Initializing",
                "stableRevision": revision,
                "stableSpec": pod_inputs(cad.spec),
                "stableImage": image,
                **CANARY_RESET,
            },
            Transition("Initializing", f"first revision {revision} ({image}) becomes stable"),
        )
    if status.get("phase") == "Promoting" or revision == status.get("canaryRevision"):
        return {}, None
    if revision == status.get("stableRevision"):
        if not cad.canary_active:
            return {}, None
        if status.get("phase") in ("RolledBack", "Failed"):
            # The rollback is already in the history; only the idle canary goes.
            return (
                {**CANARY_RESET, "phase": "Ready", "canaryStartedAt": None},
                Transition("CanaryRemoved", f"spec returned to stable revision {revision}"),
            )
        history = with_history(
            status.get("history") or [],
            _history_entry(cad, "aborted", "spec returned to the stable revision", now),
        )
        return (
            {**CANARY_RESET, "phase": "Ready", "canaryStartedAt": None, "history": history},
            Transition(
                "CanaryAborted",
                f"spec returned to stable revision {revision}; canary "
                f"{status.get('canaryImage')} removed",
                "Warning",
            ),
        )
    # An image that failed its canary comes back rolled back (scaled to zero, no traffic):
    # only `retry` analyses it again, so re-applying it never starts its pods by itself.
    failed = image == status.get("failedImage")
    phase = "Paused" if cad.spec["canary"].get("paused") else "Progressing"
    patch: dict[str, Any] = {
        **CANARY_RESET,
        "phase": "RolledBack" if failed else phase,
        "canaryRevision": revision,
        "canaryImage": image,
        "canaryStartedAt": rfc3339(now),
        "stepStartedAt": rfc3339(now),
        "lastAnalysis": None,
    }
    if cad.canary_active and status.get("phase") not in ("RolledBack", "Failed"):
        patch["history"] = with_history(
            status.get("history") or [],
            _history_entry(cad, "superseded", f"new revision {revision} ({image})", now),
        )
    if failed:
        return patch, Transition(
            "FailedImage",
            f"{image} failed its canary before; revision {revision} waits at zero replicas"
            " for a retry",
            "Warning",
        )
    return patch, Transition(
        "CanaryStarted", f"revision {revision} ({image}) starts as canary at weight 0"
    )


def promotion_patch(
    cad: Cad, reason: str, now: datetime.datetime, serving: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Step one of a promotion: the stable track takes the canary's pod template.

    `serving`: available replicas per component, both tracks, right now. The stable is
    scaled to at least that (render_scaling.track_bounds) and the canary keeps serving at
    its weight until the stable track is available at that size (`promotion_done_patch`),
    so capacity never dips.
    """
    return {
        "phase": "Promoting",
        "stableSpec": pod_inputs(cad.spec),
        "stableRevision": cad.status.get("canaryRevision") or cad.spec_revision,
        "stableImage": cad.status.get("canaryImage") or cad.spec["image"],
        "promotionReason": reason,
        "promotionReplicas": {c: int((serving or {}).get(c, 0)) for c in COMPONENTS},
    }


def promotion_done_patch(cad: Cad, now: datetime.datetime) -> dict[str, Any]:
    """Step two: the canary track goes away, the promotion enters the history."""
    reason = str(cad.status.get("promotionReason") or "promoted")
    history = with_history(
        cad.status.get("history") or [], _history_entry(cad, "promoted", reason, now)
    )
    return {
        **CANARY_RESET,
        "phase": "Ready",
        "canaryStartedAt": None,
        "promotionReason": None,
        "promotionReplicas": None,
        "history": history,
    }


def rollback_patch(cad: Cad, reason: str, now: datetime.datetime) -> dict[str, Any]:
    """Weight 0, canary scaled to zero (kept for inspection), image remembered as failed.

    The `Promoted` condition turns False in the same write, so a pipeline waiting on it
    ends with the rollback, not with the next reconcile."""
    history = with_history(
        cad.status.get("history") or [], _history_entry(cad, "rolledBack", reason, now)
    )
    patch: dict[str, Any] = {
        "phase": "RolledBack",
        "canaryWeight": 0,
        "failedImage": cad.status.get("canaryImage") or cad.spec["image"],
        "history": history,
    }
    if patch["failedImage"] == cad.spec["image"]:  # else the spec moved on: not its outcome
        patch["conditions"] = set_promoted(
            cad.status.get("conditions") or [],
            cad.spec["image"],
            {**cad.status, **patch},
            now,
            cad.generation,
        )
    return patch
