"""The migration Job of a canary: its name, its manifest, its state and the hold of the
canary's pods while it runs (pure)."""

from __future__ import annotations

from typing import Any

from cricalgo_operator.migrations import (
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    canary_job_name,
    job_name,
    job_state,
    migration_pending,
    render_migration_job,
)
from cricalgo_operator.model import Cad
from cricalgo_operator.render import render

SPEC: dict[str, Any] = {
    "image": "reg/cricalgo:1.1",
    "database": {"secretRef": {"name": "pay-db"}},
    "redis": {"secretRef": {"name": "pay-redis"}},
    "migrations": {"enabled": True},
    # Behind a router the app's canary runs pods at weight 0, before its first step.
    "traffic": {"provider": "istio", "hosts": ["pay.example.com"]},
}
CANARY = {
    "phase": "Progressing",
    "stableImage": "reg/cricalgo:1.0",
    "stableRevision": "r1",
    "canaryImage": "reg/cricalgo:1.1",
    "canaryRevision": "r2",
    "canaryWeight": 0,
    "currentStep": -1,
}


def cad(spec: dict[str, Any] = SPEC, status: dict[str, Any] | None = None) -> Cad:
    body = {
        "metadata": {"name": "pay", "namespace": "ns", "uid": "u-1", "generation": 2},
        "spec": spec,
        "status": CANARY if status is None else status,
    }
    return Cad.from_body(body)


def app_canary_replicas(c: Cad) -> int | None:
    """The app canary Deployment's replicas: 0, or None when its HPA decides."""
    (deployment,) = [
        m
        for m in render(c)
        if m["kind"] == "Deployment" and m["metadata"]["name"] == "pay-app-canary"
    ]
    replicas: int | None = deployment["spec"].get("replicas")
    return replicas


def test_the_job_runs_migrate_from_the_canary_image_with_the_database_secret() -> None:
    job = render_migration_job(cad(), "reg/cricalgo:1.1")
    assert job["metadata"]["name"] == canary_job_name(cad())
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert (container["image"], container["command"], container["args"]) == (
        "reg/cricalgo:1.1",
        ["cricalgo-workload"],
        ["migrate"],
    )
    assert container["env"] == [
        {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "pay-db", "key": "dsn"}}}
    ]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (2, 600)
    # Not one of the app's pods: the Services select component=app.
    assert pod_labels(job)["app.kubernetes.io/component"] == "migration"


def pod_labels(job: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = job["spec"]["template"]["metadata"]["labels"]
    return labels


def test_a_revision_with_the_same_image_needs_the_same_job() -> None:
    base = job_name("pay", cad().spec, "reg/cricalgo:1.1")
    env_only = {**SPEC, "env": [{"name": "X", "value": "1"}]}
    assert job_name("pay", cad(env_only).spec, "reg/cricalgo:1.1") == base
    assert job_name("pay", cad().spec, "reg/cricalgo:1.2") != base
    other_db = {**SPEC, "database": {"secretRef": {"name": "other-db"}}}
    assert job_name("pay", cad(other_db).spec, "reg/cricalgo:1.1") != base


def test_job_state_follows_the_job_controllers_conditions() -> None:
    assert job_state("j", None).state == PENDING
    assert job_state("j", {"status": {"active": 1}}).state == RUNNING
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert job_state("j", done).state == SUCCEEDED
    failed = {
        "status": {
            "failed": 3,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ],
        }
    }
    got = job_state("j", failed)
    assert got.state == FAILED
    assert "BackoffLimitExceeded" in got.message


def test_the_canary_has_no_pod_until_its_migration_succeeded() -> None:
    waiting = cad()
    assert migration_pending(waiting)
    assert app_canary_replicas(waiting) == 0
    running = cad(
        status={**CANARY, "migration": {"job": canary_job_name(waiting), "state": RUNNING}}
    )
    assert migration_pending(running)
    migrated = {"job": canary_job_name(waiting), "state": SUCCEEDED}
    done = cad(status={**CANARY, "migration": migrated})
    assert not migration_pending(done)
    assert app_canary_replicas(done) is None
    # Another image needs its own migration, even if an earlier one succeeded.
    newer = cad(
        {**SPEC, "image": "reg/cricalgo:1.2"},
        {**CANARY, "canaryImage": "reg/cricalgo:1.2", "migration": migrated},
    )
    assert migration_pending(newer)


def test_nothing_waits_with_migrations_off_or_once_the_canary_has_traffic() -> None:
    off = cad({**SPEC, "migrations": {"enabled": False}})
    assert not migration_pending(off)
    assert app_canary_replicas(off) is None
    assert not migration_pending(cad(status={**CANARY, "currentStep": 0, "canaryWeight": 10}))
    assert not migration_pending(cad(status={k: v for k, v in CANARY.items() if "anary" not in k}))
