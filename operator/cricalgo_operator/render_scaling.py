"""Replica bounds per track, HorizontalPodAutoscalers and PodDisruptionBudgets.

The canary share of the workers is always a replica ratio: they are competing consumers
of one Redis queue and no router stands in front of them. The app's canary share is a
router weight (istio, nginx) or, for `traffic.provider: none`, a replica ratio too,
because the `NAME` Service spreads requests over the pods of both tracks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .model import Manifest
from .naming import Component, Track, selector_labels, workload_name


@dataclass(frozen=True)
class Bounds:
    """HPA replica bounds; a track with no Bounds runs zero replicas (and has no HPA)."""

    min: int
    max: int


def _share(count: int, weight: int) -> int:
    return math.floor(count * weight / 100 + 0.5)


def split_replicas(lo: int, hi: int, weight: int) -> tuple[Bounds, Bounds | None]:
    """Bounds for (stable, canary) so the canary holds about `weight` % of the replicas.

    The stable track never drops below one replica, so a promotion or rollback always
    has a warm stable to fall back on; the canary runs no pod at weight 0.
    """
    if weight <= 0:
        return Bounds(lo, hi), None
    canary_lo = min(max(1, _share(lo, weight)), lo)
    canary_hi = max(canary_lo, _share(hi, weight))
    stable_lo = max(1, lo - canary_lo)
    stable_hi = max(stable_lo, hi - canary_hi)
    return Bounds(stable_lo, stable_hi), Bounds(canary_lo, canary_hi)


def promotion_floor(lo: int, hi: int, serving: int) -> int:
    """The stable's minimum while a promotion is under way: the replicas serving now (both
    tracks), within the HPA's bounds."""
    return max(lo, min(hi, serving))


def track_bounds(
    spec: dict[str, Any],
    component: Component,
    weight: int,
    canary_active: bool,
    canary_scaled_down: bool,
    promoting_with: int | None = None,
) -> dict[Track, Bounds | None]:
    """Replica bounds of each track of one component for the current canary state.

    `promoting_with`: during a promotion, the replicas (both tracks) that served the
    traffic when it began. The stable is scaled up to at least that, to its full maximum,
    before the traffic comes back to it (no thundering herd on a stable shrunk to the
    leftover share, Flagger #1600); the canary keeps its share until then.
    """
    replicas = spec[component]["replicas"]
    lo, hi = int(replicas["min"]), int(replicas["max"])
    if not canary_active:
        return {"stable": Bounds(lo, hi)}
    if canary_scaled_down:
        return {"stable": Bounds(lo, hi), "canary": None}
    by_ratio = component == "worker" or spec["traffic"]["provider"] == "none"
    if by_ratio:
        stable, canary = split_replicas(lo, hi, weight)
    else:
        # Behind a router the canary gets the stable's bounds and scales on its own CPU.
        stable, canary = Bounds(lo, hi), Bounds(lo, hi)
    if promoting_with is not None:
        stable = Bounds(promotion_floor(lo, hi, promoting_with), hi)
    return {"stable": stable, "canary": canary}


def hpa_metrics(spec: dict[str, Any], component: Component) -> list[dict[str, Any]]:
    """The HPA's metrics: CPU today. A worker queue-depth (External) metric goes here."""
    target = int(spec[component]["targetCPUUtilizationPercentage"])
    return [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": target},
            },
        }
    ]


def render_hpa(
    name: str, spec: dict[str, Any], component: Component, track: Track, bounds: Bounds
) -> Manifest:
    child = workload_name(name, component, track)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": child,
            "labels": {"app.kubernetes.io/component": component, "track": track},
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": child},
            "minReplicas": bounds.min,
            "maxReplicas": bounds.max,
            "metrics": hpa_metrics(spec, component),
        },
    }


def render_pdb(name: str, component: Component, track: Track) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": workload_name(name, component, track),
            "labels": {"app.kubernetes.io/component": component, "track": track},
        },
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(name, component, track)},
        },
    }
