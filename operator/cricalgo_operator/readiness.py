"""Readiness of a CricAlgoDeployment, derived from its Deployments' status (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .model import Cad
from .render_scaling import promotion_floor


@dataclass(frozen=True)
class DeploymentReadiness:
    name: str
    track: str
    desired: int
    available: int
    updated: int
    current: bool  # the controller has seen the latest spec
    component: str = "app"

    @property
    def ready(self) -> bool:
        return self.current and self.available >= self.desired and self.updated >= self.desired

    def describe(self) -> str:
        return f"{self.name} {self.available}/{self.desired} available"


def deployment_readiness(deployment: dict[str, Any]) -> DeploymentReadiness:
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    return DeploymentReadiness(
        name=meta.get("name", ""),
        track=(meta.get("labels") or {}).get("track", "stable"),
        desired=desired,
        available=int(status.get("availableReplicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        current=int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0),
        component=(meta.get("labels") or {}).get("app.kubernetes.io/component", "app"),
    )


def serving_replicas(deployments: Iterable[DeploymentReadiness]) -> dict[str, int]:
    """Available replicas per component, both tracks together: the capacity serving now."""
    out: dict[str, int] = {}
    for d in deployments:
        out[d.component] = out.get(d.component, 0) + d.available
    return out


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str
    message: str


def stable_readiness(deployments: Iterable[DeploymentReadiness]) -> Readiness:
    """Ready when every stable Deployment has all its replicas updated and available."""
    stable = sorted((d for d in deployments if d.track == "stable"), key=lambda d: d.name)
    if not stable:
        return Readiness(False, "NoDeployments", "no stable Deployment exists yet")
    waiting = [d for d in stable if not d.ready]
    if waiting:
        return Readiness(False, "Unavailable", "; ".join(d.describe() for d in waiting))
    return Readiness(True, "Available", "; ".join(d.describe() for d in stable))


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
