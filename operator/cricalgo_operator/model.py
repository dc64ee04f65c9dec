"""The CricAlgoDeployment as the operator reads it: spec with defaults, status, revisions.

The API server applies the CRD's defaults; `with_defaults` applies the same ones in
Python so rendering is total on any dict (tests, older objects). A test pins the two
against each other on the real API server.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Manifest = dict[str, Any]

DEFAULTS: dict[str, Any] = {
    "imagePullPolicy": "IfNotPresent",
    "app": {
        "port": 8000,
        "replicas": {"min": 3, "max": 12},
        "targetCPUUtilizationPercentage": 70,
    },
    "worker": {
        "queues": ["deposits"],
        "concurrency": 4,
        "metricsPort": 9191,
        "replicas": {"min": 2, "max": 10},
        "targetCPUUtilizationPercentage": 70,
    },
    "database": {"secretRef": {"key": "dsn"}, "poolSize": 1, "maxOverflow": 1},
    "redis": {"secretRef": {"key": "url"}},
    "traffic": {
        "provider": "none",
        "hosts": [],
        "gateways": [],
        "publicPaths": [{"path": "/api/v1/webhooks/deposit", "match": "Exact"}],
    },
    "migrations": {
        "enabled": False,
        "command": ["cricalgo-workload"],
        "args": ["migrate"],
        "backoffLimit": 2,
        "activeDeadlineSeconds": 600,
    },
    "canary": {
        "steps": [10, 25, 50, 100],
        "stepDuration": "30m",
        "analysisInterval": "1m",
        "maxFailedChecks": 3,
        "failFastFactor": 5,
        "maxInconclusive": 5,
        "minRequests": 20,
        "onNoData": "hold",
        "decision": "sequential",
        "sequential": {"falseRollbackRate": 0.05, "missedFaultRate": 0.1, "faultFactor": 2},
        "paused": False,
        "templates": "workload",
        "slo": {
            "errorRate": 0.005,
            "latencyP95": 2.0,
            "latencyP99": 5.0,
            "queueDepth": 50,
            "taskFailureRate": 0.01,
        },
    },
}

# The spec fields that end up in a pod template. A change of any of them is a new
# revision (a canary); everything else (replicas, traffic, canary settings) is not.
POD_INPUT_FIELDS = (
    "image",
    "imagePullPolicy",
    "env",
    "resources",
    "database",
    "redis",
    "webhook",
)
POD_INPUT_SUBFIELDS = {
    "app": ("port", "metricsPort", "preStopSleepSeconds"),
    "worker": ("queues", "concurrency", "metricsPort"),
}


def _merge(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = copy.deepcopy(dict(defaults))
    for key, value in given.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def with_defaults(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec with every CRD default filled in (does not modify `spec`)."""
    return _merge(DEFAULTS, spec)


def pod_inputs(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a (defaulted) spec that shapes the pods: the revision's content."""
    inputs: dict[str, Any] = {k: copy.deepcopy(spec[k]) for k in POD_INPUT_FIELDS if k in spec}
    for section, keys in POD_INPUT_SUBFIELDS.items():
        part = spec.get(section) or {}
        inputs[section] = {k: copy.deepcopy(part[k]) for k in keys if k in part}
    return inputs


def revision_of(inputs: Mapping[str, Any]) -> str:
    """A short stable hash of pod inputs; equal inputs give equal revisions."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


@dataclass(frozen=True)
class Cad:
    """One CricAlgoDeployment: identity, defaulted spec and current status."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    resource_version: str | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Cad:
        meta = body.get("metadata") or {}
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            spec=with_defaults(body.get("spec") or {}),
            status=copy.deepcopy(dict(body.get("status") or {})),
            annotations=dict(meta.get("annotations") or {}),
            resource_version=meta.get("resourceVersion"),
        )

    def with_status(self, status: Mapping[str, Any]) -> Cad:
        """The same CR with another status (for rendering what a status patch implies)."""
        return Cad(
            self.name,
            self.namespace,
            self.uid,
            self.generation,
            self.spec,
            copy.deepcopy(dict(status)),
            self.annotations,
            self.resource_version,
        )

    @property
    def provider(self) -> str:
        return str(self.spec["traffic"]["provider"])

    @property
    def spec_revision(self) -> str:
        return revision_of(pod_inputs(self.spec))

    @property
    def stable_inputs(self) -> dict[str, Any]:
        """What the stable track runs: the status snapshot, else the spec (first rollout)."""
        snapshot = self.status.get("stableSpec")
        return copy.deepcopy(dict(snapshot)) if snapshot else pod_inputs(self.spec)

    @property
    def canary_active(self) -> bool:
        """A canary track exists while status names a canary revision."""
        return bool(self.status.get("canaryRevision"))

    @property
    def canary_weight(self) -> int:
        return int(self.status.get("canaryWeight") or 0) if self.canary_active else 0

    @property
    def canary_scaled_down(self) -> bool:
        """After a rollback the canary Deployments stay, at zero replicas."""
        return self.status.get("phase") in ("RollingBack", "RolledBack")

    def promoting_with(self, component: str) -> int | None:
        """During a promotion, the replicas of `component` that served traffic when it
        began (`status.promotionReplicas`); None otherwise."""
        if self.status.get("phase") != "Promoting":
            return None
        recorded = self.status.get("promotionReplicas") or {}
        return int(recorded.get(component) or 0)

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": "cricalgo.io/v1alpha1",
            "kind": "CricAlgoDeployment",
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
