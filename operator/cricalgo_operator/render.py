"""`render(cad) -> list[manifest]`: every child of a CricAlgoDeployment, no I/O.

The result is a function of the spec and of the canary state in the status
(stableSpec, canaryRevision, canaryWeight, phase), so the operator can restart at any
point and render exactly what it had applied. Every manifest is adopted: namespace,
owner reference (so the garbage collector deletes it with the CR) and standard labels.
"""

from __future__ import annotations

import copy
from typing import Any

from .migrations import migration_pending
from .model import Cad, Manifest, pod_inputs, revision_of
from .naming import COMPONENTS, Track, instance_labels
from .render_pods import render_deployment
from .render_scaling import render_hpa, render_pdb, track_bounds
from .render_traffic import render_ingress, render_router, render_service
from .render_traffic import render_virtual_service as _render_virtual_service


def track_inputs(cad: Cad) -> dict[Track, tuple[dict[str, Any], str]]:
    """Pod inputs and revision of each track that exists."""
    stable = cad.stable_inputs
    tracks: dict[Track, tuple[dict[str, Any], str]] = {
        "stable": (stable, str(cad.status.get("stableRevision") or revision_of(stable)))
    }
    if cad.canary_active:
        tracks["canary"] = (pod_inputs(cad.spec), str(cad.status["canaryRevision"]))
    return tracks


def render_service_account(cad: Cad) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": cad.name},
        "automountServiceAccountToken": False,
    }


def render_workloads(cad: Cad) -> list[Manifest]:
    """Deployments, HPAs and PDBs of both components and every existing track."""
    deployments: list[Manifest] = []
    hpas: list[Manifest] = []
    pdbs: list[Manifest] = []
    tracks = track_inputs(cad)
    # A canary waiting for its schema migration has no pod yet (migrations.py).
    scaled_down = cad.canary_scaled_down or migration_pending(cad)
    for component in COMPONENTS:
        bounds = track_bounds(
            cad.spec,
            component,
            cad.canary_weight,
            cad.canary_active,
            scaled_down,
            cad.promoting_with(component),
        )
        for track, (inputs, revision) in tracks.items():
            b = bounds.get(track)
            deployments.append(
                render_deployment(cad, component, track, inputs, revision, None if b else 0)
            )
            if b is not None:
                hpas.append(render_hpa(cad.name, cad.spec, component, track, b))
                pdbs.append(render_pdb(cad.name, component, track))
    return deployments + hpas + pdbs


def render(cad: Cad) -> list[Manifest]:
    """Every child the CR should have right now, adopted, in apply order."""
    tracks = track_inputs(cad)
    stable_inputs = tracks["stable"][0]
    canary_inputs = tracks.get("canary", tracks["stable"])[0]
    manifests = [
        render_service_account(cad),
        render_service(cad, stable_inputs, None),
        render_service(cad, stable_inputs, "stable"),
        render_service(cad, canary_inputs, "canary"),
        *render_workloads(cad),
        *render_router(cad, stable_inputs),
    ]
    return [adopt(m, cad) for m in manifests]


def render_weight(cad: Cad, weight: int) -> list[Manifest]:
    """The children that change when the canary weight becomes `weight` (0..100).

    istio: the VirtualService; nginx: the canary Ingress; always the HPAs and
    Deployments whose replica share follows the weight (workers, and the app for
    provider none). Apply them together so app and worker move as one.
    """
    if not 0 <= weight <= 100:
        raise ValueError(f"canary weight must be within 0..100, got {weight}")
    moved = cad.with_status({**cad.status, "canaryWeight": weight})
    objects = [m for m in render_workloads(moved) if m["kind"] != "PodDisruptionBudget"]
    port = track_inputs(moved)["stable"][0]["app"].get("port", 8000)
    if moved.provider == "istio":
        objects.append(_render_virtual_service(moved, moved.canary_weight, int(port)))
    elif moved.provider == "nginx" and moved.canary_active:
        objects.append(render_ingress(moved, int(port), "canary", moved.canary_weight))
    return [adopt(m, moved) for m in objects]


def adopt(manifest: Manifest, cad: Cad) -> Manifest:
    """Namespace, owner reference and the instance labels on one child."""
    out = copy.deepcopy(manifest)
    meta = out.setdefault("metadata", {})
    meta["namespace"] = cad.namespace
    meta["labels"] = {**instance_labels(cad.name), **(meta.get("labels") or {})}
    meta["ownerReferences"] = [cad.owner_reference()]
    return out


def child_key(manifest: Manifest) -> tuple[str, str]:
    """(kind, name): what identifies a child within its CR."""
    return manifest["kind"], manifest["metadata"]["name"]
