"""Schema migrations as part of a rollout (`spec.migrations`, off by default).

With `spec.migrations.enabled`, a new revision's canary gets no pod until a Job has run
the migration command (`cricalgo-workload migrate`) from the canary's image against the
CR's database. The canary waits at weight 0 with its Deployments at zero replicas while
the Job runs; a failed Job rolls the canary back (reason MigrationFailed). The workload's
migrations serialise on a PostgreSQL advisory lock and skip what is applied, so a rerun is
harmless, but none happens needlessly: the Job is named after what it runs (image,
command, database), so a new revision with the same image finds its Job done, and
`status.migration` remembers the last one that succeeded.

Pure: `job_name`, `render_migration_job`, `job_state`, `migration_pending`. The edge
(migration_jobs.py) creates the Job when it is missing and reads its state for the canary
engine, whose gate (canary/migration_gate.py) holds or rolls back the canary.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .model import Cad, Manifest
from .naming import instance_labels
from .render_pods import DEFAULT_RESOURCES, RUN_AS

COMPONENT = "migration"
PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
# Phases in which a canary may wait for its migration (before its first step).
_WAITING_PHASES = ("Progressing", "Paused")


def migrations_of(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The migration settings when migrations are on, else None."""
    settings = spec.get("migrations") or {}
    return dict(settings) if settings.get("enabled") else None


LABEL_VALUE_MAX = 63


def job_name(cad_name: str, spec: Mapping[str, Any], image: str) -> str:
    """`NAME-migrate-<hash>` of what the Job runs: equal inputs, the same Job (NAME cut
    to 44 characters)."""
    settings = spec.get("migrations") or {}
    ref = (spec.get("database") or {}).get("secretRef") or {}
    what = [
        cad_name,
        settings.get("image") or image,
        settings.get("command"),
        settings.get("args"),
        ref.get("name"),
        ref.get("key"),
    ]
    digest = hashlib.sha256(json.dumps(what, separators=(",", ":")).encode()).hexdigest()
    # The Job controller labels its pods with the Job's name: a label value, at most 63
    # characters. The hash, of the whole CR name too, keeps a shortened name unique.
    suffix = f"-migrate-{digest[:10]}"
    return cad_name[: LABEL_VALUE_MAX - len(suffix)] + suffix


def canary_job_name(cad: Cad) -> str:
    return job_name(cad.name, cad.spec, str(cad.status.get("canaryImage") or cad.spec["image"]))


def render_migration_job(cad: Cad, image: str) -> Manifest:
    """The Job that migrates the CR's database with `image` (restricted pod, no API token)."""
    spec = cad.spec
    settings = migrations_of(spec) or {}
    ref = (spec.get("database") or {}).get("secretRef") or {}
    labels = {"app.kubernetes.io/instance": cad.name, "app.kubernetes.io/component": COMPONENT}
    container = {
        "name": "migrate",
        "image": settings.get("image") or image,
        "imagePullPolicy": spec.get("imagePullPolicy", "IfNotPresent"),
        "command": list(settings.get("command") or ["cricalgo-workload"]),
        "args": list(settings.get("args") or ["migrate"]),
        "env": [
            {
                "name": "DATABASE_URL",
                "valueFrom": {
                    "secretKeyRef": {"name": ref.get("name", ""), "key": ref.get("key") or "dsn"}
                },
            }
        ],
        "resources": spec.get("resources") or DEFAULT_RESOURCES,
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    job_spec: dict[str, Any] = {
        "backoffLimit": int(settings.get("backoffLimit", 2)),
        "activeDeadlineSeconds": int(settings.get("activeDeadlineSeconds", 600)),
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "restartPolicy": "Never",
                "serviceAccountName": cad.name,
                "automountServiceAccountToken": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": RUN_AS,
                    "runAsGroup": RUN_AS,
                    "fsGroup": RUN_AS,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
            },
        },
    }
    if settings.get("ttlSecondsAfterFinished") is not None:
        job_spec["ttlSecondsAfterFinished"] = int(settings["ttlSecondsAfterFinished"])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(cad.name, spec, image),
            "namespace": cad.namespace,
            "labels": {**instance_labels(cad.name), "app.kubernetes.io/component": COMPONENT},
            "ownerReferences": [cad.owner_reference()],
        },
        "spec": job_spec,
    }


@dataclass(frozen=True)
class Migration:
    """What the canary's migration Job says: its name, state and why."""

    job: str
    state: str  # Pending | Running | Succeeded | Failed
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"job": self.job, "state": self.state, "message": self.message}


def job_state(name: str, job: Mapping[str, Any] | None) -> Migration:
    """A Job's state from its status conditions, as the Job controller reports them."""
    if job is None:
        return Migration(name, PENDING, f"Job {name} is not created yet")
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return Migration(name, SUCCEEDED, f"Job {name} completed")
        if condition.get("type") == "Failed":
            why = condition.get("reason") or "Failed"
            detail = condition.get("message") or ""
            return Migration(name, FAILED, f"Job {name} failed ({why}): {detail}".rstrip(": "))
    active, failed = int(status.get("active") or 0), int(status.get("failed") or 0)
    return Migration(name, RUNNING, f"Job {name}: {active} running, {failed} failed")


def recorded(cad: Cad) -> Migration | None:
    """`status.migration`, the last migration the canary engine saw."""
    got = cad.status.get("migration") or {}
    if not got.get("job"):
        return None
    return Migration(
        str(got["job"]), str(got.get("state") or PENDING), str(got.get("message") or "")
    )


def migration_pending(cad: Cad) -> bool:
    """Whether the canary still waits for its migration: migrations on, a canary before its
    first step, and no record that the Job it needs succeeded. Its pods wait too (render)."""
    if migrations_of(cad.spec) is None or not cad.canary_active:
        return False
    if cad.status.get("phase") not in _WAITING_PHASES:
        return False
    step = cad.status.get("currentStep")
    if step is not None and int(step) >= 0:
        return False  # the canary has traffic: never scaled away for a migration
    done = recorded(cad)
    return not (done and done.job == canary_job_name(cad) and done.state == SUCCEEDED)
