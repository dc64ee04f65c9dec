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
from .children import apply_children, child_id, drifted
from .kubeapi import ApiError, KubeApi
from .model import Cad
from .naming import API_VERSION, KIND
from .readiness import DeploymentReadiness, deployment_readiness, stable_readiness
from .render import render
from .revisions import plan_revision, promotion_done_patch
from .status import Transition, set_condition, write_status

log = logging.getLogger(__name__)

CANARY_PHASES = ("Progressing", "Paused", "Promoting", "RollingBack")
DEGRADED_PHASES = ("RolledBack", "Failed")


async def reconcile(api: KubeApi, cad: Cad, now: datetime.datetime) -> Cad:
    """Start/abort canaries for a changed pod template, apply all children, update status."""
    patch, transition = plan_revision(cad, now)
    if patch:
        # Status first: if we stop right after, the next run renders the same children.
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
    cad: Cad, deployments: Iterable[DeploymentReadiness], now: datetime.datetime
) -> list[dict[str, Any]]:
    """Ready / Progressing / Degraded for the CR's phase and its Deployments."""
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
    if phase in DEGRADED_PHASES:
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
    return conditions


async def refresh_status(
    api: KubeApi, cad: Cad, deployments: list[DeploymentReadiness], now: datetime.datetime
) -> Cad:
    """Write phase, observedGeneration and conditions if they changed; finish promotions."""
    phase = cad.status.get("phase") or "Initializing"
    if phase == "Promoting" and stable_readiness(deployments).ready:
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
    if phase == "Initializing":
        patch["phase"] = phase = "Ready"
    conditions = conditions_for(cad.with_status({**cad.status, "phase": phase}), deployments, now)
    if conditions != cad.status.get("conditions"):
        patch["conditions"] = conditions
    if cad.status.get("observedGeneration") != cad.generation:
        patch["observedGeneration"] = cad.generation
    transition = _ready_transition(cad.status.get("conditions") or [], conditions)
    if patch:
        cad = await write_status(api, cad, patch, transition, now)
    metrics.record_state(cad.namespace, cad.name, phase, cad.canary_weight)
    return cad


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


async def refresh_readiness(
    api: KubeApi, namespace: str, name: str, now: datetime.datetime, attempts: int = 3
) -> Cad | None:
    """Re-derive readiness from the CR and its Deployments as the API server has them now.

    Runs concurrently with the reconciler and the canary timer, so it reads fresh and
    writes conditionally, retrying a lost race a few times.
    """
    selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/managed-by=cricalgo-operator"
    for attempt in range(attempts):
        body = await api.get(API_VERSION, KIND, namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return None
        cad = Cad.from_body(body)
        if not cad.status.get("stableRevision"):
            return cad  # the reconciler has not seen it yet; it will set the status
        items = await api.list("apps/v1", "Deployment", namespace, selector)
        owned = [deployment_readiness(d) for d in items if _owned_by(d, cad)]
        try:
            return await refresh_status(api, cad, owned, now)
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
    manifest = next(m for m in render(fresh) if child_id(m) == key)
    await api.apply(manifest)
    log.info("repaired %s of %s/%s", key, cad.namespace, cad.name)
    return True


def _needs_repair(cad: Cad, key: str, actual: dict[str, Any] | None) -> bool:
    desired = next((m for m in render(cad) if child_id(m) == key), None)
    if desired is None:
        return False
    return actual is None or drifted(desired, actual)
