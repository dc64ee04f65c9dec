"""The edge of the migration gate: the canary's migration Job, created when missing and read
for the canary engine (what to run and how to read it: migrations.py)."""

from __future__ import annotations

from .kubeapi import ApiError, KubeApi
from .migrations import (
    FAILED,
    Migration,
    job_name,
    job_state,
    migration_pending,
    render_migration_job,
)
from .model import Cad
from .ownership import describe_owner, owned_by


async def observe_migration(api: KubeApi, cad: Cad) -> Migration | None:
    """The canary's migration (its Job created if missing); None when none gates it."""
    if not migration_pending(cad):
        return None
    image = str(cad.status.get("canaryImage") or cad.spec["image"])
    name = job_name(cad.name, cad.spec, image)
    job = await api.get("batch/v1", "Job", cad.namespace, name)
    if job is None:
        try:
            job = await api.create(render_migration_job(cad, image))
        except ApiError as error:
            if error.status != 409:
                raise
            job = await api.get("batch/v1", "Job", cad.namespace, name)
    if job is not None and not owned_by(job, cad.uid):
        message = f"Job {name} exists and is not this CricAlgoDeployment's ({describe_owner(job)})"
        return Migration(name, FAILED, message)
    return job_state(name, job)
