"""What a new pod template means for the canary: `revise(config, status, now)`.

Part of the engine (pure; `decide` calls it first, and the reconciler calls it through
`decide` as soon as the spec changes):

- first sight: the spec is the stable revision (nothing to compare against);
- a revision that is neither stable nor the current canary gets a canary track at
  weight 0 (superseding a canary in flight, one history entry);
- going back to the stable revision aborts a canary in flight (one history entry);
- the current canary's revision (also after a rollback) changes nothing;
- an image that failed its canary gets its track rolled back from the start (no pods,
  no traffic) until `retry`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cricalgo_operator.canary.model import (
    Action,
    CanaryConfig,
    CanaryStatus,
    Decision,
    Ended,
    Phase,
)

# The canary fields of a status without a canary.
CANARY_RESET: dict[str, Any] = {
    "canary_image": None,
    "canary_revision": None,
    "canary_weight": 0,
    "current_step": -1,
    "step_started_at": None,
    "canary_started_at": None,
    "failed_checks": 0,
    "inconclusive_checks": 0,
}
# Phases whose canary already ended (its history entry is written).
_ENDED = (Phase.ROLLING_BACK, Phase.ROLLED_BACK)


def is_stable(config: CanaryConfig, status: CanaryStatus) -> bool:
    if status.stable_revision:
        return config.revision == status.stable_revision
    return config.image == status.stable_image


def is_canary(config: CanaryConfig, status: CanaryStatus) -> bool:
    if status.canary_revision:
        return config.revision == status.canary_revision
    return config.image == status.canary_image


def revise(config: CanaryConfig, status: CanaryStatus, now: datetime) -> Decision | None:
    """The decision a changed pod template calls for; None when it calls for none."""
    revision, image = config.revision, config.image
    if not status.stable_revision and not status.stable_image:
        first = status.evolve(
            **CANARY_RESET,
            phase=Phase.INITIALIZING,
            stable_revision=revision,
            stable_image=image,
            stable_spec=dict(config.pod_inputs),
        )
        message = f"first revision {revision} ({image}) becomes stable"
        return Decision(Action.INITIALIZE, "Initializing", message, first)
    if status.phase == Phase.PROMOTING:
        return None
    if status.canary_active and is_canary(config, status):
        return None
    if is_stable(config, status):
        if not status.canary_active:
            return None
        removed = status.evolve(**CANARY_RESET, phase=Phase.READY)
        if status.phase in _ENDED:
            message = f"spec returned to stable revision {revision}"
            return Decision(Action.REMOVE, "CanaryRemoved", message, removed)
        message = (
            f"spec returned to stable revision {revision}; canary {status.canary_image} removed"
        )
        aborted = Ended(
            status.canary_image or image, "aborted", "spec returned to the stable revision"
        )
        return Decision(
            Action.REMOVE, "CanaryAborted", message, removed, ended=aborted, warning=True
        )
    failed = image == status.failed_image
    phase = Phase.PAUSED if config.paused else Phase.PROGRESSING
    created = status.evolve(
        **{
            **CANARY_RESET,
            "phase": Phase.ROLLED_BACK if failed else phase,
            "canary_image": image,
            "canary_revision": revision,
            "canary_started_at": now,
            "step_started_at": now,
            "last_analysis": None,
        }
    )
    ended: Ended | None = None
    if status.canary_active and status.phase not in _ENDED:
        superseded = f"new revision {revision} ({image})"
        ended = Ended(status.canary_image or image, "superseded", superseded)
    if failed:
        message = (
            f"{image} failed its canary before; revision {revision} waits at zero replicas"
            " for a retry"
        )
        return Decision(Action.CREATE, "FailedImage", message, created, ended=ended, warning=True)
    message = f"revision {revision} ({image}) starts as canary at weight 0"
    return Decision(Action.CREATE, "CanaryStarted", message, created, ended=ended)
