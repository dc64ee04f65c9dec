"""The reconciler: from a CR to applied children and an up-to-date status.

Called by the Kopf handlers (handlers.py); everything here is idempotent, so a handler
may run twice or after a restart with the same result.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from typing import Any

from . import metrics
from .children import apply_children, child_id, drifted, widened_children
from .failures import reported_failure
from .kubeapi import ApiError, KubeApi
from .model import Cad
from .naming import API_VERSION, KIND
from .readiness import DeploymentReadiness, deployment_readiness, stable_readiness
from .render import render
from .render_scaling import promotion_floor
from .revisions import plan_revision, promotion_done_patch
from .stable_env import has_literal_env
from .status import Transition, set_condition, set_promoted, write_status

log = logging.getLogger(__name__)

CANARY_PHASES = ("Progressing", "Paused", "Promoting", "RollingBack")
DEGRADED_PHASES = ("RolledBack", "Failed")


async def reconcile(api: KubeApi, cad: Cad, now: datetime.datetime) -> Cad:
    """Start/abort canaries for a changed pod template, apply all children, update status."""
    if has_literal_env(cad.status.get("stableSpec")):
        # Written before env values moved to Secrets: the write moves them (stable_env.py).
        cad = await write_status(api, cad, {"stableSpec": cad.status["stableSpec"]})
    patch, transition = plan_revision(cad, now)
    if patch:
        # Status first: if we stop right after, the next run renders the same children.
        # The children list is widened in the same write (one write instead of two).
        planned = cad.with_status(
            {k: v for k, v in {**cad.status, **patch}.items() if v is not None}
        )
        widened = widened_children(planned)
        if widened is not None:
            patch["children"] = widened
        cad = await write_status(api, cad, patch, transition, now)
    cad, applied = await apply_children(api, cad)
    deployments = [deployment_readiness(o) for o in applied if o.get("kind") == "Deployment"]
    return await refresh_status(api, cad, deployments, now)


async def reconcile_fresh(api: KubeApi, cad: Cad, now: datetime.datetime, attempts: int = 3) -> Cad:
    """`reconcile`, re-reading the CR when a concurrent status write wins (409).

    The canary timer and the readiness watcher write the same status; every write is
    conditional on the version read, so losing a race costs a re-read, never a clobber.
    """
    for attempt in range(attempts):
        try:
            return await reconcile(api, cad, now)
        except ApiError as error:
            if error.status != 409 or attempt == attempts - 1:
                raise
            body = await api.get(API_VERSION, KIND, cad.namespace, cad.name)
            if body is None:
                return cad
            cad = Cad.from_body(body)
    return cad


def conditions_for(
    cad: Cad,
    deployments: Iterable[DeploymentReadiness],
    now: datetime.datetime,
    *,
    keep_failure: bool = False,
) -> list[dict[str, Any]]:
    """Ready / Progressing / Degraded / Promoted for the CR's phase and its Deployments.

    With `keep_failure` a Degraded condition reporting a reconcile failure (failures.py)
    stays: only a reconcile that succeeds clears it.
    """
    phase = cad.status.get("phase") or "Initializing"
    readiness = stable_readiness(deployments)
    conditions = list(cad.status.get("conditions") or [])
    conditions = set_condition(
        conditions,
        "Ready",
        readiness.ready,
        readiness.reason,
        readiness.message,
        now,
        cad.generation,
    )
    if phase in CANARY_PHASES:
        message = f"canary {cad.status.get('canaryImage')} at {cad.canary_weight}%"
        conditions = set_condition(
            conditions, "Progressing", True, phase, message, now, cad.generation
        )
    else:
        conditions = set_condition(
            conditions,
            "Progressing",
            False,
            "NoCanary",
            f"stable {cad.status.get('stableImage')} serves all traffic",
            now,
            cad.generation,
        )
    if keep_failure and reported_failure(conditions):
        pass
    elif phase in DEGRADED_PHASES:
        message = f"canary {cad.status.get('failedImage')} was rolled back"
        conditions = set_condition(
            conditions, "Degraded", True, phase, message, now, cad.generation
        )
    else:
        conditions = set_condition(
            conditions,
            "Degraded",
            False,
            "AsExpected",
            "no rollback pending",
            now,
            cad.generation,
        )
    return set_promoted(conditions, cad.spec["image"], cad.status, now, cad.generation)


async def refresh_status(
    api: KubeApi,
    cad: Cad,
    deployments: list[DeploymentReadiness],
    now: datetime.datetime,
    *,
    settle: bool = True,
) -> Cad:
    """Write conditions if they changed; finish a promotion once stable is available.

    Initializing becomes Ready once the stable Deployments are available (whichever path
    sees that first): a CR whose pods never start stays Initializing, its Ready condition
    saying why. With `settle` (the reconciler, after applying everything) also record
    observedGeneration; the readiness watcher leaves that alone.
    """
    phase = cad.status.get("phase") or "Initializing"
    if phase == "Promoting" and promotion_ready(cad, deployments):
        cad = await write_status(
            api,
            cad,
            promotion_done_patch(cad, now),
            Transition("Promoted", f"{cad.status.get('stableImage')} is stable"),
            now,
        )
        cad, applied = await apply_children(api, cad)
        deployments = [deployment_readiness(o) for o in applied if o.get("kind") == "Deployment"]
        phase = "Ready"
    patch: dict[str, Any] = {}
    if phase == "Initializing" and stable_readiness(deployments).ready:
        patch["phase"] = phase = "Ready"
    conditions = conditions_for(
        cad.with_status({**cad.status, "phase": phase}), deployments, now, keep_failure=not settle
    )
    if conditions != cad.status.get("conditions"):
        patch["conditions"] = conditions
    if settle and cad.status.get("observedGeneration") != cad.generation:
        patch["observedGeneration"] = cad.generation
    transition = _ready_transition(cad.status.get("conditions") or [], conditions)
    if patch:
        cad = await write_status(api, cad, patch, transition, now)
    metrics.record_state(cad.namespace, cad.name, phase, cad.canary_weight)
    return cad


def promotion_ready(cad: Cad, deployments: Iterable[DeploymentReadiness]) -> bool:
    """Whether the stable track runs the promoted template with at least the replicas that
    served traffic when the promotion began: only then does the traffic come back to it."""
    deployments = list(deployments)
    if not stable_readiness(deployments).ready:
        return False
    for d in deployments:
        serving = cad.promoting_with(d.component) if d.track == "stable" else None
        if serving is None or d.component not in cad.spec:
            continue
        replicas = cad.spec[d.component]["replicas"]
        floor = promotion_floor(int(replicas["min"]), int(replicas["max"]), serving)
        if d.available < floor:
            return False
    return True


def _ready_transition(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> Transition | None:
    def ready(conditions: list[dict[str, Any]]) -> dict[str, Any]:
        return next((c for c in conditions if c.get("type") == "Ready"), {})

    old, new = ready(before), ready(after)
    if old.get("status") == new.get("status") or (
        not old and new.get("status") == "False"
    ):  # a new CR is not ready yet: not news
        return None
    if new.get("status") == "True":
        return Transition("Available", new.get("message", ""))
    return Transition("Unavailable", new.get("message", ""), "Warning")


def readiness_changed(cad: Cad, deployments: Iterable[DeploymentReadiness]) -> bool:
    """Whether the CR's Ready condition (status, reason, message) is out of date (pure)."""
    readiness = stable_readiness(deployments)
    current: dict[str, Any] = next(
        (c for c in cad.status.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    wanted = ("True" if readiness.ready else "False", readiness.reason, readiness.message)
    return (current.get("status"), current.get("reason"), current.get("message")) != wanted


async def refresh_readiness(
    api: KubeApi,
    cad: Cad,
    deployments: list[DeploymentReadiness],
    now: datetime.datetime,
    attempts: int = 2,
) -> Cad | None:
    """Bring the conditions up to date with the Deployments' status (the watcher's path).

    `cad` and `deployments` come from the in-memory indexes, so nothing is read or written
    unless the Ready condition changed. The CR is then re-read (the index may lag our own
    writes) and left to the reconciler while one is in flight for a newer generation.
    """
    if not readiness_changed(cad, deployments) and cad.status.get("phase") != "Promoting":
        return None
    for attempt in range(attempts):
        body = await api.get(API_VERSION, KIND, cad.namespace, cad.name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return None
        fresh = Cad.from_body(body)
        if fresh.uid != cad.uid or fresh.status.get("observedGeneration") != fresh.generation:
            return None
        try:
            return await refresh_status(api, fresh, deployments, now, settle=False)
        except ApiError as error:
            if error.status != 409 or attempt == attempts - 1:
                raise
    return None


def _owned_by(child: dict[str, Any], cad: Cad) -> bool:
    refs = (child.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == cad.uid for r in refs)


async def repair_child(
    api: KubeApi, cad: Cad, kind: str, name: str, actual: dict[str, Any] | None
) -> bool:
    """Re-apply one child that was deleted (`actual` None) or edited away from its render.

    The in-memory CR may lag our own status writes, so a suspected drift is confirmed
    against the CR as the API server has it before anything is written.
    """
    key = f"{kind}/{name}"
    if not _needs_repair(cad, key, actual):
        return False
    body = await api.get(API_VERSION, KIND, cad.namespace, cad.name)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        return False
    fresh = Cad.from_body(body)
    if fresh.uid != cad.uid or not _needs_repair(fresh, key, actual):
        return False
    await api.apply(desired_children(fresh)[key])
    log.info("repaired %s of %s/%s", key, cad.namespace, cad.name)
    return True


# Child events arrive by the thousand under load, each needing the owner's render; one
# render per CR version (uid, resourceVersion) is enough. Bounded, oldest out first.
_RENDERS: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
_RENDERS_MAX = 512


def desired_children(cad: Cad) -> dict[str, dict[str, Any]]:
    """`render(cad)` by child id, memoised per CR version (treat the result as read-only)."""
    if cad.resource_version is None:
        return {child_id(m): m for m in render(cad)}
    key = (cad.uid, cad.resource_version)
    cached = _RENDERS.get(key)
    if cached is None:
        cached = _RENDERS[key] = {child_id(m): m for m in render(cad)}
        while len(_RENDERS) > _RENDERS_MAX:
            _RENDERS.pop(next(iter(_RENDERS)))
    return cached


def _needs_repair(cad: Cad, key: str, actual: dict[str, Any] | None) -> bool:
    desired = desired_children(cad).get(key)
    if desired is None:
        return False
    return actual is None or drifted(desired, actual)
