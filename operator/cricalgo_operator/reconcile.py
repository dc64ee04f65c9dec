"""The reconciler: from a CR to applied children and an up-to-date status.

Called by the Kopf handlers (handlers.py); everything here is idempotent, so a handler
may run twice or after a restart with the same result.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import metrics
from .canary.engine import first_ready, revised
from .canary.model import CanaryStatus
from .canary.runner import config_of, persist, with_owned
from .children import by_child_id
from .conditions import conditions_for, readiness_changed, ready_transition
from .drift import needs_repair
from .kubeapi import ApiError, KubeApi
from .model import Cad
from .naming import API_VERSION, KIND
from .readiness import DeploymentReadiness, deployment_readiness, stable_readiness
from .render import render
from .stable_env import has_literal_env
from .status import write_status

log = logging.getLogger(__name__)


async def reconcile(api: KubeApi, cad: Cad, now: datetime.datetime) -> Cad:
    """Let the canary engine revise the canary for a changed pod template, apply every
    child (one render), then settle the phase, the conditions and observedGeneration."""
    if has_literal_env(cad.status.get("stableSpec")):
        # Written before env values moved to Secrets: the write moves them (stable_env.py).
        cad = await write_status(api, cad, {"stableSpec": cad.status["stableSpec"]})
    decision = revised(config_of(cad), CanaryStatus.from_dict(cad.status), now)
    cad, applied = await persist(api, cad, decision, now, full=True)
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


async def refresh_status(
    api: KubeApi,
    cad: Cad,
    deployments: list[DeploymentReadiness],
    now: datetime.datetime,
    *,
    settle: bool = True,
) -> Cad:
    """Write the conditions if they changed, and let the engine move Initializing to Ready
    once the stable Deployments are available (whichever path sees that first).

    With `settle` (the reconciler, after applying everything) also record
    observedGeneration and clear a reported failure (failures.py); the readiness watcher
    leaves those alone.
    """
    status = dict(cad.status)
    patch: dict[str, Any] = {}
    available = stable_readiness(deployments).ready
    ready = first_ready(config_of(cad), CanaryStatus.from_dict(status), now, available)
    if ready is not None:
        patch = ready.status.patch_from(status)
        status = with_owned(status, ready.status)
    conditions = conditions_for(
        status, deployments, now, cad.generation, cad.spec["image"], keep_failure=not settle
    )
    if conditions != cad.status.get("conditions"):
        patch["conditions"] = conditions
    if settle and cad.status.get("observedGeneration") != cad.generation:
        patch["observedGeneration"] = cad.generation
    transition = ready_transition(cad.status.get("conditions") or [], conditions)
    if patch:
        cad = await write_status(api, cad, patch, transition, now)
    metrics.record_state(cad.namespace, cad.name, cad.status.get("phase"), cad.canary_weight)
    return cad


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
    if not readiness_changed(cad.status, deployments):
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


@dataclass(frozen=True)
class RenderedCad:
    """A CR with its render by child id: what the child watchers compare children with.

    Kept in the operator's index of CRs, so one render serves every child event of one
    CR version (child events arrive by the thousand under load)."""

    cad: Cad
    children: Mapping[str, Mapping[str, Any]]

    @classmethod
    def of(cls, cad: Cad) -> RenderedCad:
        return cls(cad, by_child_id(render(cad)))


async def repair_child(
    api: KubeApi, rendered: RenderedCad, kind: str, name: str, actual: dict[str, Any] | None
) -> bool:
    """Re-apply one child that was deleted (`actual` None) or edited away from its render.

    The indexed CR may lag our own status writes, so a suspected drift is confirmed
    against the CR as the API server has it before anything is written.
    """
    key = f"{kind}/{name}"
    cad = rendered.cad
    if not needs_repair(rendered.children.get(key), actual):
        return False
    body = await api.get(API_VERSION, KIND, cad.namespace, cad.name)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        return False
    fresh = Cad.from_body(body)
    if fresh.uid != cad.uid:
        return False
    if fresh.resource_version != cad.resource_version:
        rendered = RenderedCad.of(fresh)
    desired = rendered.children.get(key)
    if desired is None or not needs_repair(desired, actual):
        return False
    await api.apply(dict(desired))
    log.info("repaired %s of %s/%s", key, cad.namespace, cad.name)
    return True
