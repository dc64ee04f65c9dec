"""The canary engine's primitives: set weight, promote, roll back (app and worker together).

    from cricalgo_operator.rollout import set_weight, promote, rollback

    cad = await set_weight(api, cad, 25, now=now)                 # -> Cad
    cad = await promote(api, cad, reason="all steps passed", now=now)
    cad = await rollback(api, cad, reason="error rate 3% > 0.5%", now=now)

`api` is the operator's `KubeApi` (`memo.api` in a Kopf handler); `cad` a
`model.Cad` (`Cad.from_body(body)`); `now` an aware datetime. Each function writes the
status first (so a restart resumes from it), then applies the whole render (which also
creates and prunes HPAs/PDBs whose existence follows the weight), and emits one Event.
The pure halves are `render.render_weight(cad, weight)` (the objects that carry the
weight) and `revisions.promotion_patch` / `rollback_patch`.

Weight semantics per `traffic.provider`: istio -> VirtualService route weights; nginx ->
the canary Ingress `canary-weight`; none -> the app's replica ratio. Workers always
follow the weight as a replica ratio (render_scaling.split_replicas).
"""

from __future__ import annotations

import datetime

from . import metrics
from .children import apply_children
from .kubeapi import ApiError, KubeApi
from .model import Cad
from .naming import API_VERSION, KIND, children_selector
from .readiness import deployment_readiness, serving_replicas
from .revisions import promotion_patch, rollback_patch
from .status import Transition, write_status

WRITE_ATTEMPTS = 3


async def set_weight(
    api: KubeApi, cad: Cad, weight: int, *, now: datetime.datetime | None = None
) -> Cad:
    """Move the canary to `weight` % for app and worker together.

    A status write lost to a concurrent writer (409) is retried on a fresh read, as
    long as the canary is still the same revision; otherwise ApiError 409 is raised.
    """
    if not 0 <= weight <= 100:
        raise ValueError(f"canary weight must be within 0..100, got {weight}")
    revision = cad.status.get("canaryRevision")
    for attempt in range(WRITE_ATTEMPTS):
        if not cad.canary_active:
            raise ValueError(f"{cad.namespace}/{cad.name} has no canary to weigh")
        before = cad.canary_weight
        if before == weight:
            break  # nothing to write; the render below still applies (e.g. a retry at 0)
        try:
            cad = await write_status(
                api,
                cad,
                {"canaryWeight": weight},
                Transition("WeightChanged", f"canary weight {before}% -> {weight}%"),
                now,
            )
            break
        except ApiError as error:
            if error.status != 409 or attempt == WRITE_ATTEMPTS - 1:
                raise
            cad = await _fresh(api, cad)
            if cad.status.get("canaryRevision") != revision:
                raise
    # A weight can also make objects appear or go (a canary leaving weight 0 gets its HPA
    # and PDB under replica-ratio splits), so apply the whole render, which also prunes.
    cad, _ = await apply_children(api, cad)
    metrics.canary_weight.labels(cad.namespace, cad.name).set(weight)
    return cad


async def _fresh(api: KubeApi, cad: Cad) -> Cad:
    body = await api.get(API_VERSION, KIND, cad.namespace, cad.name)
    if body is None:
        raise ApiError(404, f"{cad.namespace}/{cad.name} is gone")
    return Cad.from_body(body)


async def promote(
    api: KubeApi, cad: Cad, *, reason: str, now: datetime.datetime | None = None
) -> Cad:
    """Stable takes the canary's template and is scaled to the replicas serving now (both
    tracks); the canary goes once stable is available at that size."""
    moment = now or datetime.datetime.now(datetime.UTC)
    selector = children_selector(cad.name)
    found = await api.list("apps/v1", "Deployment", cad.namespace, label_selector=selector)
    serving = serving_replicas(deployment_readiness(d) for d in found)
    cad = await write_status(
        api,
        cad,
        promotion_patch(cad, reason, moment, serving),
        Transition("Promoting", f"promoting {cad.status.get('canaryImage')}: {reason}"),
        moment,
    )
    cad, _ = await apply_children(api, cad)
    return cad


async def rollback(
    api: KubeApi, cad: Cad, *, reason: str, now: datetime.datetime | None = None
) -> Cad:
    """Weight 0 and the canary scaled to zero; the image is remembered as failed."""
    moment = now or datetime.datetime.now(datetime.UTC)
    cad = await write_status(
        api,
        cad,
        rollback_patch(cad, reason, moment),
        Transition(
            "RolledBack", f"rolled back {cad.status.get('canaryImage')}: {reason}", "Warning"
        ),
        moment,
    )
    cad, _ = await apply_children(api, cad)
    metrics.record_state(cad.namespace, cad.name, "RolledBack", 0)
    return cad
