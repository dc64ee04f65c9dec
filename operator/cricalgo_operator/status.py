"""Status writes: one merge patch of the status subresource plus a Kubernetes Event.

    await write_status(api, cad, {"canaryWeight": 25, "currentStep": 1},
                       Transition("StepPassed", "canary weight 25%"))

What to write is computed by pure code (the canary engine, conditions.py, events.py);
`kubectl wait --for=condition=Ready cad/NAME` reads the Ready condition,
`--for=condition=Promoted` waits for the outcome of the spec's image.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from . import metrics
from .events import Transition, render_event
from .kubeapi import ApiError, KubeApi
from .model import Cad
from .naming import API_VERSION, KIND
from .notifications.sender import notify
from .stable_env import prepare_status_patch

log = logging.getLogger(__name__)


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
