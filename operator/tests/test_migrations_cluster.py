"""Migrations as part of a rollout, on the local stack: the operator (shipped RBAC) creates
the migration Job, the real Job controller runs it as a pod on the local node, which runs
`cricalgo-workload migrate` against the real PostgreSQL; the canary waits for it, and a
failed Job rolls the canary back."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
import yaml
from cricalgo_localstack.node import LocalNode
from cricalgo_localstack.polling import wait_for
from cricalgo_localstack.services import PostgresServer
from test_canary_cluster import Canary, canary  # loaded by conftest.py

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("cad_crd")]
__all__ = ["canary"]  # fixtures

# An image the local node runs (the project's workload, from this checkout).
IMAGE = "cricalgo/workload:{}"


def apply(target: Canary, version: str, *, args: list[str] | None = None, **spec: Any) -> None:
    """CR `pay` with migrations on; no Redis Secret, so its app and worker pods never start
    (the canary is judged on no traffic: it waits at 0 %, then advances on no data)."""
    migrations: dict[str, Any] = {"enabled": True, "backoffLimit": 0}
    if args is not None:
        migrations["args"] = args
    body = {
        "apiVersion": "cricalgo.io/v1alpha1",
        "kind": "CricAlgoDeployment",
        "metadata": {"name": "pay"},
        "spec": {
            "image": IMAGE.format(version),
            "database": {"secretRef": {"name": "pay-db"}},
            "redis": {"secretRef": {"name": "pay-redis"}},
            "migrations": migrations,
            "canary": {
                "steps": [10, 25, 50, 100],
                "stepDuration": "30m",
                "analysisInterval": "2s",
                "prometheus": {"url": target.prometheus.url},
            },
            **spec,
        },
    }
    target.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(body))


def jobs(env: Canary) -> list[dict[str, Any]]:
    selector = "app.kubernetes.io/instance=pay,app.kubernetes.io/component=migration"
    found = json.loads(env.kubectl("get", "jobs", "-l", selector, "-o", "json").stdout)
    items: list[dict[str, Any]] = found["items"]
    return items


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def canary_replicas(env: Canary) -> int:
    deployment = json.loads(
        env.kubectl("get", "deployment", "pay-worker-canary", "-o", "json").stdout
    )
    return int(deployment["spec"].get("replicas", 0))


def test_the_canary_waits_for_its_migration_job_and_a_failed_one_rolls_it_back(
    canary: Canary, local_node: LocalNode, postgres_server: PostgresServer
) -> None:
    dsn = postgres_server.create_database(f"mig_{canary.namespace.replace('-', '_')}")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pay-db"}}
    canary.kubectl("apply", "-f", "-", input=yaml.safe_dump({**secret, "stringData": {"dsn": dsn}}))
    apply(canary, "1.0.0")
    canary.wait("the first version to be stable", lambda s: s.get("observedGeneration") == 1)
    assert jobs(canary) == []  # the first revision is not a canary: nothing waits for it

    # A new image: its migration Job runs before the canary gets pods or traffic.
    apply(canary, "2.0.0")
    status = canary.wait("the migration to start", lambda s: s.get("migration"))
    if status["migration"]["state"] != "Succeeded":
        assert condition(status, "Progressing")["reason"] == "AwaitingMigration"
        assert (status["canaryWeight"], status["currentStep"]) == (0, -1)
    status = canary.wait(
        "the migration to succeed and the canary to start",
        lambda s: (
            (s.get("migration") or {}).get("state") == "Succeeded" and s.get("canaryWeight") == 10
        ),
        timeout=180,
    )
    (job,) = jobs(canary)
    assert job["metadata"]["name"] == status["migration"]["job"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == canary.body()["metadata"]["uid"]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE.format("2.0.0")
    assert job["status"].get("succeeded") == 1
    with psycopg.connect(dsn) as conn:
        applied = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert applied is not None
    assert applied[0] > 0  # the workload's migrations ran against the CR's database
    assert "AwaitingMigration" in canary.events()

    # A new revision with the same image (and migration) does not run it again.
    apply(canary, "2.0.0", env=[{"name": "LOG_LEVEL", "value": "debug"}])
    canary.wait(
        "the new revision's canary at 10 %",
        lambda s: s.get("canaryWeight") == 10 and len(s.get("history") or []) == 1,
    )
    assert [j["metadata"]["name"] for j in jobs(canary)] == [job["metadata"]["name"]]
    assert jobs(canary)[0]["status"].get("succeeded") == 1

    # A migration that fails rolls the canary back before any of its pods starts.
    apply(canary, "3.0.0", args=["migrate", "--no-such-flag"])
    status = canary.wait(
        "the failed migration's rollback", lambda s: s.get("phase") == "RolledBack", timeout=180
    )
    assert status["failedImage"] == IMAGE.format("3.0.0")
    assert status["migration"]["state"] == "Failed"
    degraded = condition(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "MigrationFailed")
    assert condition(status, "Promoted")["status"] == "False"
    assert canary_replicas(canary) == 0
    assert status["history"][-1]["outcome"] == "rolledBack"
    assert "migration failed" in status["history"][-1]["reason"]
    wait_for("the rollback's Warning Event", lambda: "RolledBack" in canary.events())
    assert len(jobs(canary)) == 2
